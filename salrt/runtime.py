"""``salrt.load``: run a saliency artifact (or a model in eager PyTorch) on images."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from . import ops
from .errors import SalrtError
from .graph import input_gradient
from .images import ImageLike, open_image, to_batch
from .manifest import preprocessing_of, read_manifest, verified_file
from .models import Preprocessing, available_models, load_model

Run = Callable[[torch.Tensor, torch.Tensor], tuple]
FORMAT_OF = {"onnxruntime": "onnx", "aoti": "aoti", "torchscript": "torchscript"}  # artifact backends
BACKENDS = ("auto", "eager", *FORMAT_OF)
# What "auto" takes, fastest first, per device. ResNet-50 on 2 CPU threads (benchmarks/bench_e2e.py):
# onnxruntime 129 ms/img at N=1 (aoti 181, torchscript 163) and 130 at N=8 (aoti 96, torchscript 135), so
# onnxruntime first for the low-latency case. aoti packages are compiled for the CPU.
AUTO_ORDER = {"cpu": ("onnxruntime", "aoti", "torchscript"), "cuda": ("torchscript", "onnxruntime")}
# With both on CPU, "auto" routes each call by its batch size, between the measured N=1 and N=8.
LARGE_BATCH = 4


@dataclasses.dataclass
class Explanation:
    """Per image: logits [N,K], the class explained [N], the saliency map [N,H,W] in [0,1], the input gradient."""
    logits: torch.Tensor
    target: torch.Tensor
    saliency: torch.Tensor
    grad: torch.Tensor
    categories: Sequence[str]

    def top(self, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """The k most probable classes of each image as (index, name, probability)."""
        probabilities, indices = self.logits.float().softmax(1).topk(min(k, self.logits.shape[1]), dim=1)
        return [[(int(i), self.categories[int(i)], float(p)) for p, i in zip(row_p, row_i)]
                for row_p, row_i in zip(probabilities, indices)]


class Explainer:
    """Computes saliency maps with one backend on one device. Make it with ``salrt.load``."""

    def __init__(self, run: Run, backend: str, model: str, preprocessing: Preprocessing,
                 categories: Sequence[str], device: torch.device):
        self._run = run
        self.backend = backend
        self.model = model
        self.preprocessing = preprocessing
        self.categories = list(categories)
        self.device = device

    def __repr__(self) -> str:
        return f"Explainer(model={self.model!r}, backend={self.backend!r}, device={str(self.device)!r})"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.preprocessing.crop, self.preprocessing.crop)

    def preprocess(self, images: Union[ImageLike, Sequence[ImageLike]]) -> torch.Tensor:
        """Paths, PIL images or HWC uint8 arrays -> the normalized [N,3,H,W] batch the model takes."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        return to_batch([open_image(image) for image in images], self.preprocessing)

    def explain(self, images, target: Optional[Union[int, Sequence[int], torch.Tensor]] = None) -> Explanation:
        """Saliency of ``target`` (default: each image's top class) for a preprocessed [N,3,H,W] float32
        tensor, or for images given as paths, PIL images or HWC uint8 arrays (one or a list)."""
        batch = self._checked_batch(images if isinstance(images, torch.Tensor) else self.preprocess(images))
        targets = self._checked_targets(target, batch.shape[0])
        logits, used_target, saliency, grad = self._run(batch.to(self.device), targets.to(self.device))
        return Explanation(logits, used_target, saliency, grad, self.categories)

    def _checked_batch(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        if batch.dim() != 4 or tuple(batch.shape[1:]) != self.input_shape or batch.dtype != torch.float32 \
                or batch.shape[0] == 0:
            raise SalrtError(f"{self.model} takes a float32 [N, {', '.join(map(str, self.input_shape))}] tensor, "
                             f"got {str(batch.dtype).replace('torch.', '')} {list(batch.shape)}")
        return batch

    def _checked_targets(self, target, n: int) -> torch.Tensor:
        if target is None:
            return torch.full((n,), -1, dtype=torch.int64)
        targets = torch.as_tensor(target, dtype=torch.int64).reshape(-1)
        if targets.numel() == 1:
            targets = targets.expand(n).clone()
        if targets.numel() != n:
            raise SalrtError(f"got {targets.numel()} targets for {n} images")
        if int(targets.max()) >= len(self.categories):
            raise SalrtError(f"target {int(targets.max())} is out of range: {self.model} has "
                             f"{len(self.categories)} classes (use a negative target for the top class)")
        return targets


def _eager_run(module: torch.nn.Module, device: torch.device) -> Run:
    module = module.to(device)

    def run(image: torch.Tensor, target: torch.Tensor):
        logits, used_target, grad = input_gradient(module, image, target)
        return logits, used_target, ops.abs_channel_max_normalize(grad), grad
    return run


def _torchscript_run(path: Path, device: torch.device) -> Run:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated.*")
        module = torch.jit.load(str(path), map_location=device)

    def run(image: torch.Tensor, target: torch.Tensor):
        # The graph holds its own backward pass. no_grad, not inference_mode: the outputs stay ordinary
        # tensors that callers may feed into autograd code of their own.
        with torch.no_grad():
            return module(image, target)
    return run


def _onnxruntime_run(path: Path, device: torch.device) -> Run:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise SalrtError("backend 'onnxruntime' on CUDA needs onnxruntime-gpu: pip install 'salrt[gpu]'")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise SalrtError(f"onnxruntime cannot load {path}: {err}") from None

    def run(image: torch.Tensor, target: torch.Tensor):
        outputs = session.run(None, {"image": image.cpu().numpy(), "target": target.cpu().numpy()})
        return tuple(torch.from_numpy(output).to(device) for output in outputs)
    return run


def _aoti_run(path: Path, device: torch.device) -> Run:
    if device.type != "cpu":
        raise SalrtError("model.pt2 is compiled for the CPU; use backend 'torchscript' on CUDA")
    try:
        compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as err:  # a package from another torch or machine fails to load in many ways
        raise SalrtError(f"cannot load {path} (compiled by another torch or for another CPU?): {err}") from None

    def run(image: torch.Tensor, target: torch.Tensor):
        with torch.no_grad():
            return tuple(compiled(image, target))
    return run


_ARTIFACT_RUNS = {"torchscript": _torchscript_run, "onnxruntime": _onnxruntime_run, "aoti": _aoti_run}


def _device(device: Union[str, torch.device]) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise SalrtError(str(err)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SalrtError("device 'cuda' requested but no CUDA GPU is available here; use device='cpu'")
    if device.type not in ("cpu", "cuda"):
        raise SalrtError(f"unsupported device {device}; use 'cpu' or 'cuda'")
    return device


def load(path_or_model: Union[str, Path], backend: str = "auto", device: Union[str, torch.device] = "cpu",
         weights: str = "default") -> Explainer:
    """An explainer for an artifact directory (any backend it holds, or eager) or a model name (eager).

    ``backend="auto"`` picks the fastest backend the artifact holds. ``weights`` only applies to a model name.
    """
    if backend not in BACKENDS:
        raise SalrtError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    device = _device(device)
    source = Path(path_or_model)
    if source.is_dir():
        return _load_artifact(source, backend, device)
    if str(path_or_model) in available_models():
        if backend not in ("auto", "eager"):
            raise SalrtError(f"backend {backend!r} needs an artifact: run `salrt export {path_or_model}` first")
        spec = load_model(str(path_or_model), weights)
        return Explainer(_eager_run(spec.module, device), "eager", spec.name, spec.preprocessing, spec.categories,
                         device)
    raise SalrtError(f"{path_or_model} is neither an artifact directory nor a known model name")


def _by_batch_size(small: Callable[[], Run], large: Callable[[], Run]) -> Run:
    """Run batches below LARGE_BATCH with one backend and the rest with another, each loaded on first use."""
    loaded: dict[bool, Run] = {}

    def run(image: torch.Tensor, target: torch.Tensor):
        is_large = image.shape[0] >= LARGE_BATCH
        if is_large not in loaded:
            loaded[is_large] = (large if is_large else small)()
        return loaded[is_large](image, target)
    return run


def _load_artifact(directory: Path, backend: str, device: torch.device) -> Explainer:
    manifest = read_manifest(directory)
    if backend == "auto" and device.type == "cpu" and {"onnx", "aoti"} <= set(manifest["files"]):
        onnx_file, aoti_file = (verified_file(directory, manifest, fmt) for fmt in ("onnx", "aoti"))
        run = _by_batch_size(lambda: _onnxruntime_run(onnx_file, device), lambda: _aoti_run(aoti_file, device))
        return Explainer(run, f"auto (onnxruntime for N < {LARGE_BATCH}, else aoti)", manifest["model"],
                         preprocessing_of(manifest), manifest["categories"], device)
    if backend == "auto":
        backend = next((b for b in AUTO_ORDER[device.type] if FORMAT_OF[b] in manifest["files"]), "eager")
    if backend == "eager":
        run = _eager_run(load_model(manifest["model"], manifest["weights"]).module, device)
    else:
        run = _ARTIFACT_RUNS[backend](verified_file(directory, manifest, FORMAT_OF[backend]), device)
    return Explainer(run, backend, manifest["model"], preprocessing_of(manifest), manifest["categories"], device)
