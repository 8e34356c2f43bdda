"""The saliency graph compiled ahead of time with AOTInductor (``model.pt2``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .graph import exported_program


def write_aoti(graph: torch.fx.GraphModule, path: Path, description: dict) -> dict:
    """Compile for this machine's CPU. Freezing lets Inductor pre-pack the (constant) weights."""
    program = exported_program(graph, description["input_size"])
    # Inductor's C++ build looks for a CUDA toolkit and logs a warning on CPU-only machines; not our user's concern.
    build_log = logging.getLogger("torch.utils.cpp_extension")
    level = build_log.level
    build_log.setLevel(logging.ERROR)
    try:
        with torch._inductor.config.patch(freezing=True):
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    finally:
        build_log.setLevel(level)
    return {"loads_with": "torch._inductor.aoti_load_package (torch only), or AOTIModelPackageLoader in C++",
            "device": "cpu"}
