"""The ``triton`` export format (``salrt export --format triton``): a model repository for stock Triton's
ONNX Runtime backend (no Python in the serving path) and a KServe ``InferenceService`` for it. Its
``config.pbtxt`` is ``triton_config``'s, the one ``salrt serve`` writes too.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch

from .._version import __version__
from ..errors import InputError
from . import onnx as onnx_format
from .triton_config import (check_batching, concrete_contract, model_config, model_config_pb2, triton_model_name,
                            write_config)


# The model repository (`salrt export --format triton`): DIR/triton/NAME/config.pbtxt, NAME/1/model.onnx and
# kserve.yaml, which Triton ignores (it loads the repository's directories only).
REPOSITORY_DEFAULTS = {"max_batch": 16, "max_queue_delay_ms": 2, "instance_kind": "gpu", "instances": 1}
_MODEL_FILE = "model.onnx"  # the file name Triton's onnxruntime backend looks for in a version directory
_KSERVE_MANIFEST = "kserve.yaml"


def repository_options(options: Optional[dict] = None) -> dict:
    """The repository's settings (``salrt.export(..., triton={...})``) with defaults filled in, checked so that
    a bad value, or a missing tritonclient, fails before minutes of export."""
    model_config_pb2()
    unknown = sorted(set(options or {}) - set(REPOSITORY_DEFAULTS))
    if unknown:
        raise InputError(f"unknown triton option {', '.join(unknown)}; choose from {', '.join(REPOSITORY_DEFAULTS)}")
    options = {**REPOSITORY_DEFAULTS, **(options or {})}
    check_batching(**options, label=lambda option: f"triton {option}")
    return options


def write_onnx_repository(graph: torch.fx.GraphModule, path: Path, description: dict, *,
                          reused_file: Optional[Path] = None, **options) -> dict:
    """The ``triton`` format's writer: a model repository at ``path`` serving the ONNX graph. ``reused_file`` is the
    artifact's own model.onnx when this export wrote one: the repository links it instead of a second copy."""
    options = repository_options(options)
    name = triton_model_name(description["model"])
    version = path / name / "1"
    version.mkdir(parents=True)
    shipped = _ship_onnx(graph, version / _MODEL_FILE, description, reused_file)
    inputs, outputs = concrete_contract(description)
    # the options are REPOSITORY_DEFAULTS' names, model_config's batching arguments
    write_config(model_config(name, inputs, outputs, platform="onnxruntime_onnx", **options),
                 path / name / "config.pbtxt")
    (path / _KSERVE_MANIFEST).write_text(kserve_manifest(name, gpu=options["instance_kind"] == "gpu"))
    return {"model": name, **options, "model_onnx": shipped, "opset": onnx_format.OPSET}


def _ship_onnx(graph, destination: Path, description: dict, reused_file: Optional[Path]) -> str:
    """The repository's model.onnx: how it got there ("linked", "copied" or "written")."""
    if reused_file is None:
        onnx_format.write(graph, destination, description)
        return "written"
    data = onnx_format.external_data_file(reused_file)
    if data.exists():  # the .onnx file names its weights file: it keeps its name next to the linked graph
        _link_or_copy(data, destination.with_name(data.name))
    return _link_or_copy(reused_file, destination)


def _link_or_copy(source: Path, destination: Path) -> str:
    try:
        os.link(source, destination)  # one inode: the repository costs no disk beyond its config
        return "linked"
    except OSError:  # a filesystem without hard links
        shutil.copyfile(source, destination)
        return "copied"


def kserve_manifest(model: str, gpu: bool) -> str:
    """A KServe ``InferenceService`` for the repository on KServe's Triton runtime, as YAML text."""
    one_gpu = '          nvidia.com/gpu: "1"\n'
    resources = f"      resources:\n        requests:\n{one_gpu}        limits:\n{one_gpu}" if gpu else ""
    return f"""\
# KServe InferenceService for the Triton model repository next to this file (salrt {__version__}).
# Upload this triton/ directory to the storageUri below first
# (e.g. aws s3 cp --recursive triton s3://YOUR-BUCKET/PATH/triton), then: kubectl apply -f {_KSERVE_MANIFEST}
# Clients speak Triton's v2 protocol: POST /v2/models/{model}/infer
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {_kubernetes_name(model)}
spec:
  predictor:
    model:
      modelFormat:
        name: triton
      runtime: kserve-tritonserver
      storageUri: s3://YOUR-BUCKET/PATH/triton  # placeholder: where you uploaded this triton/ directory
{resources}"""


def _kubernetes_name(model: str) -> str:
    """A DNS-1123 label (lower case, digits, '-'), as Kubernetes requires of a resource name."""
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:63].rstrip("-") or "salrt-model"
