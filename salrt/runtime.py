"""``salrt.load``: run a saliency artifact (or a model in eager PyTorch) on images."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from PIL import Image

from . import ops
from .artifact import (check_digest, describe, dtype_of, is_artifact_dir, preprocessing_of, read_manifest,
                       verified_file)
from .cuda_graphs import GraphedRun
from .devices import checked_device
from .errors import ArtifactError, InputError
from .formats import AUTO, BY_BACKEND, CUDA_GRAPH_BACKENDS, EAGER, Run, auto_routes, check_backend, runs_on
from .graph import (DEFAULT_DTYPE, TASKS, Method, Task, build_saliency_graph, contract_of, image_shape,
                    input_gradient, method_outputs)
from .graph.tasks import class_probabilities, ranked_detections
from .graph.precision import check_device, check_dtype, numerics
from .graph.io import names
from .images import ImageLike, mode_for, open_image, region_mask, to_batch
from .models import ClassifierSpec, as_spec, is_model_name, load_model


@dataclasses.dataclass
class Explanation:
    """A graph's outputs by their contract names (``salrt.graph.io``), the class names and the backend used.

    Per image: ``logits`` [N,K] (segmentation: [N,K,Ho,Wo]), ``used_target`` (also ``target``) the class
    explained [N], ``saliency`` [N,H,W] in [0,1], ``grad`` (also ``attribution``) [N,C,H,W]: the input gradient
    for the saliency method (None where a server's image model sends none), integrated gradients' completeness
    error ``delta`` [N] (None for other methods), segmentation's ``used_region`` [N,Ho,Wo] and ``score``
    [N]; any other output as ``outputs[name]``."""
    outputs: dict[str, torch.Tensor]
    categories: Sequence[str]
    backend: str

    logits = property(lambda self: self.outputs["logits"])
    used_target = property(lambda self: self.outputs["used_target"])
    target = used_target
    saliency = property(lambda self: self.outputs["saliency"])
    grad = property(lambda self: self.outputs.get("grad"))
    attribution = grad
    delta = property(lambda self: self.outputs.get("delta"))
    used_region = property(lambda self: self.outputs.get("used_region"))
    used_query = property(lambda self: self.outputs.get("used_query"))
    used_box = property(lambda self: self.outputs.get("used_box"))
    score = property(lambda self: self.outputs.get("score"))

    def class_shares(self) -> torch.Tensor:
        """[N,K]: each class's probability (softmax of the logits); for segmentation its share of the image's
        pixels (those the model predicts as it); for detection its most probable query's probability."""
        logits = self.logits.float()
        if logits.dim() == 2:
            return logits.softmax(1)
        if logits.dim() == 3:
            return class_probabilities(logits, int(logits.shape[2] == len(self.categories) + 1)).amax(1)
        counts = [torch.bincount(predicted.flatten(), minlength=logits.shape[1]) for predicted in logits.argmax(1)]
        return torch.stack(counts).float() / logits[0, 0].numel()

    def detection_probability(self) -> torch.Tensor:
        """[N]: a detector's explained query's probability of the explained class (as ``class_shares`` ranks)."""
        logits = self.logits.float()
        probabilities = class_probabilities(logits, int(logits.shape[2] == len(self.categories) + 1))
        return probabilities[torch.arange(len(logits)), self.used_query, self.used_target]

    def top(self, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """The k most probable classes of each image as (index, name, probability); for segmentation the k
        most predicted, with their shares of the pixels."""
        shares = self.class_shares()
        probabilities, indices = shares.topk(min(k, shares.shape[1]), dim=1)
        return [[(int(i), self.categories[int(i)], float(p)) for p, i in zip(row_p, row_i)]
                for row_p, row_i in zip(probabilities, indices)]


class Explainer:
    """Computes saliency maps on one device with one backend, or several that ``auto`` routes between by
    batch size. Make it with ``salrt.load``. A single backend loads in ``salrt.load``; ``auto``'s several load
    on first use. ``explain`` may be called from many threads."""

    def __init__(self, loaders: dict[str, Callable[[], Run]], routes: list[tuple[int, str]], manifest: dict,
                 device: torch.device, cuda_graphs: bool = False):
        loaders = _in_numerics(loaders, dtype_of(manifest))
        self._loaders = _graphed(loaders, device) if cuda_graphs else loaders
        self._runs: dict[str, Run] = {}
        self._loading = threading.Lock()
        self._routes = sorted(routes)  # [(smallest batch size, backend), ...]
        self.manifest = manifest
        self.model: str = manifest["model"]
        self.preprocessing = preprocessing_of(manifest)
        self.categories: list[str] = list(manifest["categories"])
        self.device = device
        self._contract = contract_of(manifest)
        self._output_names = names(self._contract["outputs"])

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends this explainer runs, smallest batch sizes first: one, or several when ``auto`` routes."""
        return tuple(dict.fromkeys(backend for _, backend in self._routes))

    @property
    def backend(self) -> str:
        """The backend that runs every call, or "auto" when it depends on the batch size (``backend_for``)."""
        return self.backends[0] if len(self.backends) == 1 else AUTO

    def backend_for(self, batch_size: int) -> str:
        return [backend for smallest, backend in self._routes if smallest <= batch_size][-1]

    @property
    def inputs(self) -> list[dict]:
        """The graph's inputs: name, dtype, shape with the model's sizes and "N" for the batch (as onnxruntime's
        ``InferenceSession.get_inputs``)."""
        return self._contract["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self._contract["outputs"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return tuple(self.inputs[0]["shape"][1:])

    def __repr__(self) -> str:
        routes = self.backend if self.backend != AUTO else \
            "auto: " + ", ".join(f"{backend} from N={smallest}" for smallest, backend in self._routes)
        return f"Explainer(model={self.model!r}, backend={routes!r}, device={str(self.device)!r})"

    def preprocess(self, images: Union[ImageLike, Sequence[ImageLike]]) -> torch.Tensor:
        """Paths, encoded bytes, PIL images or HW(C) uint8 arrays -> the normalized [N,C,H,W] batch (files are
        converted to the model's channels: grayscale for 1, RGB for 3)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        mode = mode_for(self.input_shape[0])
        return to_batch([open_image(image, mode) for image in images], self.preprocessing)

    def explain(self, images, target: Optional[Union[int, Sequence[int], torch.Tensor]] = None,
                region=None, box=None, query=None) -> Explanation:
        """Saliency maps of ``images`` for ``target``.

        Args:
            images: a preprocessed float32 [N,C,H,W] (or [C,H,W]) tensor, or images as paths, encoded
                bytes, PIL images or HW(C) uint8 arrays (one or a list), preprocessed as the model expects.
            target: the class to explain (an index or a class name), one for all images or one per image;
                None or a negative value explains each image's top class (segmentation: its most predicted
                class, background aside).
            region: segmentation only: the pixels whose class logits are summed, [H,W] for every image or
                [N,H,W], at the model's input size (bool, or float weights), or a mask image (path, bytes or
                PIL image; pixels above 0 are in the region) resized and cropped as the images are; None: the
                pixels the model predicts as the class.
            box: detection only: x0, y0, x1, y1 in the model's input pixels, one for every image or [N,4]: the
                query whose predicted box overlaps it most is explained; None (or an image's four -1s): the top
                detection (of the target class, if given).
            query: detection only: the query to explain by its index, one for every image or one per image (-1:
                chosen by box, class or score as above); ``explain_detections`` ranks them.

        Returns:
            An ``Explanation``: the graph's outputs by name (logits, the class explained, saliency, grad, ...)
            and the backend used.

        Raises:
            InputError: unreadable images; a tensor of the wrong dtype or shape, empty, or holding NaN or
                Inf; targets that are not integers, a wrong number of them or one out of range; a region of
                the wrong size, for a model that is not a segmentation model, or empty at the model's output
                grid (a class predicted nowhere, with the default region).
            ArtifactError: the first call routed to a backend whose file its runtime refuses (``auto``
                loads its backends on first use; a single backend loads in ``salrt.load``).
        """
        return self.explain_checked(*self.checked_inputs(images, target, region=region, box=box, query=query))

    def explain_detections(self, images, count: int, target=None) -> list[Explanation]:
        """A detector's ``count`` most probable detections per image, explained one map each: element r holds
        each image's r-th (of the target class's, if given), its query in ``used_query``. The first is
        ``explain(images, target)``; its logits rank the rest."""
        task = Task.of(self.manifest)
        queries = next(io for io in self.outputs if io["name"] == "logits")["shape"][1]
        if task.name != "detection":
            raise InputError(f"{self.model} explains {task.name}; ranked detections are a detector's")
        if type(count) is not int or not 1 <= count <= queries:
            raise InputError(f"the number of detections to explain must be 1 to {queries} (the model's queries), "
                             f"got {count!r}")
        batch, targets, *_ = self.checked_inputs(images, target)
        first = self.explain(batch, targets)
        ranked = ranked_detections(first.logits.float(), task.no_object, targets, count)
        return [first] + [self.explain(batch, targets, query=ranked[:, r]) for r in range(1, count)]

    def explain_checked(self, batch: torch.Tensor, targets: torch.Tensor, *task_inputs: torch.Tensor,
                        refuse: bool = True) -> Explanation:
        """``explain`` of what ``checked_inputs`` returned, not checked again (a server checks each request
        alone, then explains them as one batch). ``refuse=False``: no InputError for what only the outputs show
        (an empty region); the caller asks ``refusal`` of each request's rows."""
        backend = self.backend_for(batch.shape[0])
        run = self._run(backend)
        # a sampling method's memory grows with images x samples per step: large batches go in parts
        step = self.manifest.get("images_per_call") or batch.shape[0]
        # contiguous: AOTInductor packages read their inputs' memory as dense NCHW without checking strides
        parts = [run(*(x[i:i + step].to(self.device).contiguous() for x in (batch, targets, *task_inputs)))
                 for i in range(0, batch.shape[0], step)]
        outputs = list(parts[0]) if len(parts) == 1 else [torch.cat(pieces) for pieces in zip(*parts)]  # no copy
        if len(outputs) != len(self._output_names):
            raise ArtifactError(f"{backend} returned {len(outputs)} outputs; the manifest lists "
                                f"{', '.join(self._output_names)}: export it again")
        explanation = Explanation(dict(zip(self._output_names, outputs)), self.categories, backend)
        error = self.refusal(explanation.outputs, task_inputs) if refuse else None
        if error is not None:
            raise error
        return explanation

    def checked_inputs(self, images, target=None, **task_inputs) -> tuple[torch.Tensor, ...]:
        """``explain``'s arguments as the graph's inputs (the [N,C,H,W] float32 batch, [N] int64 targets, a
        task's inputs by name) after the checks it makes (InputError as ``explain`` raises it): a server checks
        each request alone before batching requests together."""
        batch = self._checked_batch(images if isinstance(images, torch.Tensor) else self.preprocess(images))
        expected = names(self.inputs)[2:]
        for name, value in task_inputs.items():
            if value is not None and name not in expected:
                owner = next(task for task, spec in TASKS.items() if name in spec.inputs)
                raise InputError(f"{name}: for a {owner} model; {self.model} explains {Task.of(self.manifest).name}")
        checks = {"region": self._checked_region, "box": self._checked_box, "query": self._checked_query}
        n = batch.shape[0]
        return (batch, self._checked_targets(target, n), *(checks[name](task_inputs.get(name), n) for name in expected))

    def _checked_box(self, box, n: int) -> torch.Tensor:
        """[N,4] float32: the box given (x0, y0, x1, y1 in input pixels, one or one per image), or -1."""
        if box is None:
            return torch.full((n, 4), -1.0)
        height, width = self.input_shape[1:]
        try:
            boxes = torch.as_tensor(box, dtype=torch.float32).reshape(-1, 4)
        except (TypeError, ValueError, RuntimeError):
            boxes = None
        if boxes is None or boxes.shape[0] not in (1, n):
            raise InputError(f"box must be x0, y0, x1, y1 in the model's input pixels, one or one per image, "
                             f"got {box!r}")
        inside = torch.isfinite(boxes).all(1) & (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & \
            (boxes[:, 2] <= width) & (boxes[:, 3] <= height) & (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
        inside |= (boxes < 0).all(1)  # an image's -1s: its top detection, as a negative target means its top class
        if not inside.all():
            bad = boxes[int((~inside).nonzero()[0])].tolist()
            raise InputError(f"box {bad} is not a box inside the model's {width}x{height} input (x0 < x1 <= "
                             f"{width}, y0 < y1 <= {height}, in its pixels)")
        return boxes.expand(n, 4).contiguous()

    def _checked_query(self, query, n: int) -> torch.Tensor:
        """[N] int64: the query given (an index, one or one per image), or -1 (chosen by box, class or score)."""
        if query is None:
            return torch.full((n,), -1, dtype=torch.int64)
        queries = next(io for io in self.outputs if io["name"] == "logits")["shape"][1]
        try:
            indices = torch.as_tensor(query)
        except (TypeError, ValueError, RuntimeError):
            indices = None
        if indices is None or indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool \
                or indices.numel() not in (1, n) or (indices.numel() and int(indices.max()) >= queries):
            raise InputError(f"query must be a query's index below {queries} (the model's queries), one or one per "
                             f"image, got {query!r}")
        return indices.to(torch.int64).reshape(-1).expand(n).contiguous()

    def _checked_region(self, region, n: int) -> torch.Tensor:
        """[N,H,W] float32: the region given ([H,W] or [N,H,W], bool or numbers), or -1 (the predicted pixels)."""
        size = tuple(self.input_shape[1:])
        if region is None:
            return torch.full((n, *size), -1.0)
        if isinstance(region, (str, Path, bytes, Image.Image)):
            region = region_mask(region, self.preprocessing)
        try:
            regions = torch.as_tensor(region)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"region must be an array of shape [H, W] or [N, H, W], got {type(region).__name__}") \
                from None
        if regions.dim() == 2:
            regions = regions.expand(n, *regions.shape)
        if regions.dim() != 3 or regions.shape[0] != n or tuple(regions.shape[1:]) != size or regions.is_complex():
            raise InputError(f"region must be [{size[0]}, {size[1]}] or [{n}, {size[0]}, {size[1]}] (the model's "
                             f"input size, one per image), got {list(regions.shape)}")
        regions = regions.float()
        if not torch.isfinite(regions).all():
            raise InputError("region holds NaN or Inf values")
        return regions.contiguous()

    def refusal(self, outputs: dict[str, torch.Tensor], task_inputs: Sequence[torch.Tensor]) -> Optional[InputError]:
        """The InputError ``explain`` raises for these rows' outputs and task inputs, or None: an image whose
        explained region is empty at the logits' grid (its map would be zero, not an explanation)."""
        used_region = outputs.get("used_region")
        if used_region is None:
            return None
        empty = (used_region.flatten(1) == 0).all(1).cpu()
        if not empty.any():
            return None
        i = int(empty.nonzero()[0])
        label = int(outputs["used_target"][i])
        grid = "x".join(map(str, used_region.shape[1:]))
        if bool((task_inputs[0][i] < 0).any()):
            return InputError(f"image {i}: the model predicts class {label} ({self.categories[label]}) nowhere, so "
                              "its region is empty: give a region, or another class")
        return InputError(f"image {i}: the region is empty at the model's output grid ({grid}): nothing to explain; "
                          "give a region that covers more of the image")

    def class_index(self, name) -> int:
        """The index of a class given by name (exact, else ignoring case) or as an index (an int or its digits)."""
        if isinstance(name, int) or str(name).lstrip("-").isdigit():
            return int(name)
        folded = [category.lower() for category in self.categories]
        if name in self.categories:
            return self.categories.index(name)
        if name.lower() in folded:
            return folded.index(name.lower())
        close = [repr(self.categories[folded.index(c)]) for c in difflib.get_close_matches(name.lower(), folded, n=3)]
        some = ", ".join(self.categories[:8]) + (", ..." if len(self.categories) > 8 else "")
        raise InputError(f"{self.model} has no class {name!r}; " +
                         (f"did you mean {', '.join(close)}?" if close else f"its classes: {some}"))

    def _run(self, backend: str) -> Run:
        run = self._runs.get(backend)
        if run is None:
            with self._loading:
                if backend not in self._runs:
                    self._runs[backend] = self._loaders[backend]()
                run = self._runs[backend]
        return run

    def _checked_batch(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        if batch.dim() != 4 or tuple(batch.shape[1:]) != self.input_shape or batch.dtype != torch.float32 \
                or batch.shape[0] == 0:
            raise InputError(f"{self.model} takes a float32 [N, {', '.join(map(str, self.input_shape))}] tensor, "
                             f"got {str(batch.dtype).replace('torch.', '')} {list(batch.shape)}")
        finite = torch.isfinite(batch).flatten(1).all(1)
        if not finite.all():
            bad = [int(i) for i in (~finite).nonzero().flatten()]
            raise InputError(f"image{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of the batch "
                             "hold NaN or Inf values; salrt explains finite inputs only")
        return batch

    def _checked_targets(self, target, n: int) -> torch.Tensor:
        if target is None:
            return torch.full((n,), -1, dtype=torch.int64)
        if isinstance(target, str) or (isinstance(target, (list, tuple)) and any(isinstance(t, str) for t in target)):
            target = [self.class_index(t) for t in ([target] if isinstance(target, str) else target)]
        try:
            targets = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            targets = None
        if targets is None or targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise InputError(f"target must be an integer class index or one per image, got {target!r}")
        targets = targets.to(torch.int64).reshape(-1)
        if targets.numel() == 1:
            targets = targets.expand(n).clone()
        if targets.numel() != n:
            raise InputError(f"got {targets.numel()} targets for {n} images")
        if int(targets.max()) >= len(self.categories):
            raise InputError(f"target {int(targets.max())} is out of range: {self.model} has "
                             f"{len(self.categories)} classes (use a negative target for the top class)")
        return targets


def _eager_run(module: torch.nn.Module, device: torch.device, manifest: dict) -> Run:
    """The model in PyTorch computing the manifest's method: the saliency method with the fused op, the
    others with the very functions the exported graphs trace. A reduced dtype runs the exported graph itself
    (built here, run op by op in PyTorch): its scheme is a rewrite of that graph, so eager computes exactly
    what every format computes."""
    method = Method.of(manifest)
    if dtype_of(manifest) != DEFAULT_DTYPE:
        p = preprocessing_of(manifest)
        graph = build_saliency_graph(module, p.input_shape, method, p.mean, p.std, dtype=dtype_of(manifest),
                                     task=Task.of(manifest))
        graph = graph.to(device)

        def run_graph(*inputs: torch.Tensor):
            with torch.no_grad():
                return graph(*inputs)
        return run_graph
    module = module.to(device)
    if method.name != "saliency" or Task.of(manifest) != Task():
        p = preprocessing_of(manifest)
        return functools.partial(method_outputs(method, p.input_shape, p.mean, p.std, Task.of(manifest)), module)

    def run(image: torch.Tensor, target: torch.Tensor):
        logits, used_target, grad = input_gradient(module, image, target)
        return logits, used_target, ops.abs_channel_max_normalize(grad), grad
    return run


def load(source: Union[str, Path, torch.nn.Module, ClassifierSpec], backend: str = AUTO,
         device: Union[str, torch.device] = "cpu", weights: str = "default", method: Optional[Method] = None,
         digest: Optional[str] = None, cuda_graphs: bool = False, dtype: Optional[str] = None,
         spin_wait: bool = True, **model_options) -> Explainer:
    """An explainer for a model (run eagerly in PyTorch) or an artifact directory.

    Args:
        source: a model source (``salrt.models``: a torchvision name, ``timm:NAME``, ``hf:PATH_OR_ID``,
            ``package.module:attribute``; a ``str`` naming one always means the model, even if a directory of
            that name exists), an ``nn.Module``, or else the path of an artifact directory (a ``Path``, or a
            string such as ``"resnet50/"`` or ``"./resnet50"``).
        backend: "auto" (the fastest the artifact holds for the device and batch size, see
            ``salrt.formats.AUTO_ROUTES``), "eager", or a format's backend: "torchscript", "onnxruntime",
            "aoti", "aoti_n1".
        device: "cpu" or "cuda[:i]".
        weights: for a model name only: "default", "random" or the path of a state dict.
        method: for a model name, the method to run (``salrt.graph.Method``; default: saliency); an artifact
            runs the method it was exported with (another one here is an InputError).
        digest: for an artifact: the digest ``salrt info`` printed when it was reviewed; a directory whose
            digest differs is refused before any of its files is loaded (an artifact is code: model.pt2 is a
            shared library loaded into the process, model.pt a TorchScript program).
        cuda_graphs: on CUDA, replay each batch size's kernels from a CUDA graph captured on its first call
            (``salrt.cuda_graphs``): less launch overhead at small batches; backends ``CUDA_GRAPH_BACKENDS``.
        dtype: for a model: "fp32" (default), "bf16" or "fp16" (``salrt.graph.precision``: the scheme and where
            each runs); an artifact computes in the dtype it was exported with (another one here is an
            InputError).
        spin_wait: False where other CPU work runs beside the model, as ``salrt explain``'s decoding workers
            do: onnxruntime's threads then sleep between operators instead of spinning on cores that work
            needs (a whole dataset pipeline runs faster so; a lone call is slower: keep True for latency).
            libtorch's threads (eager, torchscript, aoti) spin only briefly either way.
        model_options: for a model: ``categories``, ``preprocessing``, ``channels``, ``image_size``, ``task``,
            as ``salrt.export`` takes them.

    Returns:
        An ``Explainer``.

    Raises:
        InputError: unknown source, backend, device or dtype; weights that do not fit the model; a dtype the
            backend does not run on the device.
        ArtifactError: a manifest of another format version, a missing or tampered file, a file its runtime
            cannot load, or a format that does not run on the device.
    """
    check_backend(backend)
    device = checked_device(device)
    if is_model_name(source) or isinstance(source, (torch.nn.Module, ClassifierSpec)):
        if backend not in (AUTO, EAGER):
            raise InputError(f"backend {backend!r} needs an artifact directory: run `salrt export {source}`, "
                             f"then load {str(source) + '/'!r}")
        if digest is not None:
            raise InputError("digest: for an artifact directory only (a model source is not a reviewed file)")
        check_device(check_dtype(dtype or DEFAULT_DTYPE), EAGER, device.type)
        spec = as_spec(source, weights, **model_options)
        method = (method or Method()).check().resolved(spec.module, spec.input_shape)
        manifest = describe(spec, method, dtype or DEFAULT_DTYPE)
        return Explainer({EAGER: lambda: _eager_run(spec.module, device, manifest)}, [(1, EAGER)], manifest, device,
                         cuda_graphs)
    if model_options:
        raise InputError(f"{', '.join(model_options)}: for a model only; an artifact has its own")
    if Path(source).is_dir():
        if digest is not None:
            check_digest(Path(source), digest)
        explainer = _load_artifact(Path(source), backend, device, cuda_graphs, spin_wait)
        if dtype is not None and check_dtype(dtype) != dtype_of(explainer.manifest):
            raise InputError(f"{source} computes in {dtype_of(explainer.manifest)}, not {dtype}: export it with "
                             f"--dtype {dtype}, or load the model by name")
        if method is not None and not method.check().matches(Method.of(explainer.manifest)):
            raise InputError(f"{source} computes {Method.of(explainer.manifest).parameters()}, not "
                             f"{method.parameters()}: export it with that method, or load the model by name")
        return explainer
    raise InputError(f"{source} is neither an artifact directory nor a known model name")


def _load_artifact(directory: Path, backend: str, device: torch.device, cuda_graphs: bool = False,
                   spin_wait: bool = True) -> Explainer:
    manifest = read_manifest(directory)
    routes = auto_routes(device, manifest["files"]) if backend == AUTO else [(1, backend)]
    for _, name in routes:  # before any file loads: a dtype the runtime does not run on this device
        check_device(dtype_of(manifest), EAGER if name == EAGER else BY_BACKEND[name].name, device.type)
    loaders = {}
    for name in {route_backend for _, route_backend in routes}:
        if name == EAGER:
            loaders[name] = lambda: _eager_run(_rebuilt_model(directory, manifest), device, manifest)
        else:
            _check_runs_on(directory, manifest["files"].get(BY_BACKEND[name].name), device)
            path = verified_file(directory, manifest, BY_BACKEND[name].name)  # now: a bad file fails the load
            loaders[name] = lambda load=BY_BACKEND[name].load, path=path: _refusing_foreign_graphs(
                load(path, device, spin_wait), path)
    explainer = Explainer(loaders, routes, manifest, device, cuda_graphs)
    if len(explainer.backends) == 1:
        explainer._run(explainer.backend)  # a single backend loads now: load() reports a file its runtime refuses
    return explainer


def _refusing_foreign_graphs(run: Run, path: Path) -> Run:
    """``run``, whose failure on inputs that passed the contract's checks is an ArtifactError naming its file:
    that file is not the graph salrt wrote (a damaged or foreign file whose sha256 the manifest was edited to
    state). Running out of memory stays what it is."""
    def checked(*inputs: torch.Tensor):
        try:
            return run(*inputs)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            raise ArtifactError(f"{path} fails on inputs its manifest describes, so it is not the graph salrt "
                                f"exported ({str(err).strip().splitlines()[0][:300]}): export it again") from None
    return checked


def _in_numerics(loaders: dict[str, Callable[[], Run]], dtype: str) -> dict[str, Callable[[], Run]]:
    """The loaders, each run called in the mode ``dtype`` computes in (``precision.numerics``: tf32's)."""
    def in_mode(run: Run) -> Run:
        def run_in_mode(*inputs: torch.Tensor):
            with numerics(dtype):
                return run(*inputs)
        return run_in_mode
    return {name: (lambda load=load: in_mode(load())) for name, load in loaders.items()}


def _graphed(loaders: dict[str, Callable[[], Run]], device: torch.device) -> dict[str, Callable[[], Run]]:
    """The loaders, each run wrapped in CUDA graph replay (InputError where that cannot work)."""
    if device.type != "cuda":
        raise InputError(f"cuda_graphs: for a CUDA device only, not {device}")
    refused = [name for name in loaders if name not in CUDA_GRAPH_BACKENDS]
    if refused:
        raise InputError(f"cuda_graphs: backend {', '.join(refused)} cannot be captured in a CUDA graph (it copies "
                         f"through the host); choose one of {', '.join(CUDA_GRAPH_BACKENDS)}")
    return {name: (lambda load=load: GraphedRun(load(), device)) for name, load in loaders.items()}


def _check_runs_on(directory: Path, entry: Optional[dict], device: torch.device) -> None:
    if entry is not None and not runs_on(entry, device):
        raise ArtifactError(f"{directory / entry['file']} is compiled for {entry['device']}, not {device.type}: load "
                            f"it with device={entry['device']!r}, or export it again with --device {device.type}")


def _rebuilt_model(directory: Path, manifest: dict) -> torch.nn.Module:
    """The artifact's model in PyTorch, for the eager backend: only for models salrt builds from a source."""
    if not is_model_name(manifest["model"]) or manifest["weights"] == "custom":
        raise ArtifactError(f"{directory} was exported from a custom module ({manifest['model']}); the eager "
                            "backend needs a model salrt can build by name: use one of its files' backends")
    return rebuilt_spec(manifest).module


def rebuilt_spec(manifest: dict) -> ClassifierSpec:
    """The model an artifact names, with its weights, channels, class names and preprocessing."""
    return load_model(manifest["model"], manifest["weights"], categories=manifest["categories"],
                      preprocessing=preprocessing_of(manifest), channels=image_shape(manifest)[0],
                      task=Task.of(manifest).name)


def is_model_name_and_artifact(source: str) -> bool:
    """True when ``source`` names a model and an artifact directory at once (the model wins)."""
    return is_model_name(source) and is_artifact_dir(Path(source))
