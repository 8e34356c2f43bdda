"""The gradient family as plain torch functions that the graph traces and the eager backend runs as they are.

Every method maps ``(forward, image [N,C,H,W], target [N])`` to ``(logits, used_target, saliency,
attribution[, delta])``: logits and the explained class come from the clean image (a negative target is its
top class), ``attribution`` is per channel [N,C,H,W] and ``saliency`` its normalized channel max of |.|.
Sampling methods expand each image into its samples inside the graph, ``chunk`` samples at a time (the
chunks are unrolled: memory follows N x chunk, not N x samples).

- ``saliency``: the input gradient (Simonyan et al. 2014).
- ``input_x_gradient``: gradient x input.
- ``smoothgrad``, ``smoothgrad_sq``, ``vargrad`` (Smilkov et al. 2017; Adebayo et al. 2018): the mean, mean
  square and variance of gradients at ``samples`` noisy copies, noise std = ``noise`` x (max - min) of each
  image (in the model's normalized input space). The noise is a fixed tensor drawn from ``seed`` at export
  and stored in the graph: every backend sees the same numbers, and the same image gets the same map.
- ``integrated_gradients`` (Sundararajan et al. 2017): (x - baseline) x the ``ig_method`` quadrature of the
  gradient along the straight path, Captum's points and weights; ``delta`` = sum of attributions - (F(x) -
  F(baseline)) per image, the completeness error.

The CAM family reads a layer (``layers``: the default one, or ``Method.layer``) and computes what
pytorch-grad-cam 1.5.7 computes: per layer a map relu(cam) [N,h,w] (the ``cam`` output, of the first layer),
min-max normalized, upsampled bilinearly with half-pixel centres to the input size, averaged over the layers and
normalized again (``saliency``); ``grad`` is that average at the input size, the same in every channel.

- ``gradcam`` (Selvaraju et al. 2017): Σ_c mean(∂F_t/∂A_c) A_c. ``hirescam``: Σ_c ∂F_t/∂A_c ⊙ A_c.
- ``gradcam_pp`` (Chattopadhay et al. 2018), ``xgradcam`` (Fu et al. 2020), ``layercam`` (Jiang et al. 2021):
  their channel (or position) weights of the gradient, as pytorch-grad-cam writes them, epsilons included.
- ``eigencam`` (Muhammad & Yeasin 2020): the activations (positions x channels, centred over positions)
  projected on their first principal component. No gradient. ONNX has no SVD: the graph finds the component by
  ``EIGEN_SQUARINGS`` repeated squarings of the smaller Gram matrix and ``EIGEN_REFINEMENTS`` power steps; its
  sign is the one whose largest magnitude is positive (Seg-Eigen-CAM's rule; an SVD's sign is arbitrary).
- ``guided_backprop`` (Springenberg et al. 2015): the input gradient with every ``nn.ReLU`` module passing back
  only positive gradients (as Captum's GuidedBackprop: functional relus, GELU and SiLU pass gradients as they
  are). ``guided_gradcam``: guided backprop x the Grad-CAM saliency (Selvaraju et al. 2017; pytorch-grad-cam's
  recipe), the Grad-CAM factor from plain gradients.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from .io import BASE_OUTPUTS, as_image_shape
from .layers import Instrument, Tap, resolve
from .tasks import Task
from .saliency import input_gradient, normalize, saliency_from_grad

IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")
BASELINES = ("zeros", "black")
CHOICES = {"ig_method": IG_METHODS, "baseline": BASELINES}  # the parameters that take one of a few names
SAMPLES_PER_STEP_AT_224 = 16  # the default chunk: images in one forward+backward step, scaled by pixel count
PIXELS_AT_224 = 224 * 224
EIGEN_SQUARINGS = 12  # the Gram matrix raised to 2**12: the second component weighs (s2/s1)**8192 of the first
EIGEN_REFINEMENTS = 2


@dataclasses.dataclass(frozen=True)
class Method:
    """A method and its parameters (those of other methods are ignored, and left out of ``parameters``)."""
    name: str = "saliency"
    samples: int = 25        # smoothgrad family
    noise: float = 0.15      # smoothgrad family: std as a fraction of each image's value range
    seed: int = 0            # smoothgrad family
    steps: int = 32          # integrated_gradients
    ig_method: str = "gausslegendre"
    baseline: str = "zeros"  # zeros: 0 in the normalized input space (Captum's default); black: a black image
    chunk: int = 0           # samples per step; 0: chosen from the image size
    layer: str = ""          # CAM family: module paths, comma-separated (averaged); "": chosen for the model
    taps: tuple = ()         # CAM family: the resolved layers (``layers.Tap``), set by ``resolved``

    def check(self) -> "Method":
        """This method, or an InputError naming each bad field (``name``, ``samples``, ...)."""
        rules = [(self.name in METHODS, f"unknown method {self.name!r}; choose from {', '.join(METHODS)}"),
                 (self.samples >= 1, f"samples must be at least 1, got {self.samples}"),
                 (self.noise >= 0, f"noise must be at least 0, got {self.noise}"),
                 (self.steps >= 2, f"steps must be at least 2, got {self.steps}"),
                 *((getattr(self, field) in choices, f"unknown {field} {getattr(self, field)!r}; choose from "
                                                     f"{', '.join(choices)}") for field, choices in CHOICES.items()),
                 (self.chunk >= 0, f"chunk must be at least 0, got {self.chunk}"),
                 (not self.layer or self.name not in METHODS or self.spec.layers,
                  f"layer: for the CAM family only ({', '.join(m for m in METHODS if REGISTRY[m].layers)}), "
                  f"not {self.name}")]
        problems = [message for holds, message in rules if not holds]
        if problems:
            raise InputError("; ".join(problems))
        return self

    @property
    def spec(self) -> "MethodSpec":
        return REGISTRY[self.name]

    @property
    def count(self) -> int:
        """Gradients per image."""
        return getattr(self, self.spec.counted_by) if self.spec.counted_by else 1

    def parameters(self) -> dict:
        """What the manifest records: the name and the parameters this method uses (for the CAM family, the
        resolved layers and how each output became a map)."""
        entry = {"name": self.name, **{key: getattr(self, key) for key in self.spec.parameters}}
        if self.taps:
            entry["taps"] = [{**dataclasses.asdict(tap), "reshape": tap.reshape} for tap in self.taps]
        return entry

    def matches(self, recorded: "Method") -> bool:
        """True when ``recorded`` (an artifact's method) computes this one; a layer left empty means any."""
        mine, theirs = self.parameters(), recorded.parameters()
        if not self.layer:
            for entry in (mine, theirs):
                entry.pop("layer", None), entry.pop("taps", None)
        return mine == theirs

    def resolved(self, model: torch.nn.Module, image_shape: Sequence[int]) -> "Method":
        """This method with its layers found on ``model`` (the CAM family; others are returned as they are)."""
        if not self.spec.layers or self.taps:
            return self
        taps = resolve(model, image_shape, self.layer)
        return dataclasses.replace(self, layer=",".join(tap.path for tap in taps), taps=taps)

    def chunk_for(self, image_shape: Sequence[int]) -> int:
        return min(self.count, self.chunk or _default_chunk(as_image_shape(image_shape)))

    def images_per_call(self, image_shape: Sequence[int]) -> int:
        """0 (no limit) with one gradient per image; else how many images one graph call takes so that a step
        holds about the default chunk's samples (memory follows images x chunk: the runtime splits batches)."""
        image_shape = as_image_shape(image_shape)
        return max(1, _default_chunk(image_shape) // self.chunk_for(image_shape)) if self.count > 1 else 0

    @classmethod
    def of(cls, manifest: dict) -> "Method":
        """The method an artifact's manifest records (artifacts from before methods computed saliency)."""
        entry = dict(manifest.get("method", {"name": "saliency"}))
        taps = tuple(Tap(t["path"], t["layout"], tuple(t["grid"]), t["prefix"]) for t in entry.pop("taps", ()))
        return cls(**entry, taps=taps)

    @property
    def outputs(self) -> tuple[str, ...]:
        return BASE_OUTPUTS + self.spec.extra_outputs


def _default_chunk(image_shape: Sequence[int]) -> int:
    """Samples per step for [C, H, W] images: 16 at 3 x 224 x 224, scaled by the values per image."""
    values = image_shape[0] * image_shape[1] * image_shape[2]
    return max(1, round(SAMPLES_PER_STEP_AT_224 * 3 * PIXELS_AT_224 / values))


def ig_points(ig_method: str, steps: int) -> tuple[list[float], list[float]]:
    """(alphas, weights) of Captum's approximation methods (captum.attr._utils.approximation_methods)."""
    if ig_method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    weights = [1 / steps] * steps
    if ig_method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    alphas = {"riemann_trapezoid": torch.linspace(0, 1, steps), "riemann_left": torch.linspace(0, 1 - 1 / steps, steps),
              "riemann_middle": torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps),
              "riemann_right": torch.linspace(1 / steps, 1, steps)}[ig_method]
    return alphas.tolist(), weights


def smoothgrad_noise(seed: int, samples: int, image_shape: Sequence[int]) -> torch.Tensor:
    """The standard normal noise [samples, C, H, W] a seed stands for (scaled per image in the graph)."""
    return torch.randn(samples, *as_image_shape(image_shape), generator=torch.Generator().manual_seed(seed))


def baseline_image(baseline: str, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[1,C,1,1]: zeros, or black (pixel value 0) normalized as the model's inputs are."""
    if baseline == "zeros":
        return torch.zeros(1, len(mean), 1, 1)
    return ((0 - torch.tensor(mean)) / torch.tensor(std)).reshape(1, -1, 1, 1).float()


def _gradients_at(forward, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gradients of each image's target logit at its points [N, c, 3, H, W] -> [N, c, 3, H, W]."""
    n, c = points.shape[0], points.shape[1]
    _, _, grad = input_gradient(forward, points.reshape((-1,) + tuple(points.shape[2:])),
                                target.unsqueeze(1).expand(n, c).reshape(-1))
    return grad.reshape(points.shape)


def _chunks(count: int, chunk: int):
    return [(start, min(start + chunk, count)) for start in range(0, count, chunk)]


def _gradient(times_input: bool) -> Callable:
    """saliency (the gradient) or input_x_gradient (gradient x input)."""
    def build(method: Method, constants: "_Constants") -> Callable:
        def run(forward, image, target):
            logits, used, grad = input_gradient(forward, image, target)
            attribution = grad * image if times_input else grad
            return logits, used, saliency_from_grad(attribution), attribution
        return run
    return build


def _clean(forward, image, target):
    """Logits of the clean image and the class explained (a negative target: the top class)."""
    with torch.no_grad():
        logits = forward(image)
    return logits, torch.where(target < 0, logits.argmax(1), target)


def _sampling(combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """The smoothgrad family: ``combine(mean gradient, mean squared gradient)`` over the noisy copies."""
    def build(method: Method, constants: "_Constants") -> Callable:
        noise = smoothgrad_noise(method.seed, method.samples, constants.image_shape)  # a constant of the graph

        def run(forward, image, target):
            logits, used = _clean(forward, image, target)
            sigma = method.noise * (image.amax((1, 2, 3)) - image.amin((1, 2, 3)))
            total = squares = torch.zeros_like(image)
            for start, stop in _chunks(method.samples, constants.chunk):
                points = image.unsqueeze(1) + sigma.reshape(-1, 1, 1, 1, 1) * noise[start:stop].to(image.dtype).unsqueeze(0)
                grads = _gradients_at(forward, points, used)
                total, squares = total + grads.sum(1), squares + (grads * grads).sum(1)
            attribution = combine(total / method.samples, squares / method.samples)
            return logits, used, saliency_from_grad(attribution), attribution
        return run
    return build


def _integrated(method: Method, constants: "_Constants") -> Callable:
    baseline = baseline_image(method.baseline, constants.mean, constants.std)
    alphas, weights = (torch.tensor(v).reshape(1, -1, 1, 1, 1).float() for v in ig_points(method.ig_method, method.steps))

    def run(forward, image, target):
        logits, used = _clean(forward, image, target)
        start_point = baseline.to(image.dtype)
        difference = image - start_point
        path_sum = torch.zeros_like(image)
        for start, stop in _chunks(method.steps, constants.chunk):
            alpha, weight = alphas[:, start:stop].to(image.dtype), weights[:, start:stop].to(image.dtype)
            grads = _gradients_at(forward, start_point.unsqueeze(1) + alpha * difference.unsqueeze(1), used)
            path_sum = path_sum + (grads * weight).sum(1)
        attribution = difference * path_sum
        with torch.no_grad():
            baseline_logits = forward(start_point.expand(1, *constants.image_shape))
        # expanded: the task's baseline scores may be one per image already (``tasks``)
        baselines = baseline_logits.expand(logits.shape[0], -1).gather(1, used.unsqueeze(1))
        gap = (logits.gather(1, used.unsqueeze(1)) - baselines).squeeze(1)
        delta = attribution.sum((1, 2, 3)) - gap
        return logits, used, saliency_from_grad(attribution), attribution, delta
    return run


def _layer_gradients(forward, image, target, count: int, guided: bool):
    """(logits, used target, maps, their gradients, the guided input gradient or None): one run of an
    instrumented forward (``layers.Instrument``); the backward stops at the layers, or for the guided input
    gradient, at the image."""
    with torch.enable_grad():
        x = image.detach().requires_grad_(True)
        outputs = forward(x)
        logits, maps = outputs[0], outputs[1:1 + count]
        used = torch.where(target < 0, logits.argmax(1), target)
        grads = torch.autograd.grad(logits.gather(1, used.unsqueeze(1)).sum(), maps)
        guided_grad = None
        if guided:
            (guided_grad,) = torch.autograd.grad(outputs[-1].gather(1, used.unsqueeze(1)).sum(), x)
    return logits.detach(), used, [a.detach() for a in maps], grads, guided_grad


def _spatial_sum(x: torch.Tensor) -> torch.Tensor:
    return x.sum((2, 3), keepdim=True)


def _weighted(channel_weights: Callable) -> Callable:
    """A CAM of per-channel weights: Σ_c w_c(A, G) A_c."""
    return lambda a, g: (channel_weights(a, g) * a).sum(1)


def _gradcam_pp_weights(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's Grad-CAM++ weights (its eq. 19, eps 1e-6, zero where the gradient is)."""
    g2 = g * g
    aij = g2 / (2 * g2 + _spatial_sum(a) * g2 * g + 1e-6)
    aij = torch.where(g != 0, aij, torch.zeros_like(aij))
    return _spatial_sum(torch.relu(g) * aij)


CAMS = {  # map (activations A [N,D,h,w], gradients G) -> cam [N,h,w], before the ReLU
    "gradcam": _weighted(lambda a, g: g.mean((2, 3), keepdim=True)),
    "hirescam": lambda a, g: (g * a).sum(1),
    "gradcam_pp": _weighted(_gradcam_pp_weights),
    "xgradcam": _weighted(lambda a, g: _spatial_sum(g * a / (_spatial_sum(a) + 1e-7))),
    "layercam": lambda a, g: (torch.relu(g) * a).sum(1),
}


def first_component_projection(a: torch.Tensor) -> torch.Tensor:
    """EigenCAM's map [N,h,w]: each image's activations [h*w, D], centred over positions, projected on their
    first right singular vector, signed so that the largest magnitude is positive (see the module's docstring)."""
    n, d, h, w = a.shape
    x = a.reshape(n, d, h * w).transpose(1, 2)
    x = x - x.mean(1, keepdim=True)
    by_position = h * w <= d  # the smaller Gram matrix: positions x positions, or channels x channels
    gram = x @ x.transpose(1, 2) if by_position else x.transpose(1, 2) @ x
    vector = _top_eigenvector(gram)
    if by_position:  # x v1 = s1 u1, and s1 = |x^T u1|
        projection = vector * (x.transpose(1, 2) @ vector.unsqueeze(2)).squeeze(2).norm(dim=1, keepdim=True)
    else:
        projection = (x @ vector.unsqueeze(2)).squeeze(2)
    flip = projection.amin(1, keepdim=True).abs() > projection.amax(1, keepdim=True).abs()
    return torch.where(flip, -projection, projection).reshape(n, h, w)


def _top_eigenvector(gram: torch.Tensor) -> torch.Tensor:
    """The unit eigenvector of the largest eigenvalue of each symmetric PSD [N,k,k] matrix (sign arbitrary):
    repeated squaring (each step scaled by its trace) turns the matrix into ~ s1 v1 v1^T, whose largest
    column is along v1; power steps with the matrix itself refine it. All zeros for a zero matrix."""
    tiny = torch.finfo(torch.float32).tiny
    power = gram
    for _ in range(EIGEN_SQUARINGS):
        power = power / _trace(power).clamp_min(tiny).reshape(-1, 1, 1)
        power = power @ power
    column = power.diagonal(dim1=1, dim2=2).argmax(1)
    vector = power.gather(2, column.reshape(-1, 1, 1).expand(-1, power.shape[1], 1)).squeeze(2)
    for _ in range(EIGEN_REFINEMENTS + 1):
        vector = vector / vector.norm(dim=1, keepdim=True).clamp_min(tiny)
        vector = (gram @ vector.unsqueeze(2)).squeeze(2) if _ < EIGEN_REFINEMENTS else vector
    return vector


def _trace(matrices: torch.Tensor) -> torch.Tensor:
    return matrices.diagonal(dim1=1, dim2=2).sum(1)


def _combined(cams: Sequence[torch.Tensor], image_shape: Sequence[int]) -> torch.Tensor:
    """pytorch-grad-cam's aggregation: each relu'd map normalized and upsampled to the input's size (bilinear,
    half-pixel centres), then their mean [N,H,W] (before the final normalization)."""
    upsampled = [torch.nn.functional.interpolate(normalize(cam).unsqueeze(1), size=tuple(image_shape[1:]),
                                                 mode="bilinear", align_corners=False) for cam in cams]
    return torch.relu(torch.stack(upsampled).mean(0)).squeeze(1)


def _cam_method(name: str) -> Callable:
    """A CAM-family method: the graph function over an instrumented forward."""
    def build(method: Method, constants: "_Constants") -> Callable:
        count = len(method.taps)

        def run(forward, image, target):
            if name == "eigencam":
                with torch.no_grad():
                    logits, *maps = forward(image)
                used = torch.where(target < 0, logits.argmax(1), target)
                cams = [torch.relu(first_component_projection(a)) for a in maps]
            else:
                logits, used, maps, grads, _ = _layer_gradients(forward, image, target, count, guided=False)
                cams = [torch.relu(CAMS[name](a, g)) for a, g in zip(maps, grads)]
            attribution = _combined(cams, constants.image_shape)
            channels = constants.image_shape[0]
            return (logits, used, normalize(attribution), attribution.unsqueeze(1).expand(-1, channels, -1, -1),
                    cams[0])
        return run
    return build


def _guided_backprop(method: Method, constants: "_Constants") -> Callable:
    def run(forward, image, target):
        logits, used, grad = input_gradient(forward, image, target)
        return logits, used, saliency_from_grad(grad), grad
    return run


def _guided_gradcam(method: Method, constants: "_Constants") -> Callable:
    def run(forward, image, target):
        logits, used, maps, grads, guided = _layer_gradients(forward, image, target, len(method.taps), guided=True)
        cams = [torch.relu(CAMS["gradcam"](a, g)) for a, g in zip(maps, grads)]
        attribution = guided * normalize(_combined(cams, constants.image_shape)).unsqueeze(1)
        return logits, used, saliency_from_grad(attribution), attribution, cams[0]
    return run


@dataclasses.dataclass(frozen=True)
class _Constants:
    """What a method's function is built for: [C, H, W], the model's normalization, samples per step."""
    image_shape: tuple[int, int, int]
    mean: Sequence[float]
    std: Sequence[float]
    chunk: int


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method: everything else (``METHODS``, the manifest entry, the CLI options, the README table) reads it."""
    name: str
    attribution: str                   # what its ``grad`` output is, for the docs
    build: Callable[[Method, _Constants], Callable]  # -> fn(forward, image, target) -> outputs
    parameters: tuple[str, ...] = ()   # the Method fields it uses (and the manifest records)
    counted_by: Optional[str] = None   # the field holding its gradients per image (default: one)
    extra_outputs: tuple[str, ...] = ()  # outputs after BASE_OUTPUTS
    layers: bool = False               # reads layers (the CAM family): ``Method.layer``, ``Method.taps``
    guided: bool = False               # nn.ReLU modules pass back only positive gradients


NOISE = ("samples", "noise", "seed")
REGISTRY = {spec.name: spec for spec in (
    MethodSpec("saliency", "∂F_t/∂x", _gradient(times_input=False)),
    MethodSpec("input_x_gradient", "x · ∂F_t/∂x", _gradient(times_input=True)),
    MethodSpec("smoothgrad", "mean of ∂F_t/∂x over noisy copies", _sampling(lambda mean, square: mean),
               NOISE, counted_by="samples"),
    MethodSpec("smoothgrad_sq", "mean of (∂F_t/∂x)²", _sampling(lambda mean, square: square), NOISE,
               counted_by="samples"),
    MethodSpec("vargrad", "variance of ∂F_t/∂x", _sampling(lambda mean, square: square - mean * mean), NOISE,
               counted_by="samples"),
    MethodSpec("integrated_gradients", "(x − x₀) · Σ wₖ ∂F_t/∂x(x₀ + αₖ(x − x₀))", _integrated,
               ("steps", "ig_method", "baseline"), counted_by="steps", extra_outputs=("delta",)),
    *(MethodSpec(name, f"the upsampled {title} map, the same in every channel", _cam_method(name), ("layer",),
                 extra_outputs=("cam",), layers=True)
      for name, title in (("gradcam", "Grad-CAM"), ("hirescam", "HiResCAM"), ("gradcam_pp", "Grad-CAM++"),
                          ("xgradcam", "XGrad-CAM"), ("layercam", "LayerCAM"), ("eigencam", "EigenCAM"))),
    MethodSpec("guided_backprop", "∂F_t/∂x, ReLUs passing back only positive gradients", _guided_backprop,
               guided=True),
    MethodSpec("guided_gradcam", "guided backprop · the Grad-CAM saliency", _guided_gradcam, ("layer",),
               extra_outputs=("cam",), layers=True, guided=True),
)}
METHODS = tuple(REGISTRY)


def method_outputs(method: Method, image_shape: Sequence[int], mean: Optional[Sequence[float]] = None,
                   std: Optional[Sequence[float]] = None, task: Task = Task()) -> Callable:
    """``fn(model, image, target, *task inputs)`` computing ``method``'s outputs for [N, *image_shape] images
    with ``model`` in PyTorch (see the module's docstring) for ``task`` (``tasks``); ``mean``/``std``: the
    model's normalization (default 0 and 1 per channel). A CAM method whose layers are not resolved yet
    resolves them on the first model it is given."""
    method = method.check()
    instrumented = method.spec.layers or method.spec.guided
    if not instrumented:
        return lambda model, *inputs: graph_function(method, image_shape, mean, std, task)(model, *inputs)
    built = {}

    def run(model, *inputs):
        if "fn" not in built:
            built["method"] = method.resolved(model, image_shape)
            built["fn"] = graph_function(built["method"], image_shape, mean, std, task)
        instrument = Instrument(model, built["method"].taps, method.spec.guided)
        with instrument.installed():
            return built["fn"](lambda x: instrument.run(model, x), *inputs)
    return run


def graph_function(method: Method, image_shape: Sequence[int], mean: Optional[Sequence[float]] = None,
                   std: Optional[Sequence[float]] = None, task: Task = Task()) -> Callable:
    """``fn(forward, image, target, *task inputs)``: what the graph traces, ``forward`` being the model as
    ``instrumented`` makes it for ``method`` (itself for the gradient family), explaining ``task``'s score."""
    image_shape = as_image_shape(image_shape)
    channels = image_shape[0]
    constants = _Constants(image_shape, mean or (0.0,) * channels, std or (1.0,) * channels,
                           method.chunk_for(image_shape))
    logit_positions = (0, -1) if method.spec.guided and method.taps else (0,)  # see ``Instrument.run``
    return task.spec.wrap(method.spec.build(method, constants), task, logit_positions)


def instrumented(model: torch.nn.Module, method: Method) -> Instrument:
    """The model as ``method``'s graph function reads it (``layers.Instrument``; method resolved)."""
    return Instrument(model, method.taps, method.spec.guided)

