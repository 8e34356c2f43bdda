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
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from .io import BASE_OUTPUTS, as_image_shape
from .saliency import input_gradient, saliency_from_grad

IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")
BASELINES = ("zeros", "black")
CHOICES = {"ig_method": IG_METHODS, "baseline": BASELINES}  # the parameters that take one of a few names
SAMPLES_PER_STEP_AT_224 = 16  # the default chunk: images in one forward+backward step, scaled by pixel count
PIXELS_AT_224 = 224 * 224


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

    def check(self) -> "Method":
        """This method, or an InputError naming each bad field (``name``, ``samples``, ...)."""
        rules = [(self.name in METHODS, f"unknown method {self.name!r}; choose from {', '.join(METHODS)}"),
                 (self.samples >= 1, f"samples must be at least 1, got {self.samples}"),
                 (self.noise >= 0, f"noise must be at least 0, got {self.noise}"),
                 (self.steps >= 2, f"steps must be at least 2, got {self.steps}"),
                 *((getattr(self, field) in choices, f"unknown {field} {getattr(self, field)!r}; choose from "
                                                     f"{', '.join(choices)}") for field, choices in CHOICES.items()),
                 (self.chunk >= 0, f"chunk must be at least 0, got {self.chunk}")]
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
        """What the manifest records: the name and the parameters this method uses."""
        return {"name": self.name, **{key: getattr(self, key) for key in self.spec.parameters}}

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
        return cls(**manifest.get("method", {"name": "saliency"}))

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
        gap = logits.gather(1, used.unsqueeze(1)).squeeze(1) - baseline_logits[0].gather(0, used)
        delta = attribution.sum((1, 2, 3)) - gap
        return logits, used, saliency_from_grad(attribution), attribution, delta
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
)}
METHODS = tuple(REGISTRY)


def method_outputs(method: Method, image_shape: Sequence[int], mean: Optional[Sequence[float]] = None,
                   std: Optional[Sequence[float]] = None) -> Callable:
    """``fn(forward, image, target)`` computing ``method``'s outputs for [N, *image_shape] images (see the
    module's docstring); ``mean``/``std``: the model's normalization (default 0 and 1 per channel)."""
    method = method.check()
    image_shape = as_image_shape(image_shape)
    channels = image_shape[0]
    constants = _Constants(image_shape, mean or (0.0,) * channels, std or (1.0,) * channels,
                           method.chunk_for(image_shape))
    return method.spec.build(method, constants)

