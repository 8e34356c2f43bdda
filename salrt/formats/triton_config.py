"""Triton Inference Server model configurations (``config.pbtxt``) for salrt's tensor contract.

One definition of how salrt's tensors look to Triton clients, and of the batching options Triton takes,
shared by the model repository of ``salrt export --format triton`` (``formats.triton``) and ``salrt serve``'s
Python-backend models (``server.repository``), so a client sends the same request to both. Triton's
batching convention: the leading N is implicit (``max_batch_size``), and a per-row scalar (shape [N]) is
declared ``dims: [1]`` with ``reshape: { shape: [] }``: clients send [N, 1], the model sees [N].

Written with the ``model_config`` protobuf that ``tritonclient`` ships (``pip install 'salrt[serve]'``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..graph import contract_of

_DATA_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8", "bytes": "TYPE_STRING"}
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}  # where a model instance runs: salrt's name, Triton's


def model_config_pb2():
    """tritonclient's ``model_config_pb2`` module, or an InputError saying what to install."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise InputError("Triton support needs tritonclient: pip install 'salrt[serve]'") from None
    return model_config_pb2


def triton_model_name(model: str) -> str:
    """The model's name as Triton takes it, a directory name and the config's ``name`` alike: every character
    but letters, digits, '_', '.' and '-' replaced by '_' (``hf:./my-vit/`` -> ``hf_._my-vit_``); one rule for
    the repository of ``--format triton`` and for ``salrt serve``'s. A name of dots alone (a directory's
    ``.``, ``..``) gets a leading '_'."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    return f"_{name}" if set(name) <= {"."} else name


def concrete_contract(manifest: dict) -> tuple[list[dict], list[dict]]:
    """The manifest's inputs and outputs with the model's sizes (N stays): ``graph.contract_of``."""
    found = contract_of(manifest)
    return found["inputs"], found["outputs"]


def check_batching(*, max_batch, max_queue_delay_ms, instances, instance_kind: str = "cpu",
                   label: Callable[[str], str]) -> None:
    """InputError unless Triton can batch and place a model so. ``label`` names an option (``max_batch``...)
    as the caller's user sets it (a CLI flag, a Python field), so the error points at what to change. Called
    where the options are given, before minutes of export or a server start."""
    for option, value in (("max_batch", max_batch), ("instances", instances)):
        if type(value) is not int or value < 1:
            raise InputError(f"{label(option)} must be a whole number of at least 1, got {value!r}")
    if type(max_queue_delay_ms) not in (int, float) or not 0 <= max_queue_delay_ms < math.inf:  # NaN too
        raise InputError(f"{label('max_queue_delay_ms')} must be a number of milliseconds, 0 or more, "
                         f"got {max_queue_delay_ms!r}")
    if instance_kind not in INSTANCE_KINDS:
        raise InputError(f"{label('instance_kind')} must be one of {', '.join(INSTANCE_KINDS)}, got {instance_kind!r}")


def _declare(tensor, io: dict, model_config) -> None:
    if io["shape"][0] != "N":
        raise ValueError(f"{io['name']}: Triton batching needs a leading N, got shape {io['shape']}")
    tensor.name = io["name"]
    tensor.data_type = model_config.DataType.Value(_DATA_TYPES[io["dtype"]])
    per_row = io["shape"][1:]
    tensor.dims[:] = per_row or [1]
    if not per_row:
        tensor.reshape.SetInParent()  # reshape { shape: [] }: the model sees [N], clients send [N, 1]


def model_config(name: str, inputs: list[dict], outputs: list[dict], *, max_batch: int, max_queue_delay_ms: float,
                 instances: int, instance_kind: str, backend: str = "", platform: str = "",
                 parameters: dict | None = None):
    """A ``ModelConfig`` protobuf: ``inputs``/``outputs`` are salrt tensor dicts with concrete shapes whose
    first dimension is N; an input dict with ``"optional": True`` may be left out by clients. The batching
    options are ``check_batching``'s, checked by the caller where its user gave them."""
    pb = model_config_pb2()
    config = pb.ModelConfig(name=name, backend=backend, platform=platform, max_batch_size=max_batch)
    for io in inputs:
        tensor = config.input.add()
        _declare(tensor, io, pb)
        tensor.optional = bool(io.get("optional"))
    for io in outputs:
        _declare(config.output.add(), io, pb)
    config.dynamic_batching.max_queue_delay_microseconds = round(max_queue_delay_ms * 1000)
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.Value(INSTANCE_KINDS[instance_kind]))
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def write_config(config, path: Path) -> None:
    from google.protobuf import text_format
    path.write_text(text_format.MessageToString(config))
