"""The saliency reduction as plain torch ops: the definition the fused op and every graph implement."""
from __future__ import annotations

import torch

EPS = 1e-12


def normalize_saliency(channel_max: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Min-max normalize each [H, W] map of a [N, H, W] batch to [0, 1].

    The rule of ``salrt.ops.abs_channel_max_normalize``: a map whose range is at most ``eps`` times its
    maximum counts as constant and becomes zeros (relative, because gradient scales vary by orders of
    magnitude: 1e-16 in a randomly initialised EfficientNet-B0); a non-finite maximum makes the map NaN.
    """
    low = channel_max.amin((-2, -1), keepdim=True)
    high = channel_max.amax((-2, -1), keepdim=True)
    span = high - low
    normalized = torch.where(span > eps * high, (channel_max - low) / torch.where(span > 0, span, 1), 0.0)
    return normalized + (high - high)  # + 0 for a finite max, NaN for Inf or NaN (and no NaN literal,
    # which TorchScript cannot compile)


def saliency_from_grad(grad: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """max over channels of |grad|, normalized per image: [N, C, H, W] -> float32 [N, H, W]."""
    return normalize_saliency(grad.abs().amax(1).float(), eps)
