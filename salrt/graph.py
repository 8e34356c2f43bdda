"""Build the saliency graph: forward pass, input gradient and saliency map as one aten FX graph.

Stage 1 traces the model's forward pass into aten ops and folds eval-mode batch norms into the
convolutions before them. Stage 2 traces autograd through that graph with every backward op written as
forward ops (see ``decompositions``); stride-1 input-gradient convolutions then become ordinary ones. The
batch is symbolic in both stages, so the graph takes any N; the spatial size is fixed at export. Weights
are graph constants that never require grad.
"""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import (DimDynamic, ShapeEnv, StatelessSymbolicContext,
                                                   statically_known_true)

from .decompositions import backward_as_forward_ops, forward_rewrites
from .saliency import saliency_from_grad

aten = torch.ops.aten
TRACE_BATCH = 2  # sizes 0 and 1 would be specialized by the tracer


def input_gradient(forward, image: torch.Tensor, target: torch.Tensor):
    """(logits, used_target, grad): the gradient of each image's target logit w.r.t. that image.

    A negative target selects the argmax class. Summing the selected logits gives every image the gradient
    of its own logit only, in one backward pass.
    """
    with torch.enable_grad():
        x = image.detach().requires_grad_(True)
        logits = forward(x)
        used_target = torch.where(target < 0, logits.argmax(1), target)
        score = logits.gather(1, used_target.unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(score, x)
    return logits.detach(), used_target, grad


def saliency_outputs(forward, image: torch.Tensor, target: torch.Tensor):
    """The graph's contract: (logits, used_target, saliency, grad)."""
    logits, used_target, grad = input_gradient(forward, image, target)
    return logits, used_target, saliency_from_grad(grad), grad


def _symbolic_batch(shape: tuple[int, ...], dtype: torch.dtype, mode: FakeTensorMode) -> torch.Tensor:
    dynamic = [DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (len(shape) - 1)
    return mode.from_tensor(torch.zeros(shape, dtype=dtype),
                            symbolic_context=StatelessSymbolicContext(dynamic_sizes=dynamic))


def _example_inputs(image_size: int):
    """Fake inputs whose batch is one shared symbol; image and target must agree on N."""
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    image = _symbolic_batch((TRACE_BATCH, 3, image_size, image_size), torch.float32, mode)
    target = _symbolic_batch((TRACE_BATCH,), torch.int64, mode)
    torch._check(target.shape[0] == image.shape[0])
    return image, target


def _trace(module: torch.nn.Module, fn, inputs: tuple, decompositions: dict) -> torch.fx.GraphModule:
    """``make_fx`` of ``fn(module_forward, *inputs)`` with ``module``'s parameters and buffers as constants.

    The weights go in as fake tensors, then become constants of the traced graph. Traced as real
    tensors instead, an op on weights alone (ViT expands its class token to the batch size) would run
    eagerly and could not take the symbolic batch size.
    """
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    names = list(state)

    def with_state(*args):
        weights = dict(zip(names, args[len(inputs):]))
        return fn(lambda x: torch.func.functional_call(module, weights, (x,)), *args[:len(inputs)])
    fake_state = [inputs[0].fake_mode.from_tensor(state[name]) for name in names]
    gm = make_fx(with_state, decomposition_table=decompositions, _allow_non_fake_inputs=True)(*inputs, *fake_state)
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"][len(inputs):]
    for node, name in zip(placeholders, names):
        with gm.graph.inserting_before(node):
            node.replace_all_uses_with(_constant(gm, state[name], name.replace(".", "_")))
        gm.graph.erase_node(node)
    gm.recompile()
    return gm


def trace_forward(model: torch.nn.Module, image_size: int) -> torch.fx.GraphModule:
    image, _ = _example_inputs(image_size)
    return _trace(model, lambda forward, x: forward(x), (image,), forward_rewrites())


def drop_no_op_restrides(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Remove ``as_strided`` calls that keep every element in place (pooling restrides its 1x1 output to
    the input's memory format). Their autograd formula writes through ``as_strided``, which ONNX lacks."""
    for node in list(gm.graph.nodes):
        if node.target not in (aten.as_strided.default, aten.as_strided_.default) or len(node.args) > 3:
            continue
        source = node.args[0].meta["val"]
        size, stride = ([_value(v) for v in node.args[i]] for i in (1, 2))
        same_shape = len(size) == source.dim() and all(_known_equal(a, b) for a, b in zip(size, source.shape))
        # A stride only matters along a dimension longer than 1.
        same_strides = all(_known_equal(n, 1) or _known_equal(a, b) for n, a, b in zip(size, source.stride(), stride))
        if same_shape and same_strides and source.storage_offset() == 0:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def _known_equal(a, b) -> bool:
    return statically_known_true(a == b)


def _value(arg):
    """A node argument as the (possibly symbolic) value it had while tracing."""
    return arg.meta["val"] if isinstance(arg, torch.fx.Node) else arg


def _eval_batch_norm_args(node: torch.fx.Node):
    """(input, weight, bias, running_mean, running_var, eps) of an eval-mode batch norm node, else None."""
    if node.target is aten._native_batch_norm_legit_no_training.default:
        return (*node.args[:5], node.args[6])
    if node.target is aten.native_batch_norm.default and not node.args[5]:
        return (*node.args[:5], node.args[7])
    return None


def fold_batch_norms(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold each eval batch norm that directly follows a convolution into that convolution's weights."""
    for bn in list(gm.graph.nodes):
        args = _eval_batch_norm_args(bn)
        if args is None:
            continue
        conv, *statistics, eps = args
        if conv.target is not aten.convolution.default or len(conv.users) != 1 or conv.args[6]:
            continue
        constants = [conv.args[1], conv.args[2], *statistics]
        if not all(c is None or c.op == "get_attr" for c in constants):
            continue
        weight, bias, gamma, beta, mean, var = (None if c is None else getattr(gm, c.target) for c in constants)
        scale = torch.rsqrt(var + eps) * (gamma if gamma is not None else 1)
        shift = (beta if beta is not None else 0) - mean * scale
        folded_weight = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
        folded_bias = shift + (bias * scale if bias is not None else 0)
        with gm.graph.inserting_before(conv):
            conv.update_arg(1, _constant(gm, folded_weight, f"{conv.name}_folded_weight"))
            conv.update_arg(2, _constant(gm, folded_bias, f"{conv.name}_folded_bias"))
        for getitem in list(bn.users):
            if getitem.args[1] == 0:
                getitem.replace_all_uses_with(conv)
            elif getitem.users:
                raise RuntimeError("batch norm statistics are used downstream; cannot fold")
            gm.graph.erase_node(getitem)
        gm.graph.erase_node(bn)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def direct_input_gradient_convolutions(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite stride-1 transposed convolutions with constant weights as ordinary convolutions.

    The input gradient of a stride-1 convolution is a convolution with the kernel flipped and its in/out
    channels swapped. Ordinary convolutions have far better kernels (oneDNN, ONNX Runtime, Inductor) than
    transposed ones; in ResNet-50 this covers every 1x1 and 3x3 stride-1 layer.
    """
    for conv in gm.graph.nodes:
        if conv.target is not aten.convolution.default:
            continue
        x, weight, bias, stride, padding, dilation, transposed, output_padding, groups = conv.args
        if not transposed or any(s != 1 for s in stride) or any(output_padding) or weight.op != "get_attr":
            continue
        w = getattr(gm, weight.target)
        kernel = w.shape[2:]
        direct_padding = [d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding)]
        if any(p < 0 for p in direct_padding):
            continue
        # [in, out/groups, k...] -> [out, in/groups, k...], per group, spatially flipped.
        in_per_group, out_per_group = w.shape[0] // groups, w.shape[1]
        direct = (w.reshape(groups, in_per_group, out_per_group, *kernel).transpose(1, 2)
                  .reshape(groups * out_per_group, in_per_group, *kernel).flip(list(range(2, w.dim()))))
        with gm.graph.inserting_before(conv):
            conv.args = (x, _constant(gm, direct, f"{conv.name}_direct_weight"), bias, stride, direct_padding,
                         dilation, False, [0] * len(stride), groups)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _constant(gm: torch.fx.GraphModule, value: torch.Tensor, name: str) -> torch.fx.Node:
    gm.register_buffer(name, value.detach().contiguous())
    return gm.graph.get_attr(name)


def build_saliency_graph(model: torch.nn.Module, image_size: int, fold_bn: bool = True) -> torch.fx.GraphModule:
    """The joint forward + input-gradient + saliency graph of ``model`` for square inputs of ``image_size``."""
    forward = drop_no_op_restrides(trace_forward(model, image_size))
    if fold_bn:
        forward = fold_batch_norms(forward)
    image, target = _example_inputs(image_size)
    joint = _trace(forward, saliency_outputs, (image, target), backward_as_forward_ops())
    _check_no_backward_ops(joint)
    return direct_input_gradient_convolutions(joint)


def _check_no_backward_ops(gm: torch.fx.GraphModule) -> None:
    left = sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "backward" in str(n.target)})
    if left:
        raise NotImplementedError(f"no forward-op rewrite for {', '.join(left)}")


def exported_program(graph: torch.fx.GraphModule, size: list[int]) -> torch.export.ExportedProgram:
    """The graph as a torch.export program with a dynamic batch (shared by the ONNX and AOTI writers)."""
    image = torch.zeros(TRACE_BATCH, 3, *size)
    target = torch.full((TRACE_BATCH,), -1, dtype=torch.int64)
    batch = torch.export.Dim("N", min=1, max=65536)
    return torch.export.export(graph, (image, target), dynamic_shapes=({0: batch}, {0: batch}))
