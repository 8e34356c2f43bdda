"""ONNX (``model.onnx``): runs in plain onnxruntime (CPU, or CUDA with onnxruntime-gpu), no torch needed."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch

from ..errors import ArtifactError
from ..graph import exported_program, image_shape
from ..graph.io import names

OPSET = 20
_PROTOBUF_LIMIT = 2 * 1024**3  # one .onnx file holds at most 2 GB; larger weights go to model.onnx.data


def _name_batch_dimension(model: onnx.ModelProto) -> None:
    """Call the dynamic batch 'N' on every input and output (the exporter names it after a symbol, 's28')."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "N"


def external_data_file(path: Path) -> Path:
    """Where ``write`` puts the weights of a model over the protobuf limit (the .onnx file names it, relatively)."""
    return path.with_name(f"{path.name}.data")


def write(graph: torch.fx.GraphModule, path: Path, description: dict) -> dict:
    """Export through torch.export with a dynamic batch, then check the model with ONNX's full checker."""
    exported = exported_program(graph, image_shape(description), inputs=names(description["inputs"]))
    weight_bytes = sum(t.numel() * t.element_size() for t in exported.state_dict.values()) + sum(
        t.numel() * t.element_size() for t in exported.constants.values() if isinstance(t, torch.Tensor))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        program = torch.onnx.export(exported, dynamo=True, opset_version=OPSET,
                                    input_names=names(description["inputs"]),
                                    output_names=names(description["outputs"]), optimize=True, verbose=False)
    model = program.model_proto
    _name_batch_dimension(model)
    for key, value in description.items():  # the manifest travels inside the file too
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    external = weight_bytes > _PROTOBUF_LIMIT * 0.9
    onnx.save_model(model, str(path), save_as_external_data=external, location=external_data_file(path).name)
    onnx.checker.check_model(str(path), full_check=True)
    return {"opset": OPSET, "external_data": external}


def load(path: Path, device: torch.device, spin_wait: bool = True):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    if not spin_wait:  # threads that spin between operators hold cores that other work beside the model needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ArtifactError("backend 'onnxruntime' on CUDA needs onnxruntime-gpu: pip install 'salrt[gpu]'")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise ArtifactError(f"onnxruntime cannot load {path}: {err}") from None

    input_names = [io.name for io in session.get_inputs()]  # the file's own names, in the contract's order

    def run(*inputs: torch.Tensor):
        feed = dict(zip(input_names, (x.cpu().numpy() for x in inputs)))
        outputs = session.run(None, feed)  # every output, in the graph's order
        return tuple(torch.from_numpy(output).to(device) for output in outputs)
    return run
