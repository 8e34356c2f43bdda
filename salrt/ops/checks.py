"""What the salrt ops accept, stated once for the Python wrapper and the fake kernels."""
from __future__ import annotations

from typing import Optional

import torch

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OUT_DTYPES = (torch.float32, torch.uint8)


def input_problem(grad) -> Optional[Exception]:
    """The error that ``grad`` deserves (TypeError or ValueError, not raised), or None when it is fine."""
    if not isinstance(grad, torch.Tensor):
        return TypeError(f"abs_channel_max_normalize expects a torch.Tensor, got {type(grad).__name__}")
    if grad.dim() != 4 or grad.dtype not in INPUT_DTYPES:
        return TypeError("abs_channel_max_normalize expects a 4-D [N,C,H,W] float32/float16/bfloat16 tensor, "
                         f"got a {grad.dim()}-D {grad.dtype} tensor of shape {tuple(grad.shape)}")
    if grad.shape[1] < 1:
        return ValueError(f"abs_channel_max_normalize expects at least one channel, got shape {tuple(grad.shape)}")
    return None
