"""Triton Inference Server model configurations (``config.pbtxt``) for salrt's tensor contract.

One definition of how salrt's tensors look to Triton clients, shared by the ONNX Runtime model repository
(``salrt export --format triton``) and ``salrt serve``'s Python-backend models, so a client sends the same
request to both. Triton's batching convention: the leading N is implicit (``max_batch_size``), and a
per-row scalar (shape [N]) is declared ``dims: [1]`` with ``reshape: { shape: [] }``: clients send [N, 1],
the model sees [N].

Written with the ``model_config`` protobuf that ``tritonclient`` ships (``pip install 'salrt[serve]'``).
"""
from __future__ import annotations

from ..errors import InputError

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
    """The manifest's inputs and outputs with H, W and K replaced by the artifact's sizes (N stays)."""
    height, width = manifest["input_size"]
    sizes = {"H": height, "W": width, "K": len(manifest["categories"])}

    def concrete(io: dict) -> dict:
        return {**io, "shape": [sizes.get(d, d) for d in io["shape"]]}
    return [concrete(io) for io in manifest["inputs"]], [concrete(io) for io in manifest["outputs"]]


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


def read_config(path):
    """A ``config.pbtxt`` parsed back into a ``ModelConfig`` (a malformed file raises)."""
    from google.protobuf import text_format
    return text_format.Parse(path.read_text(), model_config_pb2().ModelConfig())
