"""The saliency reduction as plain torch ops: the definition the fused op and every graph implement."""
from __future__ import annotations

import torch

EPS = 1e-12


def normalize_saliency(channel_max: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Min-max normalize each [H, W] map of a [N, H, W] batch to [0, 1]; a constant map becomes zeros."""
    low = channel_max.amin((-2, -1), keepdim=True)
    span = channel_max.amax((-2, -1), keepdim=True) - low
    return torch.where(span > eps, (channel_max - low) / span.clamp_min(eps), torch.zeros_like(channel_max))


def saliency_from_grad(grad: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """max over channels of |grad|, normalized per image: [N, C, H, W] -> float32 [N, H, W]."""
    return normalize_saliency(grad.abs().amax(1).float(), eps)
