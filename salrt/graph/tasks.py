"""What a graph explains, per task: the scalar whose gradient every method takes, and the inputs and outputs
that come with it. A task wraps a method's function (``methods``) without the method knowing.

- ``classification``: the model returns logits [N,K]; the score is the target class's logit (a negative
  target: the top class).
- ``segmentation``: the model returns dense logits [N,K,h,w] (any h, w: SegFormer's are a quarter of the
  input's). The score is the sum of the class's logits over a region, pytorch-grad-cam's
  ``SemanticSegmentationTarget``. The ``region`` input [N,H,W] (float; 0 outside, 1 inside; other values
  weigh pixels) is at the input size; the graph resizes it to h x w as ``F.interpolate(mode="nearest")`` does.
  A negative value anywhere in an image's region asks for the default region: the pixels the model predicts
  as the class. A negative target asks for the default class: the class predicted at most pixels, the
  background left out unless nothing else is predicted. The background is the class named "background" or
  "__background__" (torchvision's VOC models, many Hugging Face configs); a model without one (ADE20K's 150
  classes, a U-Net's numbered classes) has none to leave out. Outputs add ``used_region`` (what was explained, at
  h x w: an empty one means a zero map, which ``salrt.load(...).explain`` refuses) and ``score``.

The region and class come from the clean image. Every method's first call of ``forward`` is on the clean image
(its logits, or the input gradient's forward); the task reads its dense logits there, and later calls (noisy
copies, integration points, the baseline) are scored with that same class and region. The logits a method sees
are then [B,1], each image's score (a baseline of one image: [N,1], one score per image explained).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from ..errors import ArtifactError
from ..models.spec import check_task
from .io import BASE_INPUTS

BACKGROUND_NAMES = ("background", "__background__")


@dataclasses.dataclass(frozen=True)
class Task:
    """A task and its parameters, as the manifest records them."""
    name: str = "classification"
    background: int = -1  # segmentation: the background class (-1: none)

    @property
    def spec(self) -> "TaskSpec":
        return TASKS[self.name]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The graph's inputs, in order: image, target, then the task's."""
        return BASE_INPUTS + self.spec.inputs

    def parameters(self) -> dict:
        return {"name": self.name, **{key: getattr(self, key) for key in self.spec.parameters}}

    @classmethod
    def of(cls, manifest: dict) -> "Task":
        """The task an artifact's manifest records (classification for artifacts from before tasks); an
        ArtifactError for an entry this salrt does not know."""
        entry = manifest.get("task", {"name": "classification"})
        known = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(entry, dict) or entry.get("name") not in TASKS or not set(entry) <= known \
                or not all(isinstance(entry.get(key, -1), int) for key in known - {"name"}):
            raise ArtifactError(f"manifest.json is corrupt or from a newer salrt: task {entry!r}; this salrt "
                                f"explains {', '.join(TASKS)}")
        return cls(**entry)

    @classmethod
    def for_categories(cls, name: str, categories: Sequence[str]) -> "Task":
        """Task ``name`` for a model with these class names (its background class found by name)."""
        check_task(name)
        if not TASKS[name].parameters:
            return cls(name)
        background = [i for i, category in enumerate(categories) if category.strip().lower() in BACKGROUND_NAMES]
        return cls(name, background[0] if background else -1)


def _classification(run: Callable, task: Task, logit_positions: Sequence[int]) -> Callable:
    return run


def default_class(dense: torch.Tensor, background: int) -> torch.Tensor:
    """[N]: each image's most predicted class; the background only where nothing else is predicted."""
    classes = torch.arange(dense.shape[1], device=dense.device)
    counts = (dense.argmax(1).unsqueeze(1) == classes.reshape(1, -1, 1, 1)).sum((2, 3)).to(dense.dtype)
    if background >= 0:  # below any class predicted at one pixel or more, above those predicted nowhere
        counts = torch.where(classes == background, torch.full_like(counts, 0.5), counts)
    return counts.argmax(1)


def region_at(dense: torch.Tensor, used: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """[N,h,w]: the region, resized to the dense logits' grid (nearest), or where an image's region holds a
    negative value, the pixels predicted as its class."""
    given = torch.nn.functional.interpolate(region.unsqueeze(1).to(dense.dtype), size=tuple(dense.shape[2:]),
                                            mode="nearest").squeeze(1)
    predicted = (dense.argmax(1) == used.reshape(-1, 1, 1)).to(dense.dtype)
    wants_default = region.flatten(1).amin(1).reshape(-1, 1, 1) < 0
    return torch.where(wants_default, predicted, given)


def _segmentation(run: Callable, task: Task, logit_positions: Sequence[int]) -> Callable:
    """The method's ``run`` over a forward whose logits become one column: the region's score."""
    def explain(forward, image, target, region):
        chosen = {}

        def score(dense: torch.Tensor) -> torch.Tensor:
            if not chosen:  # the first call: the clean image (see the module's docstring)
                clean = dense.detach()
                used = torch.where(target < 0, default_class(clean, task.background), target)
                chosen.update(dense=clean, used=used, region=region_at(clean, used, region))
            return _region_scores(dense, chosen["used"], chosen["region"])

        def scored(x):
            outputs = forward(x)
            if isinstance(outputs, torch.Tensor):
                return score(outputs)
            outputs = list(outputs)
            for position in logit_positions:
                outputs[position] = score(outputs[position])
            return tuple(outputs)
        scores, _, *rest = run(scored, image, torch.zeros_like(target))
        return (chosen["dense"], chosen["used"], *rest, chosen["region"], scores[:, 0])
    return explain


def _region_scores(dense: torch.Tensor, used: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """[B,1]: the class's logits summed over the region, for dense logits [B,K,h,w] of N images' samples
    (B = N x samples, each image's together) or of one image that every image compares with (integrated
    gradients' baseline: a batch of a fixed 1, scored with each image's class and region: [N,1])."""
    if isinstance(dense.shape[0], int) and dense.shape[0] == 1:
        return (dense[0].index_select(0, used) * region).sum((1, 2)).unsqueeze(1)
    per_image = dense.reshape(used.shape[0], -1, *dense.shape[1:])  # [N, samples, K, h, w]
    index = used.reshape(-1, 1, 1, 1, 1).expand(-1, per_image.shape[1], 1, *dense.shape[2:])
    picked = per_image.gather(2, index).squeeze(2)
    return (picked * region.unsqueeze(1)).sum((2, 3)).reshape(-1, 1)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: the graph inputs after ``image`` and ``target``, the outputs after the method's, and how it
    turns a method's function into its own (``wrap(run, task, positions of the logits in forward's outputs)``)."""
    name: str
    wrap: Callable[[Callable, Task, Sequence[int]], Callable]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    dense: bool = False               # its logits are [N,K,h,w]
    parameters: tuple[str, ...] = ()  # the Task fields it uses


TASKS = {spec.name: spec for spec in (
    TaskSpec("classification", _classification),
    TaskSpec("segmentation", _segmentation, inputs=("region",), outputs=("used_region", "score"), dense=True,
             parameters=("background",)),
)}
