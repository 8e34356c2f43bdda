"""Triton Inference Server model configurations (``config.pbtxt``) for salrt's tensor contract.

One definition of how salrt's tensors look to Triton clients, shared by the ONNX Runtime model repository
(``salrt export --format triton``) and ``salrt serve``'s Python-backend models, so a client sends the same
request to both. Triton's batching convention: the leading N is implicit (``max_batch_size``), and a
per-row scalar (shape [N]) is declared ``dims: [1]`` with ``reshape: { shape: [] }``: clients send [N, 1],
the model sees [N].

Written with the ``model_config`` protobuf that ``tritonclient`` ships (``pip install 'salrt[serve]'``).

``write_repository`` is the ``triton`` export format: a model repository for stock Triton's ONNX Runtime
backend (no Python in the serving path) and a KServe ``InferenceService`` for it.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch

from .._version import __version__
from ..errors import InputError
from ..graph import contract_of
from . import onnx as onnx_format

_DATA_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8", "bytes": "TYPE_STRING"}
CPU, GPU = "KIND_CPU", "KIND_GPU"


def model_config_pb2():
    """tritonclient's ``model_config_pb2`` module, or an InputError saying what to install."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise InputError("Triton support needs tritonclient: pip install 'salrt[serve]'") from None
    return model_config_pb2


def concrete_contract(manifest: dict) -> tuple[list[dict], list[dict]]:
    """The manifest's inputs and outputs with the model's sizes (N stays): ``graph.contract_of``."""
    found = contract_of(manifest)
    return found["inputs"], found["outputs"]


def _declare(tensor, io: dict, model_config) -> None:
    if io["shape"][0] != "N":
        raise ValueError(f"{io['name']}: Triton batching needs a leading N, got shape {io['shape']}")
    tensor.name = io["name"]
    tensor.data_type = model_config.DataType.Value(_DATA_TYPES[io["dtype"]])
    per_row = io["shape"][1:]
    tensor.dims[:] = per_row or [1]
    if not per_row:
        tensor.reshape.SetInParent()  # reshape { shape: [] }: the model sees [N], clients send [N, 1]


def model_config(name: str, inputs: list[dict], outputs: list[dict], *, max_batch: int,
                 max_queue_delay_us: int, instances: int = 1, kind: str = CPU, backend: str = "",
                 platform: str = "", parameters: dict | None = None):
    """A ``ModelConfig`` protobuf: ``inputs``/``outputs`` are salrt tensor dicts with concrete shapes whose
    first dimension is N; an input dict with ``"optional": True`` may be left out by clients."""
    pb = model_config_pb2()
    if max_batch < 1 or instances < 1 or max_queue_delay_us < 0:
        raise InputError("max batch and instances must be at least 1, the queue delay at least 0")
    config = pb.ModelConfig(name=name, backend=backend, platform=platform, max_batch_size=max_batch)
    for io in inputs:
        tensor = config.input.add()
        _declare(tensor, io, pb)
        tensor.optional = bool(io.get("optional"))
    for io in outputs:
        _declare(config.output.add(), io, pb)
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.Value(kind))
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def write_config(config, path) -> None:
    from google.protobuf import text_format
    path.write_text(text_format.MessageToString(config))


# The model repository (`salrt export --format triton`): DIR/triton/NAME/config.pbtxt, NAME/1/model.onnx and
# kserve.yaml, which Triton ignores (it loads the repository's directories only).
REPOSITORY_DEFAULTS = {"max_batch": 16, "max_queue_delay_ms": 2, "instance_kind": "gpu", "instances": 1}
INSTANCE_KINDS = {"gpu": GPU, "cpu": CPU}
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
    for name in ("max_batch", "instances"):
        if type(options[name]) is not int or options[name] < 1:
            raise InputError(f"triton {name} must be a whole number of at least 1, got {options[name]!r}")
    delay = options["max_queue_delay_ms"]
    if type(delay) not in (int, float) or not 0 <= delay < math.inf:
        raise InputError(f"triton max_queue_delay_ms must be a number of milliseconds, 0 or more, got {delay!r}")
    if options["instance_kind"] not in INSTANCE_KINDS:
        raise InputError(f"triton instance_kind must be one of {', '.join(INSTANCE_KINDS)}, "
                         f"got {options['instance_kind']!r}")
    return options


def write_repository(graph: torch.fx.GraphModule, path: Path, description: dict, *,
                     reused_file: Optional[Path] = None, **options) -> dict:
    """The ``triton`` format: a model repository at ``path`` serving the ONNX graph. ``reused_file`` is the
    artifact's own model.onnx when this export wrote one: the repository links it instead of a second copy."""
    options = repository_options(options)
    name = description["model"]
    version = path / name / "1"
    version.mkdir(parents=True)
    shipped = _ship_onnx(graph, version / _MODEL_FILE, description, reused_file)
    inputs, outputs = concrete_contract(description)
    write_config(model_config(name, inputs, outputs, platform="onnxruntime_onnx", max_batch=options["max_batch"],
                              max_queue_delay_us=round(options["max_queue_delay_ms"] * 1000),
                              instances=options["instances"], kind=INSTANCE_KINDS[options["instance_kind"]]),
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
