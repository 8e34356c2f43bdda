"""The saliency reduction: ``abs_channel_max_normalize`` and its pure-torch reference.

The fast path is the C++/CUDA operator ``torch.ops.salrt.abs_channel_max_normalize`` (and ``_u8``) from
``salrt._C``. When the extension is not built, a single warning is issued and the same computation runs
as a chain of torch ops, so the package keeps working (slower).
"""
from __future__ import annotations

import warnings

import torch

__all__ = ["HAS_EXTENSION", "MODES", "abs_channel_max_normalize", "reference_abs_channel_max_normalize"]

MODES = ("minmax", "max", "none")
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLOAT_MIN = torch.finfo(torch.float32).tiny  # ranges below this (subnormal) count as degenerate

try:
    from . import _C  # noqa: F401  (loading the library registers torch.ops.salrt.*)

    HAS_EXTENSION = True
except ImportError as _err:  # pragma: no cover - depends on the build
    HAS_EXTENSION = False
    warnings.warn(
        f"salrt: the C++ extension salrt._C is not available ({_err}); abs_channel_max_normalize falls back "
        "to a slower pure-torch implementation. Build it with: pip install --no-build-isolation -e .",
        RuntimeWarning,
        stacklevel=2,
    )

if HAS_EXTENSION:

    @torch.library.register_fake("salrt::abs_channel_max_normalize")
    def _fake_float(grad: torch.Tensor, mode: str = "minmax", eps: float = 1e-12) -> torch.Tensor:
        n, _, h, w = grad.shape  # SymInts under dynamic shapes: keeps the sizes symbolic
        return grad.new_empty((n, h, w), dtype=torch.float32)

    @torch.library.register_fake("salrt::abs_channel_max_normalize_u8")
    def _fake_u8(grad: torch.Tensor, mode: str = "minmax", eps: float = 1e-12) -> torch.Tensor:
        n, _, h, w = grad.shape
        return grad.new_empty((n, h, w), dtype=torch.uint8)


def _check(grad: torch.Tensor, mode: str, out_dtype: torch.dtype) -> None:
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"abs_channel_max_normalize expects a torch.Tensor, got {type(grad).__name__}")
    if grad.dim() != 4 or grad.dtype not in _INPUT_DTYPES:
        raise TypeError(
            "abs_channel_max_normalize expects a 4-D [N,C,H,W] float32/float16/bfloat16 tensor, "
            f"got a {grad.dim()}-D {grad.dtype} tensor of shape {tuple(grad.shape)}"
        )
    if grad.shape[1] < 1:
        raise ValueError(f"abs_channel_max_normalize expects at least one channel, got shape {tuple(grad.shape)}")
    if mode not in MODES:
        raise ValueError(f"abs_channel_max_normalize: unknown mode {mode!r}, expected one of {MODES}")
    if out_dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"abs_channel_max_normalize: out_dtype must be torch.float32 or torch.uint8, got {out_dtype}")
    if out_dtype == torch.uint8 and mode == "none":
        raise ValueError("abs_channel_max_normalize: mode 'none' is not allowed with out_dtype=torch.uint8")


def abs_channel_max_normalize(
    grad: torch.Tensor, mode: str = "minmax", eps: float = 1e-12, out_dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Saliency map of an input gradient: the max over channels of ``|grad|``, normalised per image.

    Args:
        grad: ``[N, C, H, W]`` float32/float16/bfloat16 tensor, any strides (channels_last and views
            are read in place), on CPU or CUDA.
        mode: ``"minmax"``: ``(m - min) / (max - min)`` per image; ``"max"``: ``m / max``;
            ``"none"``: ``m`` itself (float output only).
        eps: an image whose denominator (``max - min``, or ``max``) is ``<= eps * max`` counts as
            constant and maps to all zeros (relative, so the map does not depend on the gradient's scale).
        out_dtype: ``torch.float32``, or ``torch.uint8`` for ``round(255 * map)`` (half to even).

    Returns:
        A contiguous ``[N, H, W]`` tensor of ``out_dtype`` on ``grad``'s device. Not differentiable: the
        output never requires grad.

    Non-finite gradients are reported, not hidden: a NaN or Inf anywhere in an image makes that image's
    whole normalised map NaN (with ``mode="none"``, the map keeps the NaN/Inf pixels as they are). In
    uint8 output NaN becomes 0. Results are identical on CPU and CUDA.
    """
    _check(grad, mode, out_dtype)
    if not HAS_EXTENSION:
        return reference_abs_channel_max_normalize(grad.detach(), mode, eps, out_dtype)
    if out_dtype == torch.uint8:
        return torch.ops.salrt.abs_channel_max_normalize_u8(grad, mode, eps)
    return torch.ops.salrt.abs_channel_max_normalize(grad, mode, eps)


def reference_abs_channel_max_normalize(
    grad: torch.Tensor, mode: str = "minmax", eps: float = 1e-12, out_dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The same computation as a chain of torch ops, in ``grad``'s precision (at least float32).

    Used as the fallback without the extension, as the baseline in benchmarks and, fed a float64
    input, as the reference in tests.
    """
    if grad.dtype in (torch.float16, torch.bfloat16):
        grad = grad.float()
    m = grad.abs().amax(dim=1)
    if mode == "none":
        return m.to(torch.float32)
    hi = m.amax(dim=(1, 2), keepdim=True)
    lo = m.amin(dim=(1, 2), keepdim=True) if mode == "minmax" else torch.zeros_like(hi)
    rng = hi - lo
    degenerate = (rng <= eps * hi) | (rng < _FLOAT_MIN)
    out = torch.where(degenerate, torch.zeros_like(m), (m - lo) / rng)
    out = torch.where(hi.isfinite(), out, float("nan"))
    if out_dtype == torch.uint8:
        # NaN -> 0, like the kernels; torch.round rounds half to even.
        return torch.round(torch.nan_to_num(out * 255, nan=0.0).clamp(0, 255)).to(torch.uint8)
    return out.to(torch.float32)
