"""Rewrites of traced aten graphs. Op arguments are read by schema name (``_torch.op_arguments``)."""
from __future__ import annotations

import torch

from .. import _torch
from .trace import add_constant

aten = torch.ops.aten


def _value(arg):
    """A node argument as the (possibly symbolic) value it had while tracing."""
    return arg.meta["val"] if isinstance(arg, torch.fx.Node) else arg


def drop_no_op_restrides(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Remove ``as_strided`` calls that keep every element in place (pooling restrides its 1x1 output to
    the input's memory format). Their autograd formula writes through ``as_strided``, which ONNX lacks."""
    for node in list(gm.graph.nodes):
        if node.target not in (aten.as_strided.default, aten.as_strided_.default):
            continue
        args = _torch.op_arguments(node)
        if args.get("storage_offset") is not None:
            continue
        source = args["self"].meta["val"]
        size, stride = ([_value(v) for v in args[name]] for name in ("size", "stride"))
        same_shape = len(size) == source.dim() and all(_torch.known_equal(a, b) for a, b in zip(size, source.shape))
        # A stride only matters along a dimension longer than 1.
        same_strides = all(_torch.known_equal(n, 1) or _torch.known_equal(a, b)
                           for n, a, b in zip(size, source.stride(), stride))
        if same_shape and same_strides and source.storage_offset() == 0:
            node.replace_all_uses_with(args["self"])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


_EVAL_BATCH_NORMS = (aten._native_batch_norm_legit_no_training.default, aten.native_batch_norm.default)


def _eval_batch_norm(node: torch.fx.Node):
    """The schema arguments of an eval-mode batch norm call, else None."""
    if node.target not in _EVAL_BATCH_NORMS:
        return None
    args = _torch.op_arguments(node)
    return None if args.get("training", False) else args


def fold_batch_norms(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold each eval batch norm that directly follows a convolution into that convolution's weights."""
    for bn in list(gm.graph.nodes):
        bn_args = _eval_batch_norm(bn)
        if bn_args is None:
            continue
        conv = bn_args["input"]
        if conv.target is not aten.convolution.default or len(conv.users) != 1:
            continue
        conv_args = _torch.op_arguments(conv)
        if conv_args["transposed"]:
            continue
        constants = [conv_args["weight"], conv_args["bias"],
                     *(bn_args[name] for name in ("weight", "bias", "running_mean", "running_var"))]
        if not all(c is None or c.op == "get_attr" for c in constants):
            continue
        weight, bias, gamma, beta, mean, var = (None if c is None else getattr(gm, c.target) for c in constants)
        scale = torch.rsqrt(var + bn_args["eps"]) * (gamma if gamma is not None else 1)
        shift = (beta if beta is not None else 0) - mean * scale
        folded_weight = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
        folded_bias = shift + (bias * scale if bias is not None else 0)
        with gm.graph.inserting_before(conv):
            _torch.set_op_argument(conv, "weight", add_constant(gm, folded_weight, f"{conv.name}_folded_weight"))
            _torch.set_op_argument(conv, "bias", add_constant(gm, folded_bias, f"{conv.name}_folded_bias"))
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
    transposed ones; in ResNet-50 this covers every 1x1 and 3x3 stride-1 layer. The swapped, flipped
    weight is written as graph ops on the forward convolution's own weight constant, so an artifact stores
    each weight once and its runtime folds or fuses the ops (onnxruntime folds them at session creation).
    """
    for conv in gm.graph.nodes:
        if conv.target is not aten.convolution.default:
            continue
        args = _torch.op_arguments(conv)
        stride, dilation, weight = args["stride"], args["dilation"], args["weight"]
        if not args["transposed"] or any(s != 1 for s in stride) or any(args["output_padding"]) \
                or weight.op != "get_attr":
            continue
        shape = getattr(gm, weight.target).shape
        direct_padding = [d * (k - 1) - p for d, k, p in zip(dilation, shape[2:], args["padding"])]
        if any(p < 0 for p in direct_padding):
            continue
        with gm.graph.inserting_before(conv):
            _torch.set_op_argument(conv, "weight", _direct_weight(gm.graph, weight, shape, args["groups"]))
        _torch.set_op_argument(conv, "padding", direct_padding)
        _torch.set_op_argument(conv, "transposed", False)
        _torch.set_op_argument(conv, "output_padding", [0] * len(stride))
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _direct_weight(graph: torch.fx.Graph, weight: torch.fx.Node, shape, groups: int) -> torch.fx.Node:
    """[in, out/groups, k...] -> [out, in/groups, k...] per group, flipped along every spatial dimension
    longer than 1 (a 1x1 weight with one group is only transposed)."""
    kernel = list(shape[2:])
    in_per_group, out_per_group = shape[0] // groups, shape[1]
    if groups == 1:
        direct = graph.call_function(aten.transpose.int, (weight, 0, 1))
    else:
        direct = graph.call_function(aten.reshape.default, (weight, [groups, in_per_group, out_per_group, *kernel]))
        direct = graph.call_function(aten.transpose.int, (direct, 1, 2))
        direct = graph.call_function(aten.reshape.default, (direct, [groups * out_per_group, in_per_group, *kernel]))
    flipped = [2 + i for i, k in enumerate(kernel) if k > 1]
    return graph.call_function(aten.flip.default, (direct, flipped)) if flipped else direct


NARROW_CHANNELS = 16  # a strided transposed convolution producing fewer channels than this is rewritten


def polyphase_narrow_transposed_convolutions(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite strided transposed convolutions that produce few channels (a model's stem's input gradient:
    3) as one ordinary convolution over the stride x stride output phases, then ``pixel_shuffle``.

    oneDNN runs ResNet-50's stem input gradient (64 -> 3 channels, 7x7, stride 2) at 42 GFLOP/s, about 6% of
    a whole saliency call; its polyphase form (a stride-1 4x4 convolution to 12 channels) takes 40% of that
    time. Output phase r of a transposed convolution is a correlation of its input with the taps
    t = r + padding - stride * j; the phases share one window of offsets j, so one convolution computes
    them all, and ``pixel_shuffle`` interleaves them. The phase weight is a small new constant.
    """
    for conv in list(gm.graph.nodes):
        if conv.target is not aten.convolution.default:
            continue
        args = _torch.op_arguments(conv)
        stride = list(args["stride"])
        if not args["transposed"] or args["bias"] is not None or args["groups"] != 1 \
                or args["weight"].op != "get_attr" or any(d != 1 for d in args["dilation"]) or len(stride) != 2 \
                or stride[0] != stride[1] or stride[0] == 1:
            continue
        weight = getattr(gm, args["weight"].target)
        if weight.shape[1] >= NARROW_CHANNELS:
            continue
        plan = _phase_plan(stride[0], weight.shape[2:], args["padding"], _value(args["input"]).shape[2:],
                           conv.meta["val"].shape[2:])
        if plan is None:
            continue
        offsets, kernel, conv_padding, out_size = plan
        phase_weight = _phase_weight(weight, stride[0], args["padding"], offsets, kernel)
        with gm.graph.inserting_before(conv):
            direct = gm.graph.call_function(aten.convolution.default, (
                args["input"], add_constant(gm, phase_weight, f"{conv.name}_phase_weight"), None, [1, 1],
                conv_padding, [1, 1], False, [0, 0], 1))
            out = gm.graph.call_function(aten.pixel_shuffle.default, (direct, stride[0]))
            for dim, (start, size) in enumerate(out_size, 2):
                out = gm.graph.call_function(aten.slice.Tensor, (out, dim, start, start + size))
            # dense, as the convolution's output was: views traced downstream of it (a max-pool's backward
            # flattens) need it; a copy of a few channels
            out = gm.graph.call_function(aten.clone.default, (out,), {"memory_format": torch.contiguous_format})
        conv.replace_all_uses_with(out)
        gm.graph.erase_node(conv)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _phase_plan(s: int, kernel, padding, in_size, out_size):
    """Per spatial dim: the first offset j, the phase kernel size, the convolution's padding and the output's
    (start, size) in the shuffled result; None where the input would need cropping (padding >= kernel)."""
    offsets, sizes, conv_padding, crop = [], [], [], []
    for k, p, n_in, n_out in zip(kernel, padding, in_size, out_size):
        k, p, n_in, n_out = int(k), int(p), int(n_in), int(n_out)
        first = min(-((k - 1 - r - p) // s) for r in range(s))   # ceil((r + p - k + 1) / s)
        last = max((r + p) // s for r in range(s))
        if first > 0:
            return None
        size, phase_len = last - first + 1, -(-n_out // s)
        left, right = -first, phase_len + last - n_in  # the pads that make every phase phase_len long
        pad = max(left, right, 0)
        offsets.append(first)
        sizes.append(size)
        conv_padding.append(pad)
        crop.append((s * (pad - left), n_out))
    return offsets, sizes, conv_padding, crop


def _phase_weight(weight: torch.Tensor, s: int, padding, offsets, kernel) -> torch.Tensor:
    """[in, out, kh, kw] transposed-convolution weight -> [out * s * s, in, KH, KW] ordinary one: channel
    c * s * s + rh * s + rw (``pixel_shuffle``'s order) holds phase (rh, rw)'s taps, zeros where none falls."""
    channels_in, channels_out = weight.shape[:2]
    phases = weight.new_zeros(channels_out, s, s, channels_in, *kernel)
    for rh in range(s):
        for rw in range(s):
            for mh in range(kernel[0]):
                for mw in range(kernel[1]):
                    th = rh + padding[0] - s * (mh + offsets[0])
                    tw = rw + padding[1] - s * (mw + offsets[1])
                    if 0 <= th < weight.shape[2] and 0 <= tw < weight.shape[3]:
                        phases[:, rh, rw, :, mh, mw] = weight[:, :, th, tw].T
    return phases.reshape(channels_out * s * s, channels_in, *kernel)


def unexpanded_matrix_products(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite ``bmm(x [B,M,K], expand(w [K,N], [B,K,N]))`` (the expand maybe viewed) as ``mm(x [B*M,K], w)``
    viewed as [B,M,N].

    ``matmul`` of a 3-D tensor and a matrix takes that form when the tensor is not contiguous (torchvision's
    attention projects its tokens transposed, [T,N,D]): free in PyTorch, where the expand is a view, but
    onnxruntime materializes it, 1.4 GB per projection of ViT-B/16, 18 GB for a call at N=1. The reshape copies
    x instead, a few hundred kB."""
    graph = gm.graph
    for bmm in list(graph.nodes):
        if bmm.target is not aten.bmm.default:
            continue
        x, matrix = bmm.args[0], _expanded_matrix(bmm.args[1])
        if matrix is None:
            continue
        inner = int(_value(matrix).shape[0])
        with graph.inserting_before(bmm):
            sizes = [size if isinstance(size, int) else graph.call_function(aten.sym_size.int, (x, dim))
                     for dim, size in enumerate(_value(x).shape[:2])] + [int(_value(matrix).shape[1])]
            flat = graph.call_function(aten.reshape.default, (x, [-1, inner]))
            product = graph.call_function(aten.mm.default, (flat, matrix))
            out = graph.call_function(aten.reshape.default, (product, sizes))
        out.meta["val"] = bmm.meta.get("val")
        bmm.replace_all_uses_with(out)
        graph.erase_node(bmm)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)


def _expanded_matrix(operand):
    """The matrix [K,N] a bmm operand is (through a view) expanded from over its batch, else None."""
    if isinstance(operand, torch.fx.Node) and operand.target in _VIEWS:
        operand = operand.args[0]
    if isinstance(operand, torch.fx.Node) and operand.target is aten.expand.default:
        source = operand.args[0]
        return source if isinstance(source, torch.fx.Node) and _value(source).dim() == 2 else None
    return None


def check_no_backward_ops(gm: torch.fx.GraphModule) -> None:
    left = sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "backward" in str(n.target)})
    if left:
        raise NotImplementedError(f"no forward-op rewrite for {', '.join(left)}")


def created_on_the_input_device(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Tensors the graph creates (the zeros a ReLU mask selects, a one-hot's base) on the image's device.

    Traced on the CPU, each factory call records ``device=cpu``; a TorchScript or eager graph moved to a GPU
    would then mix CPU and CUDA tensors. Reading the device from the input keeps one file for every device
    (torch.export, for ONNX and AOTInductor, turns it back into the device it compiles for)."""
    image = next(node for node in gm.graph.nodes if node.op == "placeholder")
    with gm.graph.inserting_after(image):
        device = gm.graph.call_function(getattr, (image, "device"))
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and isinstance(node.kwargs.get("device"), torch.device):
            node.update_kwarg("device", device)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm
