"""``manifest.json``: what an artifact directory holds and how to use it, with checksums."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from ._version import __version__
from .errors import SalrtError
from .models import ClassifierSpec, Preprocessing

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = {"torchscript": "model.pt", "onnx": "model.onnx", "aoti": "model.pt2"}
INPUTS = [{"name": "image", "dtype": "float32", "shape": ["N", 3, "H", "W"]},
          {"name": "target", "dtype": "int64", "shape": ["N"], "note": "negative = argmax"}]
OUTPUTS = [{"name": "logits", "dtype": "float32", "shape": ["N", "K"]},
           {"name": "used_target", "dtype": "int64", "shape": ["N"]},
           {"name": "saliency", "dtype": "float32", "shape": ["N", "H", "W"], "range": [0, 1]},
           {"name": "grad", "dtype": "float32", "shape": ["N", 3, "H", "W"]}]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(spec: ClassifierSpec) -> dict:
    """Everything the manifest says about a model, before any file exists."""
    size = spec.preprocessing.crop
    return {
        "format_version": FORMAT_VERSION,
        "salrt_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model": spec.name,
        "weights": spec.weights,
        "input_size": [size, size],
        "preprocessing": dataclasses.asdict(spec.preprocessing),
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "categories": spec.categories,
    }


def with_files(description: dict, directory: Path, details: dict) -> dict:
    """The manifest: the description plus each written format's file, size and sha256."""
    files = {fmt: {"file": FILES[fmt], "sha256": sha256(directory / FILES[fmt]),
                   "bytes": (directory / FILES[fmt]).stat().st_size, **extra} for fmt, extra in details.items()}
    return {**description, "files": files}


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise SalrtError(f"{directory} is not a salrt artifact directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SalrtError(f"{path} is corrupt: {err}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SalrtError(f"{directory} was written by salrt {manifest.get('salrt_version', '?')} in artifact format "
                         f"{manifest.get('format_version')}; this salrt {__version__} reads format {FORMAT_VERSION}: "
                         "export it again")
    return manifest


def verified_file(directory: Path, manifest: dict, fmt: str) -> Path:
    """The artifact file of a format, after checking it is the one the manifest describes."""
    entry = manifest["files"].get(fmt)
    if entry is None:
        raise SalrtError(f"{directory} has no {fmt} artifact (it has: {', '.join(manifest['files'])})")
    path = directory / entry["file"]
    if not path.is_file():
        raise SalrtError(f"{path} is missing")
    if sha256(path) != entry["sha256"]:
        raise SalrtError(f"{path} does not match its manifest (sha256 mismatch): the file is truncated or was "
                         "modified; export it again")
    return path


def preprocessing_of(manifest: dict) -> Preprocessing:
    p = manifest["preprocessing"]
    return Preprocessing(resize=p["resize"], crop=p["crop"], mean=tuple(p["mean"]), std=tuple(p["std"]),
                         interpolation=p["interpolation"])
