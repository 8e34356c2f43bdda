"""``salrt.export``: write a model's saliency graph as artifacts plus a manifest, all or nothing."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import torch

from .errors import SalrtError
from .graph import build_saliency_graph
from .manifest import FILES, MANIFEST, describe, with_files
from .models import ClassifierSpec, Preprocessing, imagenet_categories, load_model
from .aoti_export import write_aoti
from .onnx_export import write_onnx
from .torchscript import write_torchscript

Progress = Callable[[str], None]
# Each writer takes (graph, path, manifest description) and returns details for its manifest entry.
WRITERS = {"torchscript": write_torchscript, "onnx": write_onnx, "aoti": write_aoti}


def parse_formats(formats: Union[str, Iterable[str]]) -> list[str]:
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = [f for f in names if f not in WRITERS]
    if unknown or not names:
        raise SalrtError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(WRITERS)}")
    return list(dict.fromkeys(names))


def as_spec(model: Union[str, torch.nn.Module, ClassifierSpec], weights: str = "default") -> ClassifierSpec:
    """A model name, a ready spec, or any ImageNet-style module (then with torchvision's preprocessing)."""
    if isinstance(model, ClassifierSpec):
        return model
    if isinstance(model, str):
        return load_model(model, weights)
    module = model.eval().requires_grad_(False)
    preprocessing = Preprocessing(232, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return ClassifierSpec(type(model).__name__, "custom", module, preprocessing, imagenet_categories())


def export(model: Union[str, torch.nn.Module, ClassifierSpec], out_dir: Union[str, Path],
           formats: Union[str, Iterable[str]] = ("torchscript",), weights: str = "default",
           image_size: Optional[int] = None, progress: Progress = lambda message: None) -> Path:
    """Export ``model``'s saliency graph to ``out_dir`` (model.pt, ..., manifest.json) and return it.

    ``image_size`` overrides the model's crop size (the resize keeps its ratio to the crop): the graph's
    H and W are fixed at export. The directory appears complete or not at all: files are written to a
    temporary sibling and moved in place at the end. An existing salrt artifact directory is replaced; any
    other existing path is an error.
    """
    formats = parse_formats(formats)
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    spec = as_spec(model, weights)
    if image_size is not None:
        spec = dataclasses.replace(spec, preprocessing=_resized(spec.preprocessing, image_size))
    staging = _staging_dir(out_dir)
    try:
        started = time.perf_counter()
        progress(f"tracing the saliency graph of {spec.name}")
        with _explained(f"cannot build the saliency graph of {spec.name}"):
            graph = build_saliency_graph(spec.module, spec.preprocessing.crop)
        description = describe(spec)
        details = {}
        for fmt in formats:
            progress(f"writing {FILES[fmt]}")
            with _explained(f"cannot export {spec.name} to {fmt}"):
                details[fmt] = WRITERS[fmt](graph, staging / FILES[fmt], description)
        manifest = with_files(description, staging, details)
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


@contextlib.contextmanager
def _explained(what: str):
    """Turn a tracer or exporter failure into one line naming the model, the format and the cause."""
    try:
        yield
    except SalrtError:
        raise
    except Exception as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        cause = next((line for line in lines if "aten." in line or "prims." in line), lines[0] if lines else "")
        raise SalrtError(f"{what}: {type(err).__name__}: {cause.strip()[:300]}") from err


def _resized(p: Preprocessing, size: int) -> Preprocessing:
    if size < 32:
        raise SalrtError(f"image size {size} is too small; use 32 or more")
    return dataclasses.replace(p, crop=size, resize=round(size * p.resize / p.crop))


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / MANIFEST).exists())):
        raise SalrtError(f"{out_dir} exists and is not a salrt artifact directory; choose another --out")


def _staging_dir(out_dir: Path) -> Path:
    parent = out_dir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as err:
        raise SalrtError(f"cannot write to {parent}: {err.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact gets ordinary permissions
    return staging


def _replace(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
