"""What salrt knows of a classifier besides its weights: how photos become its input, and its class names."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..errors import InputError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # torchvision's InterpolationMode
Size = Union[int, tuple[int, int]]


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input tensor: resize (an int: the short side, keeping the aspect ratio;
    (H, W): exactly that size), center crop to ``crop`` (an int: square; or (H, W)), scale pixels to [0, 1],
    then ``(x - mean) / std`` per channel. The channel count is ``len(mean)``."""
    resize: Size
    crop: Size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __post_init__(self):
        for name in ("resize", "crop"):  # JSON gives lists back: sizes stay ints or (H, W) tuples
            value = getattr(self, name)
            if not isinstance(value, int):
                object.__setattr__(self, name, value[0] if len(value) == 1 else _pair(value))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        problems = [
            *(f"{name} must be positive, got {getattr(self, name)}" for name in ("resize", "crop")
              if min(_pair(getattr(self, name))) < 1),
            *([f"mean and std need one value per channel, got {len(self.mean)} and {len(self.std)}"]
              if len(self.mean) != len(self.std) or not self.mean else []),
            *(["std must be positive"] if any(v <= 0 for v in self.std) else []),
            *([f"unknown interpolation {self.interpolation!r}; choose from {', '.join(INTERPOLATIONS)}"]
              if self.interpolation not in INTERPOLATIONS else []),
        ]
        if problems:
            raise InputError("preprocessing: " + "; ".join(problems))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the model's input."""
        return _pair(self.crop)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, *self.size)

    def as_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    def resized(self, size: Size) -> "Preprocessing":
        """The same recipe for another input size: the resize keeps its ratio to the crop."""
        height, width = _pair(size)
        if min(height, width) < 32:
            raise InputError(f"image size {height}x{width} is too small; use 32 or more")
        ratio = min(_pair(self.resize)) / min(self.size) if isinstance(self.resize, int) else \
            self.resize[0] / self.size[0]
        resize = round(height * ratio) if height == width and isinstance(self.resize, int) else \
            (round(height * ratio), round(width * ratio))  # not square: exactly that shape, as timm does
        return dataclasses.replace(self, crop=height if height == width else (height, width), resize=resize)

    def with_channels(self, channels: int) -> "Preprocessing":
        """The recipe for ``channels`` input channels: a mean/std becomes its average for one channel, and one
        value is repeated for several."""
        if channels == self.channels:
            return self
        if channels == 1:
            return dataclasses.replace(self, mean=(sum(self.mean) / len(self.mean),),
                                       std=(sum(self.std) / len(self.std),))
        if self.channels == 1:  # one value for every channel
            return dataclasses.replace(self, mean=self.mean * channels, std=self.std * channels)
        raise InputError(f"the model takes {channels} channels but its preprocessing has {self.channels}: give "
                         f"{channels} values of mean and std (--mean, --std)")


# torchvision's ImageNet recipe (ResNet-50 V2 weights): what a 3-channel custom module is assumed to take.
IMAGENET_PREPROCESSING = Preprocessing(resize=232, crop=224, mean=(0.485, 0.456, 0.406),
                                       std=(0.229, 0.224, 0.225))


def default_preprocessing(channels: int) -> Preprocessing:
    """For a custom module: ImageNet's for 3 channels; else pixels scaled to [0, 1] and not normalized."""
    if channels == 3:
        return IMAGENET_PREPROCESSING
    return dataclasses.replace(IMAGENET_PREPROCESSING, mean=(0.0,) * channels, std=(1.0,) * channels)


@dataclasses.dataclass
class ClassifierSpec:
    """A model in eval mode with frozen weights whose forward returns logits: [N, K] (a classifier) or
    [N, K, Ho, Wo] (``task`` "segmentation"; ``output_grid`` (Ho, Wo)), plus what it takes to feed and read it:
    ``len(categories) == K``."""
    name: str
    weights: str
    module: torch.nn.Module
    preprocessing: Preprocessing
    categories: list[str]
    task: Optional[str] = None  # None: found from the logits' rank when the spec is finished
    output_grid: tuple = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocessing.input_shape


class Logits(torch.nn.Module):
    """A model whose forward returns a tuple/list (its first element), a mapping or a Hugging Face
    ``ModelOutput`` (its ``logits``, or torchvision segmentation's ``out``), as one returning the logits tensor."""

    def __init__(self, model: torch.nn.Module, task: Optional[str] = None):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(x), type(self.model).__name__, self.task)


# What a model of each task returns: [N,K], [N,K,Ho,Wo]. The tasks themselves (what a graph explains) are
# ``graph.tasks.TASKS``, one entry per name here.
LOGITS_RANK = {"classification": 2, "segmentation": 4, "detection": 3}
BOX_VALUES = 4  # detection: each query's logits are followed by its box (cx, cy, w, h in [0, 1] of the input)


def check_task(task: str) -> str:
    if task not in LOGITS_RANK:
        raise InputError(f"unknown task {task!r}; choose from {', '.join(LOGITS_RANK)}")
    return task


