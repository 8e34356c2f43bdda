"""AOTInductor (``model.pt2``): the graph compiled ahead of time for this machine's CPU."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import _torch
from ..errors import ArtifactError
from ..graph import exported_program


def write(graph: torch.fx.GraphModule, path: Path, description: dict) -> dict:
    _torch.aoti_compile(exported_program(graph, description["input_size"]), str(path))
    return {"loads_with": "torch._inductor.aoti_load_package (torch only), or AOTIModelPackageLoader in C++",
            "device": "cpu"}


def load(path: Path, device: torch.device):
    if device.type != "cpu":
        raise ArtifactError("model.pt2 is compiled for the CPU; use backend 'torchscript' on CUDA")
    try:
        compiled = _torch.aoti_load(str(path))
    except Exception as err:  # a package from another torch or machine fails to load in many ways
        raise ArtifactError(f"cannot load {path} (compiled by another torch or for another CPU?): {err}") from None

    def run(image: torch.Tensor, target: torch.Tensor):
        with torch.no_grad():
            return tuple(compiled(image, target))
    return run
