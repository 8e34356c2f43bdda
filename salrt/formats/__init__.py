"""The artifact formats: one module per format holds its writer and its loader; this registry holds the
facts everything else derives from (file names, backend names, CLI choices, ``auto``'s order).

A writer takes ``(graph, path, description)`` and returns details for the file's manifest entry; a
loader takes ``(path, device)`` and returns a ``Run``: ``(image, target) -> (logits, used_target,
saliency, grad)``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from ..errors import InputError
from . import aoti, onnx, torchscript

Run = Callable[[torch.Tensor, torch.Tensor], tuple]


@dataclasses.dataclass(frozen=True)
class Format:
    name: str      # what `salrt export --format` takes
    file: str      # its file in an artifact directory
    backend: str   # what `--backend` calls the runtime that runs it
    write: Callable[[torch.fx.GraphModule, Path, dict], dict]
    load: Callable[[Path, torch.device], Run]


FORMATS = {f.name: f for f in (
    Format("torchscript", "model.pt", "torchscript", torchscript.write, torchscript.load),
    Format("onnx", "model.onnx", "onnxruntime", onnx.write, onnx.load),
    Format("aoti", "model.pt2", "aoti", aoti.write, aoti.load),
)}
BY_BACKEND = {f.backend: f for f in FORMATS.values()}
AUTO, EAGER = "auto", "eager"  # eager: the model in PyTorch with the fused op, no artifact file needed
BACKENDS = (AUTO, EAGER, *BY_BACKEND)
MEASURED_BACKENDS = (EAGER, *BY_BACKEND)  # what `salrt bench` times by default

# What "auto" takes, fastest first, per device (measured in benchmarks/bench_e2e.py). On the CPU, onnxruntime
# leads at N=1 and aoti at N=8: with both present, batches of LARGE_BATCH or more go to aoti.
AUTO_ORDER = {"cpu": ("onnxruntime", "aoti", "torchscript"), "cuda": ("torchscript", "onnxruntime")}
LARGE_BATCH_BACKEND = {"cpu": "aoti"}
LARGE_BATCH = 4


def parse_formats(formats) -> list[str]:
    """"onnx,aoti" or ["onnx", "aoti"] -> the format names, checked, without repeats."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise InputError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return backend


def auto_backends(device: torch.device, formats) -> tuple[str, str]:
    """(backend for small batches, backend for batches of LARGE_BATCH or more) among an artifact's formats."""
    present = [b for b in AUTO_ORDER[device.type] if BY_BACKEND[b].name in formats]
    small = present[0] if present else EAGER
    large = LARGE_BATCH_BACKEND.get(device.type)
    return small, large if large in present else small
