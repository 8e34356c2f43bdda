"""What a saliency graph computes, as plain torch ops: the input gradient and the saliency map.

``normalize`` is the one torch definition of the normalization rule. Every exported graph traces it,
and the ``salrt.ops`` fallback runs it; the C++/CUDA kernels implement the same rule in
``csrc/normalize.h`` (and tests hold both to an independent loop written in the test).
"""
from __future__ import annotations

import torch

EPS = 1e-12  # the default relative range below which a map counts as constant (the op schema's default too)
MODES = ("minmax", "max", "none")
_FLOAT_MIN = torch.finfo(torch.float32).tiny  # a smaller (subnormal) range has no finite reciprocal


def input_gradient(forward, image: torch.Tensor, target: torch.Tensor):
    """(logits, used_target, grad): the gradient of each image's target logit w.r.t. that image.

    A negative target selects the argmax class. Summing the selected logits gives every image the gradient
    of its own logit only, in one backward pass.
    """
    with torch.enable_grad():
        x = image.detach().requires_grad_(True)
        logits = forward(x)
        used_target = torch.where(target < 0, logits.argmax(1), target)
        score = logits.gather(1, used_target.unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(score, x)
    return logits.detach(), used_target, grad


def channel_max(grad: torch.Tensor) -> torch.Tensor:
    """max over channels of |grad|: [N, C, H, W] -> float32 [N, H, W] (exact in every input dtype)."""
    return grad.abs().amax(1).float()


def normalize(maps: torch.Tensor, mode: str = "minmax", eps: float = EPS) -> torch.Tensor:
    """Normalize each [H, W] map of a float32 [N, H, W] batch.

    ``minmax``: ``(m - min) / (max - min)``; ``max``: ``m / max``; ``none``: ``m`` unchanged. A map whose
    range is at most ``eps`` times its maximum, or below FLT_MIN, counts as constant and becomes zeros
    (relative, because gradient scales vary by orders of magnitude: 1e-16 in a randomly initialised
    EfficientNet-B0). A non-finite maximum (NaN or Inf anywhere in the image) makes the whole map NaN.
    Like the kernels, the range test runs in float64 and pixels are scaled by the range's float32
    reciprocal, so both give the same bits.
    """
    if mode == "none":
        return maps
    high = maps.amax((-2, -1), keepdim=True)
    low = maps.amin((-2, -1), keepdim=True) if mode == "minmax" else torch.zeros_like(high)
    span = high - low
    constant = (span.double() <= eps * high.double()) | (span < _FLOAT_MIN)
    scale = torch.where(constant, 0.0, 1 / torch.where(constant, 1.0, span))
    # + (high - high): + 0 for a finite max, NaN for Inf or NaN (a NaN literal would not script)
    return (maps - low) * scale + (high - high)


def saliency_from_grad(grad: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The graph's ``saliency`` output: the channel max of |grad|, min-max normalized per image."""
    return normalize(channel_max(grad), "minmax", eps)

