"""The fused saliency reduction ``abs_channel_max_normalize`` (C++/CUDA, ``csrc/``).

``torch.ops.salrt.abs_channel_max_normalize`` (and ``_u8``) come from ``salrt._C``: one ``TORCH_LIBRARY``
schema, a CPU and a CUDA kernel, fake kernels in ``fake.py``. Without the extension the same rule runs as
torch ops (``salrt.graph.saliency.normalize``, the definition the exported graphs trace).
"""
from __future__ import annotations

import torch

from ..graph.saliency import EPS, MODES, channel_max, normalize
from ._library import HAS_EXTENSION
from .checks import OUT_DTYPES, input_problem

if HAS_EXTENSION:
    from . import fake  # noqa: F401  (registers the fake kernels)

__all__ = ["HAS_EXTENSION", "MODES", "abs_channel_max_normalize"]


def _check(grad: torch.Tensor, mode: str, out_dtype: torch.dtype) -> None:
    problem = input_problem(grad)
    if problem is not None:
        raise problem
    if mode not in MODES:
        raise ValueError(f"abs_channel_max_normalize: unknown mode {mode!r}, expected one of {MODES}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"abs_channel_max_normalize: out_dtype must be torch.float32 or torch.uint8, got {out_dtype}")
    if out_dtype == torch.uint8 and mode == "none":
        raise ValueError("abs_channel_max_normalize: mode 'none' is not allowed with out_dtype=torch.uint8")


def abs_channel_max_normalize(grad: torch.Tensor, mode: str = "minmax", eps: float = EPS,
                              out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Saliency map of an input gradient: the max over channels of ``|grad|``, normalised per image.

    Args:
        grad: ``[N, C, H, W]`` float32/float16/bfloat16 tensor, any strides (channels_last and views
            are read in place), on CPU or CUDA.
        mode: ``"minmax"``: ``(m - min) / (max - min)`` per image; ``"max"``: ``m / max``;
            ``"none"``: ``m`` itself (float output only).
        eps: an image whose denominator (``max - min``, or ``max``) is ``<= eps * max`` or below FLT_MIN
            counts as constant and maps to all zeros (relative, so the map does not depend on the
            gradient's scale).
        out_dtype: ``torch.float32``, or ``torch.uint8`` for ``round(255 * map)`` (half to even).

    Returns:
        A contiguous ``[N, H, W]`` tensor of ``out_dtype`` on ``grad``'s device. Not differentiable: the
        output never requires grad.

    Raises:
        TypeError: ``grad`` is not a 4-D float32/float16/bfloat16 tensor.
        ValueError: no channels, an unknown mode or out_dtype, or mode "none" with uint8 output.

    Non-finite gradients are reported, not hidden: a NaN or Inf anywhere in an image makes that image's
    whole normalised map NaN (with ``mode="none"``, the map keeps the NaN/Inf pixels as they are). In
    uint8 output NaN becomes 0. Results are identical on CPU and CUDA.
    """
    _check(grad, mode, out_dtype)
    if not HAS_EXTENSION:
        return _torch_ops(grad.detach(), mode, eps, out_dtype)
    if out_dtype == torch.uint8:
        return torch.ops.salrt.abs_channel_max_normalize_u8(grad, mode, eps)
    return torch.ops.salrt.abs_channel_max_normalize(grad, mode, eps)


def _torch_ops(grad: torch.Tensor, mode: str, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """The fallback: the graphs' own definition, then the kernels' uint8 rounding (NaN -> 0)."""
    out = normalize(channel_max(grad), mode, eps).contiguous()
    if out_dtype == torch.uint8:
        return torch.round(torch.nan_to_num(out * 255, nan=0.0).clamp(0, 255)).to(torch.uint8)
    return out
