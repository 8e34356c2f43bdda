"""The artifact formats: one module per format holds its writer and its loader; this registry holds the
facts everything else derives from (file names, backend names, CLI choices, ``auto``'s order).

A writer takes ``(graph, path, description)`` (plus the format's own options, if it has any: what its
``check_options`` returned) and returns details for the file's manifest entry; a loader takes
``(path, device, spin_wait)`` and returns a ``Run``: the graph's inputs in the manifest's order (image, target, a
task's) -> its outputs in the manifest's order (logits, used_target, saliency, grad, ...).
``spin_wait`` False: other CPU work shares the cores (``salrt.load``'s argument), so a runtime whose threads
busy-wait between operators should let them sleep instead; libtorch's OpenMP threads already sleep after a
brief spin and take no per-model setting, so only onnxruntime acts on it.
A deployment target (``triton``) has a writer only: salrt does not run it, so it has no backend.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import InputError
from . import aoti, onnx, torchscript, triton

Run = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class Format:
    name: str      # what `salrt export --format` takes
    file: str      # its file (a directory, for a deployment target) in an artifact directory
    backend: Optional[str]  # what `--backend` calls the runtime that runs it; None: salrt does not run it
    write: Callable[..., dict]
    load: Optional[Callable[[Path, torch.device, bool], Run]]
    compiles: bool = False  # its export runs a C++ compiler (minutes on a large model)
    for_one_device: bool = False  # compiled for the export's device (its writer takes ``device``); else portable
    libtorch: bool = False  # libtorch alone loads it: the C++ runtime (cpp/) runs it
    reuses: Optional[str] = None  # the format whose file it ships: written after it, given that file if written
    # the format's own options (``salrt.export(..., NAME={...})``, None: not given) -> the writer's keyword
    # arguments, defaults filled in; raises InputError for a bad one (called before any export work)
    check_options: Optional[Callable[[Optional[dict]], dict]] = None


FORMATS = {f.name: f for f in (
    Format("torchscript", "model.pt", "torchscript", torchscript.write, torchscript.load, libtorch=True),
    Format("onnx", "model.onnx", "onnxruntime", onnx.write, onnx.load),
    Format("aoti", "model.pt2", "aoti", aoti.write, aoti.load, compiles=True, for_one_device=True, libtorch=True),
    Format("aoti_n1", "model_n1.pt2", "aoti_n1", aoti.write_single_image, aoti.load_single_image, compiles=True,
           for_one_device=True, libtorch=True),
    # a deployment target: a model repository for Triton's onnxruntime backend, serving model.onnx
    Format("triton", "triton", None, triton.write_onnx_repository, None, reuses="onnx",
           check_options=triton.repository_options),
)}
BY_BACKEND = {f.backend: f for f in FORMATS.values() if f.backend}
AUTO, EAGER = "auto", "eager"  # eager: the model in PyTorch with the fused op, no artifact file needed
BACKENDS = (AUTO, EAGER, *BY_BACKEND)
MEASURED_BACKENDS = (EAGER, *BY_BACKEND)  # what `salrt bench` times by default
CPP_BACKENDS = tuple(sorted(f.backend for f in BY_BACKEND.values() if f.libtorch))  # cpp/generate_header.py
# what `salrt.load(cuda_graphs=True)` can capture: the backends that keep to the device (onnxruntime's copies
# through the host) and never synchronize with it
CUDA_GRAPH_BACKENDS = (EAGER, "torchscript", "aoti", "aoti_n1")
QUICK_BACKENDS = (EAGER, *(f.backend for f in BY_BACKEND.values() if not f.compiles))  # what --quick times

# What "auto" runs, per device and batch size: from each row's batch size up to the next row's, the first
# backend in its list whose format the artifact holds for that device. On the CPU (measured in
# benchmarks/bench_e2e.py) the frozen single-image package leads at N=1 and, image by image, at N=8 too;
# without it onnxruntime leads at N=1 and aoti at N=8. On CUDA nothing is measured yet
# (benchmarks/gpu_check.sh times every backend): a package compiled for CUDA exists only where the user asked
# for one, so it leads.
AUTO_ROUTES = {
    "cpu": ((1, ("aoti_n1", "onnxruntime", "aoti", "torchscript")),
            (4, ("aoti_n1", "aoti", "onnxruntime", "torchscript"))),
    "cuda": ((1, ("aoti_n1", "aoti", "torchscript", "onnxruntime")),
             (2, ("aoti", "torchscript", "aoti_n1", "onnxruntime"))),
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


def runs_on(entry: dict, device: torch.device) -> bool:
    """Whether an artifact file (its manifest entry) runs on ``device``: a compiled package only on the
    device type it was compiled for, the other formats anywhere."""
    return entry.get("device", device.type) == device.type


def auto_routes(device: torch.device, files: dict) -> list[tuple[int, str]]:
    """[(smallest batch size, backend), ...] that "auto" takes among an artifact's files (its manifest's
    ``files``) that run on ``device`` (eager if none)."""
    routes = []
    for smallest, preference in AUTO_ROUTES[device.type]:
        present = [backend for backend in preference
                   if BY_BACKEND[backend].name in files and runs_on(files[BY_BACKEND[backend].name], device)]
        routes.append((smallest, present[0] if present else EAGER))
    return routes
