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


def max_pool2d_with_indices_backward(grad_out, inp, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """Route each output gradient back to the input position its max came from."""
    n, c, h, w = inp.shape
    flat = grad_out.new_zeros((n, c, h * w))
    return flat.scatter_add(2, indices.flatten(2), grad_out.flatten(2)).view(n, c, h, w)


def _adaptive_pool_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """[out, in] matrix of adaptive average pooling along one axis: row i averages its window."""
    matrix = torch.zeros(out_size, in_size, dtype=like.dtype, device=like.device)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d_backward(grad_out, inp):
    """Adaptive pooling is separable and linear, out = P_h x P_w^T, so the input gradient is P_h^T g P_w."""
    h, w = (int(size) for size in inp.shape[-2:])  # fixed at export; aten.zeros takes no symbolic sizes
    oh, ow = (int(size) for size in grad_out.shape[-2:])
    if (oh, ow) == (h, w):
        return grad_out
    if (oh, ow) == (1, 1):  # global pooling: spread evenly
        return (grad_out / (h * w)).expand(inp.shape)
    n, c = inp.shape[:2]
    rows, cols = _adaptive_pool_matrix(h, oh, grad_out), _adaptive_pool_matrix(w, ow, grad_out)
    # 2-D mm on flattened views: batched matmul's decomposition pins the symbolic batch size.
    along_w = torch.mm(grad_out.reshape(-1, ow), cols).reshape(n, c, oh, w)
    along_h = torch.mm(along_w.transpose(2, 3).reshape(-1, oh), rows)
    return along_h.reshape(n, c, w, h).transpose(2, 3)


def avg_pool2d_backward(grad_out, inp, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    """Average pooling is a depthwise convolution with a constant kernel; its input gradient a transposed one."""
    if ceil_mode or (padding != [0, 0] and not count_include_pad):
        raise NotImplementedError("avg_pool2d_backward with ceil_mode or count_include_pad=False")
    kh, kw = kernel_size
    stride = stride or kernel_size
    c = inp.shape[1]
    divisor = divisor_override or kh * kw
    kernel = grad_out.new_full((c, 1, kh, kw), 1.0 / divisor)
    grad_in, _, _ = convolution_backward(grad_out, inp, kernel, None, list(stride), list(padding), [1, 1],
                                         False, [0, 0], c, [True, False, False])
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
    """Forward ops written with plainer ones: constant padding (aten's kernel specializes the symbolic batch)
    and fused CPU attention (whose backward has no forward-op form; the math form's has)."""
    rewrites = _torch.torch_decompositions([aten._scaled_dot_product_flash_attention_for_cpu])  # as matmul + softmax
    rewrites[aten.constant_pad_nd.default] = constant_pad_nd
    return rewrites


_CUSTOM = {
    aten.convolution_backward.default: convolution_backward,
    aten.native_batch_norm_backward.default: native_batch_norm_backward,
    aten.max_pool2d_with_indices_backward.default: max_pool2d_with_indices_backward,
    aten._adaptive_avg_pool2d_backward.default: adaptive_avg_pool2d_backward,
    aten.avg_pool2d_backward.default: avg_pool2d_backward,
}

# PyTorch's own decompositions already write these as pointwise forward ops.
_FROM_TORCH = [
    aten.threshold_backward, aten.hardtanh_backward, aten.hardswish_backward, aten.hardsigmoid_backward,
    aten.silu_backward, aten.sigmoid_backward, aten.tanh_backward, aten.gelu_backward,
    aten.native_layer_norm_backward, aten._softmax_backward_data, aten.leaky_relu_backward,
    aten.elu_backward, aten.mish_backward, aten.slice_backward, aten.select_backward,
]


def backward_as_forward_ops() -> dict:
    """The decomposition table for ``make_fx`` that leaves no ``*_backward`` op in the graph."""
    table = _torch.torch_decompositions(_FROM_TORCH)
    table.update(_CUSTOM)
    table.update(forward_rewrites())
    return table