def task_of_output(logits: torch.Tensor) -> str:
    """The task a model's logits suggest by their rank."""
    return next(task for task, rank in LOGITS_RANK.items() if rank == logits.dim())


def logits_of(output, model_name: str, task: Optional[str] = None) -> torch.Tensor:
    """The logits tensor in a model's output: [N, K], [N, K, Ho, Wo], a detector's logits [N, Q, L] and boxes
    [N, Q, 4] packed as [N, Q, L+4], or for ``task`` the one it needs."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Mapping) and "boxes" in output[0]:
        raise InputError(f"{model_name} {AFTER_NMS}")
    boxes = _boxes_of(output) if task in (None, "detection") else None
    if isinstance(output, Mapping):
        output = next((output[key] for key in ("logits", "out") if key in output), output)
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if boxes is not None:
        output = torch.cat([output, boxes.to(output.dtype)], -1)
    ranks = [LOGITS_RANK[task]] if task else list(LOGITS_RANK.values())
    # a detector's logits come with boxes; packed already ([N, Q, L+4]) only where the task says detection
    unpaired = isinstance(output, torch.Tensor) and output.dim() == LOGITS_RANK["detection"] and boxes is None \
        and (task != "detection" or output.shape[-1] <= BOX_VALUES)
    if not isinstance(output, torch.Tensor) or output.dim() not in ranks or unpaired:
        what = f"a tensor of shape {list(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
        expected = {2: "a classifier's logits [N, K]", 4: "a segmentation model's logits [N, K, H, W]",
                    3: "a detector's logits [N, Q, L] and boxes [N, Q, 4] (cx, cy, w, h in [0, 1])"}
        forms = "a pair (logits, boxes) or a mapping / ModelOutput with 'logits' and 'pred_boxes'" \
            if task == "detection" else "a tensor, a tuple or list whose first element is one, or a mapping / " \
                                        "ModelOutput with 'logits' (or torchvision's 'out')"
        raise InputError(f"{model_name} returned {what}; {'salrt' if not task else task} takes "
                         f"{' or '.join(expected[r] for r in ranks)}: {forms}")
    return output


AFTER_NMS = ("returns detections after non-maximum suppression (torchvision's Faster R-CNN, RetinaNet, FCOS, SSD: "
             "torchvision.ops.batched_nms keeps a number of boxes per image known only at run time, a list of "
             "[n_i, 4] boxes and [n_i] scores), which no graph with fixed output shapes returns; salrt explains "
             "set-prediction detectors, whose every query is an output (DETR, Conditional and Deformable DETR, "
             "YOLOS: hf:...)")


def _boxes_of(output) -> Optional[torch.Tensor]:
    """A detector's boxes [N, Q, 4] beside its logits [N, Q, L]: a mapping's ``pred_boxes`` (Hugging Face) or a
    pair's second tensor; None for any other output."""
    if isinstance(output, Mapping):
        logits, boxes = output.get("logits"), output.get("pred_boxes")
    elif isinstance(output, (tuple, list)) and len(output) >= 2:
        logits, boxes = output[0], output[1]
    else:
        return None
    fits = isinstance(logits, torch.Tensor) and isinstance(boxes, torch.Tensor) and logits.dim() == 3 \
        and tuple(boxes.shape) == (*logits.shape[:2], BOX_VALUES)
    return boxes if fits else None


def logit_layout(task: str, logits: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    """(logits per item: K, or a detector's L per query; the logits' sizes after N and K: (Ho, Wo) or (Q, L))."""
    if task == "detection":
        columns = int(logits.shape[2]) - BOX_VALUES
        return columns, (int(logits.shape[1]), columns)
    return int(logits.shape[1]), tuple(int(size) for size in logits.shape[2:])


def first_conv_channels(module: torch.nn.Module) -> Optional[int]:
    """The input channels of the first convolution (a patch embedding is one too), or None."""
    conv = next((m for m in module.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    return None if conv is None else conv.in_channels


IMAGENET = "imagenet"  # --classes imagenet: the 1000 ImageNet names, for a custom model that has them


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names torchvision ships (no download needed)."""
    import torchvision
    return list(torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"])


def read_categories(categories: Union[None, str, Path, Sequence[str]]) -> Optional[list[str]]:
    """Class names given as a list, "imagenet", or a file: JSON (a list, or a {index: name} mapping) or one name
    per line."""
    if categories is None or isinstance(categories, (list, tuple)):
        return None if categories is None else [str(name) for name in categories]
    if str(categories) == IMAGENET and not Path(categories).exists():
        return imagenet_categories()
    path = Path(categories)
    if not path.is_file():
        raise InputError(f"--classes {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(names, dict):
        try:
            keys = sorted(names, key=int)
        except ValueError:
            raise InputError(f"{path}: a JSON mapping of class names needs integer keys") from None
        if [int(k) for k in keys] != list(range(len(keys))):
            raise InputError(f"{path}: class indices must be 0..{len(keys) - 1}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: expected a JSON list of class names or one name per line")
    return names


def numbered_categories(classes: int) -> list[str]:
    return [f"class {i}" for i in range(classes)]
