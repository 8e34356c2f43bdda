"""AOTInductor: the graph compiled ahead of time for one device: this machine's CPU, or CUDA GPUs
(``salrt export --device cuda``; the manifest entry's ``device`` says which, and a package runs only there).

``model.pt2`` takes any batch size. ``model_n1.pt2`` is specialized to one image and frozen (weights folded
and pre-packed for that shape): the lowest single-image latency, at the cost of a larger file. The package
checks no shapes (given two images it silently explains the first only), so its loader runs a larger batch
one image at a time.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import _torch
from ..errors import ArtifactError
from ..graph import exported_program, image_shape
from ..graph.io import names

_LOADS_WITH = "torch._inductor.aoti_load_package (torch only), or AOTIModelPackageLoader in C++"


def _on(graph: torch.fx.GraphModule, device: torch.device) -> torch.fx.GraphModule:
    """The graph with its constants on ``device``: a copy, so the other formats still get the CPU graph."""
    return graph if device.type == "cpu" else copy.deepcopy(graph).to(device)


def write(graph: torch.fx.GraphModule, path: Path, description: dict, device: torch.device) -> dict:
    _torch.aoti_compile(exported_program(_on(graph, device), image_shape(description), device=device,
                                         inputs=names(description["inputs"])), str(path))
    return {"loads_with": _LOADS_WITH, "device": device.type}


def write_single_image(graph: torch.fx.GraphModule, path: Path, description: dict, device: torch.device) -> dict:
    program = exported_program(_on(graph, device), image_shape(description), batch=1, device=device,
                               inputs=names(description["inputs"]))
    _torch.aoti_compile(program, str(path), freeze=True)
    return {"loads_with": _LOADS_WITH, "device": device.type, "batch": 1}


def _package(path: Path, device: torch.device):
    try:
        return _torch.aoti_load(str(path))
    except Exception as err:  # a package from another torch or machine fails to load in many ways
        raise ArtifactError(f"cannot load {path} (compiled by another torch or for another CPU?): {err}") from None


def load(path: Path, device: torch.device, spin_wait: bool = True):
    compiled = _package(path, device)

    def run(*inputs: torch.Tensor):
        with torch.no_grad():
            return tuple(compiled(*inputs))
    return run


def load_single_image(path: Path, device: torch.device, spin_wait: bool = True):
    compiled = _package(path, device)

    def run(*inputs: torch.Tensor):
        with torch.no_grad():
            per_image = [compiled(*(x[i:i + 1] for x in inputs)) for i in range(inputs[0].shape[0])]
        return tuple(torch.cat(outputs) for outputs in zip(*per_image))
    return run
