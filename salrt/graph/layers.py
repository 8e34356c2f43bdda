"""The layers a CAM method reads: found in the model (or checked where the user names them), turned into
spatial maps, and tapped while the model runs, eagerly or while it is traced into a graph.

A layer is a module path from ``named_modules()`` of the user's model. Its output becomes a map [N, D, h, w]:
- ``nchw``: a convolutional map, as it is;
- ``nhwc``: a channels-last stage output (Swin), permuted;
- ``tokens``: [N, T, D] (ViT, DeiT, BEiT, EVA, ...), its ``prefix`` leading tokens (class, distillation,
  registers) dropped and the rest laid out on the patch grid: users write no ``reshape_transform``.

**The default layer** (``probe``, then ``default_layer``): run the model once on a fixed random image and
differentiate the top class's logit with respect to every module's output. The candidates are outputs that
are spatial maps of two positions or more (not a pooled vector, not a pass-through: Identity, Dropout, a Permute)
on which that logit depends at two positions or more, of modules that run once per forward (a reused activation
module has no one map) (after a ViT's last block only the class token reaches
the head: its final norm is no candidate). The deepest candidate wins: the one that completes last, so of the
modules returning the same tensor the outermost (ResNet: ``layer4``, not ``layer4.2.relu``). When it lies inside
a block of a repeated container (a transformer's last block, where the attention projections run after the
norm), the shallowest candidate of that block wins instead: the block's input norm (timm ViT ``blocks.11.norm1``,
torchvision ViT ``encoder.layers.encoder_layer_11.ln_1``, Hugging Face ViT ``...layer.11.layernorm_before``).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
from typing import Iterator, Optional, Sequence

import torch

from ..errors import InputError
from ..models.spec import Logits
from .io import as_image_shape
from .tasks import BOX_VALUES

LAYOUTS = ("nchw", "nhwc", "tokens")
MAX_PREFIX_TOKENS = 32  # class + distillation + up to 30 register tokens
PROBE_BATCH = 2  # outputs whose first dimension is not the batch (Swin's windows) are no maps
PROBE_SEED = 0
CANDIDATES_LISTED = 8
POOLING = (torch.nn.modules.pooling._AdaptiveAvgPoolNd, torch.nn.modules.pooling._AdaptiveMaxPoolNd,
           torch.nn.modules.pooling._AvgPoolNd, torch.nn.modules.pooling._MaxPoolNd)


@dataclasses.dataclass(frozen=True)
class Tap:
    """One layer: its path in the user's model and how its output becomes a map [N, D, h, w]."""
    path: str
    layout: str
    grid: tuple[int, int]
    prefix: int = 0  # tokens: leading tokens dropped

    def as_map(self, output: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            return output.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            patches = output[:, self.prefix:, :]
            return patches.reshape(-1, *self.grid, patches.shape[-1]).permute(0, 3, 1, 2)
        return output

    def from_map(self, tapped: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A new tensor equal to ``output`` computed from the map ``as_map`` gave: what the model runs on, so
        that the logits depend on the map (its gradient is the layer's) and an in-place op downstream of the
        layer leaves the map intact."""
        if self.layout == "nhwc":
            return tapped.permute(0, 2, 3, 1).clone()
        if self.layout == "tokens":
            patches = tapped.permute(0, 2, 3, 1).reshape(output.shape[0], -1, output.shape[-1])
            return torch.cat([output[:, :self.prefix, :], patches], 1)
        return tapped.clone()

    @property
    def reshape(self) -> str:
        """What ``as_map`` does, for the manifest."""
        h, w = self.grid
        return {"nchw": f"none: [N,D,{h},{w}]", "nhwc": f"[N,{h},{w},D] -> [N,D,{h},{w}]",
                "tokens": f"[N,{self.prefix}+{h * w},D] -> {self.prefix} prefix tokens dropped -> [N,D,{h},{w}]"
                }[self.layout]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A module output seen by the probe."""
    path: str  # in the user's model
    tap: Optional[Tap]  # None: not a spatial map
    spatial_gradient: bool  # the explained logit depends on it at two positions or more
    pass_through: bool  # the module returned its input or a view of it (Identity, Dropout in eval, Permute)
    pooling: bool
    calls: int = 1  # a module reused within one forward (EfficientNet-Lite's one activation module) has no one map

    @property
    def usable(self) -> bool:
        return (self.tap is not None and self.spatial_gradient and not self.pass_through and not self.pooling
                and self.calls == 1)


def user_root(model: torch.nn.Module) -> torch.nn.Module:
    """The user's own module: salrt wraps models that return a mapping or a ``ModelOutput`` in
    ``models.Logits``; layer paths are the user's, without the wrapper's ``model.``."""
    while isinstance(model, Logits):
        model = model.model
    return model


def grid_of(shape: Sequence[int], image_hw: Sequence[int]) -> bool:
    """True when (h, w) is a grid of at least two positions that the image's (H, W) maps onto with one stride
    (within a position either way: valid convolutions and odd sizes round)."""
    (h, w), (height, width) = shape, image_hw
    if h * w < 2 or h > height or w > width:
        return False
    low = max(height / (h + 1), width / (w + 1))
    high = min(height / (h - 1) if h > 1 else float("inf"), width / (w - 1) if w > 1 else float("inf"))
    return low <= high


def _token_grid(count: int, image_hw: Sequence[int]) -> Optional[tuple[int, int]]:
    """The (h, w) grid of ``count`` patch tokens for an image of (H, W): the factorization closest to its
    aspect ratio among those one stride maps onto."""
    height, width = image_hw
    grids = [(h, count // h) for h in range(1, count + 1) if count % h == 0 and grid_of((h, count // h), image_hw)]
    return min(grids, key=lambda g: abs(g[0] / g[1] - height / width), default=None)


def tap_of(path: str, shape: Sequence[int], image_hw: Sequence[int], prefix_tokens: Optional[int]) -> Optional[Tap]:
    """How an output of ``shape`` (batch first) becomes a map, or None when it is not a spatial map."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        for layout, grid in (("nchw", shape[2:]), ("nhwc", shape[1:3])):
            if grid_of(grid, image_hw):
                return Tap(path, layout, grid)
    if len(shape) == 3:
        tokens = shape[1]
        prefixes = [prefix_tokens] if prefix_tokens is not None else range(min(MAX_PREFIX_TOKENS, tokens - 2) + 1)
        for prefix in prefixes:
            grid = _token_grid(tokens - prefix, image_hw) if tokens - prefix >= 2 else None
            if grid is not None:
                return Tap(path, "tokens", grid, prefix)
    return None


def _prefix_tokens(model: torch.nn.Module) -> Optional[int]:
    """The model's own count of prefix tokens, where it states one (timm: ``num_prefix_tokens``)."""
    count = getattr(model, "num_prefix_tokens", None)
    return count if isinstance(count, int) else None


def probe(model: torch.nn.Module, image_shape: Sequence[int]) -> list[Candidate]:
    """Every module output of one run on a fixed random batch, in the order the modules complete."""
    root = user_root(model)
    channels, height, width = as_image_shape(image_shape)
    prefix_tokens = _prefix_tokens(root)
    seen: list[tuple[str, torch.nn.Module, torch.Tensor, bool]] = []

    def record(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.is_floating_point() and output.dim() >= 2 \
                    and output.shape[0] == PROBE_BATCH:
                through = any(isinstance(i, torch.Tensor) and _same_storage(output, i) for i in inputs)
                seen.append((name, module, output, through))
        return hook
    handles = [m.register_forward_hook(record(name)) for name, m in root.named_modules() if name]
    image = torch.randn(PROBE_BATCH, channels, height, width, generator=torch.Generator().manual_seed(PROBE_SEED))
    try:
        with torch.enable_grad():
            reference = _first_tensor(model)
            x = image.to(reference.device, reference.dtype if reference.is_floating_point() else image.dtype)
            x.requires_grad_(True)
            logits = model(x)
            score = _top_score(logits)
            reached = [t for _, _, t, _ in seen if t.requires_grad]  # others do not depend on the image
            found = iter(torch.autograd.grad(score, reached, allow_unused=True) if reached else [])
            grads = [next(found) if t.requires_grad else None for _, _, t, _ in seen]
    finally:
        for handle in handles:
            handle.remove()
    calls = collections.Counter(name for name, _, _, _ in seen)
    candidates = []
    for (name, module, output, through), grad in zip(seen, grads):
        tap = tap_of(name, output.shape, (height, width), prefix_tokens)
        spatial = tap is not None and grad is not None and _positions_reached(tap.as_map(grad)) >= 2
        candidates.append(Candidate(name, tap, spatial, through, isinstance(module, POOLING), calls[name]))
    return candidates


def _top_score(logits: torch.Tensor) -> torch.Tensor:
    """What the probe differentiates, as each task scores by default: the top class's logit (segmentation: at
    every pixel; detection: of the top query, its box values left out, which no class score depends on)."""
    if logits.dim() == 3:  # a detector's packed [N,Q,L+4]
        logits = logits[..., :-BOX_VALUES].flatten(1)
    return logits.gather(1, logits.argmax(1, keepdim=True)).sum()


def _same_storage(output: torch.Tensor, given: torch.Tensor) -> bool:
    """The output is its input or a view of it (Identity, Dropout in eval, a Permute or Flatten module)."""
    return output.untyped_storage().data_ptr() == given.untyped_storage().data_ptr()


def _first_tensor(model: torch.nn.Module) -> torch.Tensor:
    """A parameter (or buffer) of the model: the device and dtype its inputs take."""
    return next(iter([*model.parameters(), *model.buffers()]), torch.empty(0))


def _positions_reached(grad_map: torch.Tensor) -> int:
    """Positions of the grid at which the gradient is non-zero in some channel of some image."""
    return int((grad_map.detach().abs().amax((0, 1)) > 0).sum())


def default_layer(candidates: list[Candidate]) -> str:
    """The module path the CAM methods read by default (the module's docstring says the rule)."""
    usable = [c for c in candidates if c.usable]
    if not usable and any(c.tap is not None for c in candidates) and not any(c.spatial_gradient for c in candidates):
        raise InputError("the top logit's gradient is zero at every spatial map of this model: its logits do not "
                         "depend on the image (a head whose weights are zeros, as torchvision initialises ViT's "
                         "before training?); load trained weights, or salrt's --weights random")
    if not usable:
        raise InputError("no layer of this model outputs a spatial map that its logits depend on; a CAM method "
                         "needs one (use a gradient method: saliency, integrated_gradients, ...)")
    deepest = usable[-1].path
    block = _enclosing_block(deepest)
    if block is None:
        return deepest
    inside = [c for c in usable if c.path.startswith(block + ".")]
    shallowest = min(_depth(c.path) for c in inside)
    return [c for c in inside if _depth(c.path) == shallowest][-1].path


def _depth(path: str) -> int:
    return path.count(".")


def _enclosing_block(path: str) -> Optional[str]:
    """The innermost strict ancestor of ``path`` that is an item of a repeated container (``blocks.11``,
    ``encoder.layer.11``, ``encoder.layers.encoder_layer_11``): a path part that ends in a number."""
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        if parts[end - 1][-1:].isdigit():
            return ".".join(parts[:end])
    return None


def resolve(model: torch.nn.Module, image_shape: Sequence[int], layer: str = "") -> tuple[Tap, ...]:
    """The taps of ``layer`` (comma-separated module paths; "" = the default layer) on ``model``; an InputError
    naming good candidates for a path that is not a module, not a spatial map, or one the logits do not reach."""
    candidates = probe(model, image_shape)
    paths = [p.strip() for p in layer.split(",") if p.strip()] or [default_layer(candidates)]
    by_path = {}
    for candidate in candidates:  # a module run several times: its last call (a reused ReLU's last)
        by_path[candidate.path] = candidate
    return tuple(_checked(path, by_path, candidates, model) for path in dict.fromkeys(paths))


def _checked(path: str, by_path: dict, candidates: list[Candidate], model: torch.nn.Module) -> Tap:
    root = user_root(model)
    found = by_path.get(path)
    if found is not None and found.usable:
        return found.tap
    try:
        root.get_submodule(path)
        exists = True
    except AttributeError:
        exists = False
    reason = ("is not a module of the model" if not exists else "did not run" if found is None
              else "does not output a spatial map" if found.tap is None
              else "returns its input or a view of it (name the module that computes it)" if found.pass_through
              else "is a pooling layer" if found.pooling
              else f"runs {found.calls} times in one forward pass (a reused module): name one that runs once"
              if found.calls > 1
              else "is not reached by the gradient of the logits at its positions (after a ViT's last block only the "
                   "class token reaches the head)")
    good = list(dict.fromkeys(c.path for c in reversed(candidates) if c.usable))[:CANDIDATES_LISTED]
    raise InputError(f"layer {path!r} {reason}; layers that work, deepest first: {', '.join(good) or 'none'}")


class Instrument:
    """The model as a CAM or guided method reads it. Its call returns the logits, or with taps ``(logits,
    *maps)``: the taps' outputs as maps [N, D, h, w]. With ``guided``, every ``nn.ReLU`` module passes back only
    positive gradients (``guided_relu``); with taps as well (Guided Grad-CAM), the maps come from a plain run
    and a second, guided run's logits follow them: ``(logits, *maps, guided_logits)``, as pytorch-grad-cam and
    Captum compute the Grad-CAM factor with plain gradients. Hooks are installed for the duration of a ``with
    installed()`` block and act only in the thread that entered it: other threads calling the same model (or
    the user's own code) see it unchanged."""

    def __init__(self, model: torch.nn.Module, taps: Sequence[Tap] = (), guided: bool = False):
        self.model, self.taps, self.guided = model, tuple(taps), guided
        self._outputs: dict[str, torch.Tensor] = {}
        self._guiding = guided

    @contextlib.contextmanager
    def installed(self) -> Iterator["Instrument"]:
        root = user_root(self.model)
        thread = threading.get_ident()
        handles = [root.get_submodule(tap.path).register_forward_hook(self._tapping(tap, thread))
                   for tap in self.taps]
        if self.guided:
            handles += [m.register_forward_hook(self._guiding_hook(thread)) for m in root.modules()
                        if type(m) is torch.nn.ReLU]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _tapping(self, tap: Tap, thread: int):
        def hook(module, inputs, output):
            if threading.get_ident() == thread and not self._guiding:
                self._outputs[tap.path] = tapped = tap.as_map(output)
                return tap.from_map(tapped, output)
        return hook

    def _guiding_hook(self, thread: int):
        def hook(module, inputs, output):
            if threading.get_ident() == thread and self._guiding:
                return guided_relu(output)  # relu(relu(x)) = relu(x), whether the ReLU ran in place or not
        return hook

    def run(self, forward, x: torch.Tensor):
        """``forward(x)`` (the model, or a functional call of it while tracing) with the hooks' outputs."""
        if not self.taps:
            return forward(x)
        self._outputs, self._guiding = {}, False
        logits = forward(x)
        maps = tuple(self._outputs.pop(tap.path) for tap in self.taps)
        if not self.guided:
            return (logits, *maps)
        self._guiding = True
        return (logits, *maps, forward(x))


@torch.library.custom_op("salrt::guided_relu", mutates_args=())
def guided_relu(x: torch.Tensor) -> torch.Tensor:
    """relu(x), whose backward passes only positive gradients where x > 0 (Springenberg et al. 2015). Traced
    graphs keep it through autograd, then write it as ``aten.relu`` (``GUIDED_DECOMPOSITIONS``)."""
    return torch.relu(x)


@guided_relu.register_fake
def _guided_relu_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _guided_relu_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (output,) = ctx.saved_tensors
    return torch.where((output > 0) & (grad > 0), grad, torch.zeros_like(grad))


guided_relu.register_autograd(_guided_relu_backward,
                              setup_context=lambda ctx, inputs, output: ctx.save_for_backward(output))
GUIDED_DECOMPOSITIONS = {torch.ops.salrt.guided_relu.default: torch.relu}
