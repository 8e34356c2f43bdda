"""ONNX (``model.onnx``): runs in plain onnxruntime (CPU, or CUDA with onnxruntime-gpu), no torch needed."""
from __future__ import annotations

import collections
import json
import math
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


def _unshare_transposed_weights(model: onnx.ModelProto) -> int:
    """Gives a private copy of its weight initializer to each node reading a weight another node also reads, where
    OpenVINO 2025.4's CPU plugin (float32) computes the node as if it held the other node's prepared weight:
    - a ConvTranspose of a channel-square weight ([C, C/groups, k, k]), the input gradient of a strided
      convolution, came out with the weight's input and output channels swapped (relative L2 1.3 on ResNet-50's
      input gradient at layer2-4's stride-2 conv2, 0.4 on RegNetY-400MF);
    - a Transpose of a square matrix ([C, C]), in the input gradient g @ W^T of a linear layer, was dropped
      (1.4 on ViT-Tiny's attn.proj, 0.84 on Swin-T).
    Non-square and private weights are computed right (docs/openvino.md has the reproductions). Returns the bytes
    the copies add (ResNet-50: 12 MB, 12%; ViT and Swin: 7%)."""
    graph, copied = model.graph, 0
    initializers = {t.name: t for t in graph.initializer}
    uses = collections.Counter(name for node in graph.node for name in node.input)
    for node in graph.node:
        slot = {"ConvTranspose": 1, "Transpose": 0}.get(node.op_type)
        if slot is None or len(node.input) <= slot or node.input[slot] not in initializers \
                or uses[node.input[slot]] < 2 or not _misread_when_shared(node, initializers[node.input[slot]]):
            continue
        weight = initializers[node.input[slot]]
        private = graph.initializer.add()
        private.CopyFrom(weight)
        private.name = f"{weight.name}_{node.name}"
        node.input[slot] = private.name
        copied += math.prod(weight.dims) * onnx.helper.tensor_dtype_to_np_dtype(weight.data_type).itemsize
    return copied


def _misread_when_shared(node: onnx.NodeProto, weight: onnx.TensorProto) -> bool:
    """Whether ``node`` reads ``weight`` in a shape whose two roles OpenVINO can swap: square."""
    attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
    dims = list(weight.dims)
    if node.op_type == "ConvTranspose":
        return dims[0] == dims[1] * attributes.get("group", 1)
    # 2-D only: a convolution's [C, C, k, k] weight transposed for a stride-1 input gradient is computed right
    # (OpenVINO folds that Transpose into a buffer of its own), and copying it would store the weight twice
    return len(dims) == 2 and dims[0] == dims[1]


def _layer_norms_with_one_output(model: onnx.ModelProto) -> None:
    """Each LayerNormalization that also returns its Mean and InvStdDev (the backward of a layer norm reads
    them) becomes one returning Y alone, beside nodes computing the two as ONNX's definition does. ONNX allows
    the three outputs, and onnxruntime runs them; OpenVINO's ONNX frontend refuses such a node ("other
    configurations are used for training and are not supported")."""
    graph = model.graph
    known = [*graph.input, *onnx.shape_inference.infer_shapes(model).graph.value_info]
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in known}
    types = {value.name: value.type.tensor_type.elem_type for value in known}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "LayerNormalization" or len([name for name in node.output if name]) < 2:
            continue
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        axis, epsilon = attributes.get("axis", -1), attributes.get("epsilon", 1e-5)
        rank = ranks[node.input[0]]
        axes_name = f"{node.name}_axes"
        graph.initializer.append(onnx.helper.make_tensor(axes_name, onnx.TensorProto.INT64, [rank - axis % rank],
                                                         list(range(axis % rank, rank))))
        epsilon_name = f"{node.name}_epsilon"
        graph.initializer.append(onnx.helper.make_tensor(epsilon_name, types[node.input[0]], [], [epsilon]))
        x, (_, mean, inverse_std) = node.input[0], (list(node.output) + ["", ""])[:3]
        mean = mean or f"{node.name}_mean"
        step = lambda op, inputs, output, **kw: onnx.helper.make_node(op, inputs, [output],  # noqa: E731
                                                                       name=f"{node.name}_{output}", **kw)
        nodes += [step("ReduceMean", [x, axes_name], mean, keepdims=1),
                  step("Sub", [x, mean], f"{node.name}_centred"),
                  step("Mul", [f"{node.name}_centred", f"{node.name}_centred"], f"{node.name}_squared"),
                  step("ReduceMean", [f"{node.name}_squared", axes_name], f"{node.name}_variance", keepdims=1),
                  step("Add", [f"{node.name}_variance", epsilon_name], f"{node.name}_variance_eps"),
                  step("Sqrt", [f"{node.name}_variance_eps"], f"{node.name}_std")]
        if inverse_std:
            nodes.append(step("Reciprocal", [f"{node.name}_std"], inverse_std))
        del node.output[1:]
    del graph.node[:]
    graph.node.extend(nodes)


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
    weight_bytes += _unshare_transposed_weights(model)
    _layer_norms_with_one_output(model)
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
