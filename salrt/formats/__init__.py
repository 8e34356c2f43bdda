"""The artifact formats: one module per format holds its writer and its loader; this registry holds the
facts everything else derives from (file names, backend names, CLI choices, ``auto``'s order).

A writer takes ``(graph, path, description)`` (plus the format's own options, if it has any) and returns
details for the file's manifest entry; a loader takes ``(path, device)`` and returns a ``Run``:
``(image, target) -> (logits, used_target, saliency, grad)``. A deployment target (``triton``) has a writer
only: salrt does not run it, so it has no backend.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import InputError
from . import aoti, onnx, torchscript, triton

Run = Callable[[torch.Tensor, torch.Tensor], tuple]


@dataclasses.dataclass(frozen=True)
class Format:
    name: str      # what `salrt export --format` takes
    file: str      # its file (a directory, for a deployment target) in an artifact directory
    backend: Optional[str]  # what `--backend` calls the runtime that runs it; None: salrt does not run it
    write: Callable[..., dict]
    load: Optional[Callable[[Path, torch.device], Run]]
    compiles: bool = False  # its export runs a C++ compiler (minutes on a large model)
    reuses: Optional[str] = None  # the format whose file it ships: written after it, given that file if written


FORMATS = {f.name: f for f in (
    Format("torchscript", "model.pt", "torchscript", torchscript.write, torchscript.load),
    Format("onnx", "model.onnx", "onnxruntime", onnx.write, onnx.load),
    Format("aoti", "model.pt2", "aoti", aoti.write, aoti.load, compiles=True),
    Format("aoti_n1", "model_n1.pt2", "aoti_n1", aoti.write_single_image, aoti.load_single_image, compiles=True),
    # a deployment target: a model repository for Triton's onnxruntime backend, serving model.onnx
    Format("triton", "triton", None, triton.write_repository, None, reuses="onnx"),
)}
BY_BACKEND = {f.backend: f for f in FORMATS.values() if f.backend}
AUTO, EAGER = "auto", "eager"  # eager: the model in PyTorch with the fused op, no artifact file needed
BACKENDS = (AUTO, EAGER, *BY_BACKEND)
MEASURED_BACKENDS = (EAGER, *BY_BACKEND)  # what `salrt bench` times by default
QUICK_BACKENDS = (EAGER, *(f.backend for f in BY_BACKEND.values() if not f.compiles))  # what --quick times

# What "auto" runs, per device and batch size (measured in benchmarks/bench_e2e.py): from each row's batch
# size up to the next row's, the first backend in its list whose format the artifact holds. On the CPU the
# frozen single-image package leads at N=1 and, image by image, at N=8 too; without it onnxruntime leads at
# N=1 and aoti at N=8.
AUTO_ROUTES = {
    "cpu": ((1, ("aoti_n1", "onnxruntime", "aoti", "torchscript")),
            (4, ("aoti_n1", "aoti", "onnxruntime", "torchscript"))),
    "cuda": ((1, ("torchscript", "onnxruntime")),),
}


def parse_formats(formats) -> list[str]:
    """"onnx,aoti" or ["onnx", "aoti"] -> the format names, checked, without repeats."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise InputError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def writing_order(names: list[str]) -> list[str]:
    """``names`` as an export writes them: a format that reuses another's file after the others."""
    return sorted(names, key=lambda name: FORMATS[name].reuses is not None)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return backend


def auto_routes(device: torch.device, formats) -> list[tuple[int, str]]:
    """[(smallest batch size, backend), ...] that "auto" takes among an artifact's formats (eager if none)."""
    routes = []
    for smallest, preference in AUTO_ROUTES[device.type]:
        present = [backend for backend in preference if BY_BACKEND[backend].name in formats]
        routes.append((smallest, present[0] if present else EAGER))
    return routes
