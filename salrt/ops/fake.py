"""Fake (meta) kernels of the salrt ops: output shapes for torch.compile, torch.export and FakeTensor
tracing, with the same input checks as the C++ kernels (``csrc/common.h``)."""
from __future__ import annotations

import torch

from ..graph.saliency import EPS, MODES
from .checks import input_problem


def _check_inputs(grad: torch.Tensor, mode: str, uint8: bool) -> None:
    torch._check(input_problem(grad) is None, lambda: str(input_problem(grad)))
    torch._check(mode in MODES, lambda: f"unknown mode {mode!r}, expected one of {MODES}")
    torch._check(not (uint8 and mode == "none"), lambda: "mode 'none' is not allowed for uint8 output")


def _empty_map(grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    n, _, h, w = grad.shape  # SymInts under dynamic shapes: keeps the sizes symbolic
    return grad.new_empty((n, h, w), dtype=dtype)


@torch.library.register_fake("salrt::abs_channel_max_normalize")
def _abs_channel_max_normalize(grad: torch.Tensor, mode: str = "minmax", eps: float = EPS) -> torch.Tensor:
    _check_inputs(grad, mode, uint8=False)
    return _empty_map(grad, torch.float32)


@torch.library.register_fake("salrt::abs_channel_max_normalize_u8")
def _abs_channel_max_normalize_u8(grad: torch.Tensor, mode: str = "minmax", eps: float = EPS) -> torch.Tensor:
    _check_inputs(grad, mode, uint8=True)
    return _empty_map(grad, torch.uint8)
