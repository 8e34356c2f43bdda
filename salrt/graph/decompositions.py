"""Rewrite the backward ops of an input-gradient graph as forward ops.

Weights are frozen, so every backward op only has to produce the gradient w.r.t. its input. Written as
forward ops (transposed convolution, where, scatter_add, ...), the joint graph traces into TorchScript,
exports to ONNX and compiles with AOTInductor; the aten ``*_backward`` ops do none of these everywhere.
"""
from __future__ import annotations

import torch

from .. import _torch

aten = torch.ops.aten


def _input_grad_only(op_name: str, output_mask) -> None:
    if any(output_mask[1:]):
        raise NotImplementedError(f"{op_name}: salrt computes input gradients only (weights are frozen)")


def convolution_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    """d conv(x, W) / dx as a transposed convolution with the same weights."""
    _input_grad_only("convolution_backward", output_mask)
    # one value may stand for every spatial dimension: conv2d(padding="valid") passes padding=[0]
    stride, padding, dilation, output_padding = (_per_dimension(values, weight.dim() - 2) for values in
                                                 (stride, padding, dilation, output_padding))
    if transposed:
        # The input gradient of a transposed convolution is a plain convolution.
        grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, False,
                                   [0] * len(stride), groups)
        return grad_in, None, None
    # A strided convolution drops trailing rows/cols; output_padding restores the input's size.
    spatial = range(len(stride))
    covered = [(grad_out.shape[2 + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (weight.shape[2 + d] - 1) + 1
               for d in spatial]
    out_pad = [inp.shape[2 + d] - covered[d] for d in spatial]
    grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, True, out_pad, groups)
    return grad_in, None, None


def native_batch_norm_backward(grad_out, inp, weight, running_mean, running_var, save_mean, save_invstd,
                               train, eps, output_mask):
    """Eval-mode batch norm is a per-channel affine map: its input gradient is a per-channel scale."""
    if train:
        raise NotImplementedError("batch norm in training mode: put the model in eval() before export")
    _input_grad_only("native_batch_norm_backward", output_mask)
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shape = [1, -1] + [1] * (inp.dim() - 2)
    return grad_out * scale.reshape(shape), None, None


def _per_dimension(values, dims: int) -> list:
    return list(values) * dims if len(values) == 1 else list(values)


def max_pool2d_with_indices_backward(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """Route each output gradient back to the input position its max came from."""
    n, c, h, w = inp.shape
    flat = grad_out.new_zeros((n, c, h * w))
    return flat.scatter_add(2, indices.flatten(2), grad_out.flatten(2)).view(n, c, h, w)


def _adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """[out, in] float64 matrix of adaptive average pooling along one axis: row i averages its window."""
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _separable_transpose(grad_out, rows: torch.Tensor, cols: torch.Tensor):
    """The input gradient of a separable linear map out = R x C^T ([oh, h] rows, [ow, w] cols, constants):
    R^T g C, as 2-D mm on flattened views (batched matmul's decomposition pins the symbolic batch size)."""
    n, c, oh, ow = grad_out.shape
    h, w = rows.shape[1], cols.shape[1]
    rows, cols = rows.to(grad_out.dtype), cols.to(grad_out.dtype)
    along_w = torch.mm(grad_out.reshape(-1, ow), cols).reshape(n, c, oh, w)
    along_h = torch.mm(along_w.transpose(2, 3).reshape(-1, oh), rows)
    return along_h.reshape(n, c, w, h).transpose(2, 3)


def adaptive_avg_pool2d_backward(grad_out, inp):
    """Adaptive pooling is separable and linear, out = P_h x P_w^T, so the input gradient is P_h^T g P_w."""
    h, w = (int(size) for size in inp.shape[-2:])  # fixed at export
    oh, ow = (int(size) for size in grad_out.shape[-2:])
    if (oh, ow) == (h, w):
        return grad_out
    if (oh, ow) == (1, 1):  # global pooling: spread evenly
        return (grad_out / (h * w)).expand(inp.shape)
    rows, cols = (_torch.outside_trace(_adaptive_pool_matrix, i, o) for i, o in ((h, oh), (w, ow)))
    return _separable_transpose(grad_out, rows, cols)


def _resampling_matrices(forward, flags: tuple, in_size, out_size, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """([oh, h], [ow, w]) float64 matrices of a separable resampling op (``forward``: the aten upsample op,
    ``flags``: its arguments between the output size and the scales). Each is the op itself applied to an
    identity along its axis, the other axis 2 -> 2 (an identity for every mode; 1 -> 1 is not: the
    antialiased kernels then repeat the first row): exact for any mode, scale and align_corners, with no copy
    of PyTorch's index arithmetic to drift from it."""
    (h, w), (oh, ow), (scale_h, scale_w) = in_size, out_size, scales
    eye_h = torch.eye(h, dtype=torch.float64).reshape(h, 1, h, 1).expand(h, 1, h, 2).contiguous()
    eye_w = torch.eye(w, dtype=torch.float64).reshape(w, 1, 1, w).expand(w, 1, 2, w).contiguous()
    along_h = forward(eye_h, [oh, 2], *flags, scale_h, None)[:, 0, :, 0]  # [h, oh]
    along_w = forward(eye_w, [2, ow], *flags, None, scale_w)[:, 0, 0, :]  # [w, ow]
    return along_h.T.contiguous(), along_w.T.contiguous()


def _resampling_backward(forward, flag_count: int):
    """The input-gradient rewrite of a 2-D upsample op: linear in its input with sizes fixed at export, so its
    gradient is a product with the transposes of the op's constant matrices."""
    def backward(grad_out, output_size, input_size, *rest):
        flags, scales = tuple(rest[:flag_count]), (list(rest[flag_count:]) + [None, None])[:2]  # scales: optional
        in_size = [int(size) for size in input_size[2:]]
        out_size = [int(size) for size in output_size]
        rows, cols = _torch.outside_trace(_resampling_matrices, forward, flags, in_size, out_size, scales)
        return _separable_transpose(grad_out, rows, cols)
    return backward


def _pool_divisors(in_size: int, out_size: int, kernel: int, stride: int, padding: int,
                   count_include_pad: bool) -> list[int]:
    """Per output position along one axis, how many positions its window counts (as PyTorch's avg_pool2d):
    the window clipped to the padded input, or to the input itself without count_include_pad."""
    counts = []
    for i in range(out_size):
        start = i * stride - padding
        end = min(start + kernel, in_size + padding)
        counts.append(end - start if count_include_pad else min(end, in_size) - max(start, 0))
    return counts


def _avg_pool_constants(channels: int, in_size, out_size, kernel, stride, padding, count_include_pad,
                        divisor_override) -> tuple[torch.Tensor, torch.Tensor]:
    """(the [oh, ow] map of 1 / each output's divisor, the [C, 1, kh, kw] ones kernel), float64."""
    if divisor_override:
        scale = torch.full(tuple(out_size), 1.0 / divisor_override, dtype=torch.float64)
    else:
        rows, cols = (torch.tensor(_pool_divisors(*axis, count_include_pad), dtype=torch.float64)
                      for axis in zip(in_size, out_size, kernel, stride, padding))
        scale = 1.0 / torch.outer(rows, cols)
    reach = [min(k, n + 2 * p) for k, n, p in zip(kernel, in_size, padding)]  # the window within the padded input
    return scale, torch.ones(channels, 1, *reach, dtype=torch.float64)


def avg_pool2d_backward(grad_out, inp, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    """Average pooling is a depthwise convolution with a ones kernel, each output divided by its window's
    count; its input gradient divides the output gradient by the same counts (a constant map: the spatial
    sizes are fixed at export) and runs the transposed convolution. A ceil_mode window past the input adds
    rows the transposed convolution covers beyond it: they are cut off."""
    stride, padding = list(stride or kernel_size), list(padding)
    c = int(inp.shape[1])
    in_size = [int(size) for size in inp.shape[2:]]
    # A window reaches at most the padded input: Hugging Face's EfficientNet pools its 7x7 map with a
    # 1280-wide ceil_mode kernel, whose ones kernel would take 16 GB. The divisors still count the full window.
    kernel = [min(k, n + 2 * p) for k, n, p in zip(kernel_size, in_size, padding)]
    out_size = [int(size) for size in grad_out.shape[2:]]
    scale, ones = _torch.outside_trace(_avg_pool_constants, c, in_size, out_size, list(kernel_size), stride,
                                       padding, count_include_pad, divisor_override)
    covered = [(o - 1) * s - 2 * p + k for o, s, p, k in zip(out_size, stride, padding, kernel)]
    out_pad = [max(n - cov, 0) for n, cov in zip(in_size, covered)]
    grad_in = aten.convolution(grad_out * scale.to(grad_out.dtype), ones.to(grad_out.dtype), None, stride,
                               padding, [1, 1], True, out_pad, c)
    for dim, (n, cov) in enumerate(zip(in_size, covered), 2):
        if cov > n:
            grad_in = grad_in.narrow(dim, 0, n)
    return grad_in


def constant_pad_nd(x, pad, value=0.0):
    """Constant padding as a concatenation: aten's kernel pins a symbolic batch size to the traced one."""
    for i in range(0, len(pad), 2):
        dim = x.dim() - 1 - i // 2
        before, after = pad[i], pad[i + 1]
        x = x.narrow(dim, max(-before, 0), x.shape[dim] - max(-before, 0) - max(-after, 0))
        parts = [x.new_full(_with_size(x.shape, dim, n), value) for n in (before,) if n > 0]
        parts.append(x)
        parts += [x.new_full(_with_size(x.shape, dim, n), value) for n in (after,) if n > 0]
        x = torch.cat(parts, dim) if len(parts) > 1 else x
    return x


def _with_size(shape, dim: int, size: int) -> list:
    return [size if d == dim else s for d, s in enumerate(shape)]


def forward_rewrites() -> dict:
    """Forward ops written with plainer ones: constant padding (aten's kernel specializes the symbolic batch),
    fused CPU attention (whose backward has no forward-op form; the math form's has), and addcmul/addcdiv
    (their meta kernels take no symbolic batch: ConvNeXt V2's GRN)."""
    rewrites = _torch.torch_decompositions([aten._scaled_dot_product_flash_attention_for_cpu,  # matmul + softmax
                                            aten.addcmul, aten.addcdiv])
    rewrites[aten.constant_pad_nd.default] = constant_pad_nd
    return rewrites


_CUSTOM = {
    aten.convolution_backward.default: convolution_backward,
    aten.native_batch_norm_backward.default: native_batch_norm_backward,
    aten.max_pool2d_with_indices_backward.default: max_pool2d_with_indices_backward,
    aten._adaptive_avg_pool2d_backward.default: adaptive_avg_pool2d_backward,
    aten.avg_pool2d_backward.default: avg_pool2d_backward,
    # (forward op, how many of its arguments sit between the output size and the scales: align_corners)
    **{backward: _resampling_backward(forward, flags) for backward, forward, flags in (
        (aten.upsample_nearest2d_backward.default, aten.upsample_nearest2d.default, 0),
        (aten._upsample_nearest_exact2d_backward.default, aten._upsample_nearest_exact2d.default, 0),
        (aten.upsample_bilinear2d_backward.default, aten.upsample_bilinear2d.default, 1),
        (aten.upsample_bicubic2d_backward.default, aten.upsample_bicubic2d.default, 1),
        (aten._upsample_bilinear2d_aa_backward.default, aten._upsample_bilinear2d_aa.default, 1),
        (aten._upsample_bicubic2d_aa_backward.default, aten._upsample_bicubic2d_aa.default, 1))},
}

# PyTorch's own decompositions already write these as pointwise forward ops.
_FROM_TORCH = [
    aten.threshold_backward, aten.hardtanh_backward, aten.hardswish_backward, aten.hardsigmoid_backward,
    aten.silu_backward, aten.sigmoid_backward, aten.tanh_backward, aten.gelu_backward,
    aten.native_layer_norm_backward, aten.native_group_norm_backward, aten._softmax_backward_data, aten.leaky_relu_backward,
    aten.elu_backward, aten.mish_backward, aten.slice_backward, aten.select_backward,
]


def backward_as_forward_ops() -> dict:
    """The decomposition table for ``make_fx`` that leaves no ``*_backward`` op in the graph."""
    table = _torch.torch_decompositions(_FROM_TORCH)
    table.update(_CUSTOM)
    table.update(forward_rewrites())
    return table
