"""Reduced precision inside a saliency graph: the one definition of ``--dtype`` (its choices, the scheme each
one runs, which formats run it on which device) that the CLI, the manifest, the docs table and the graph read.

The graph's tensor contract does not change (``io``): ``image`` arrives float32 and ``logits``, ``saliency``
and ``grad`` leave float32. A scheme only changes the *heavy* ops inside — convolutions and matrix products,
forward and input-gradient alike — which run with their tensor inputs cast to the reduced dtype and return
float32 (the kernels accumulate in float32; bf16 x bf16 products are exact in float32). Everything else stays
float32: biases (added after the cast back), normalizations, softmax, GELU, the ReLU masks' comparisons, the
pooling decisions, the gradient's channel max and its normalization.

Which heavy ops a scheme casts is the whole difference between schemes (``SCHEMES``; measured in
benchmarks/bench_dtype.py):

- ``all``: every heavy op, forward and backward (what autocast does to the matmuls).
- ``mid``: all but the stem (the first forward op and the last backward one, which produces ``grad``) and the
  head (the last forward op and the first backward one).
- ``backward``: the backward (input-gradient) ops only. The forward, hence every ReLU mask, max-pool index and
  attention weight, is float32's, so no mask flips; only the linear backward pass is rounded.
- ``forward``: the forward ops only; the backward runs in float32 through bf16-derived masks.

A heavy op is *backward* when it depends on the gradient seed autograd starts from (``ones_like`` of the
score), else *forward*.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import torch

from ..errors import InputError

aten = torch.ops.aten

# tf32: the float32 graph, its convolutions and matrix products on CUDA's TensorFloat-32 tensor cores (10-bit
# mantissa inputs, float32 accumulation): not a rewrite of the graph but a mode its runs are in (``numerics``).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32}
DEFAULT = "fp32"
REGIONS = ("all", "mid", "backward", "forward")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """Which heavy ops of the graph run in ``dtype``: those of ``region`` (see the module's docstring)."""
    name: str
    dtype: torch.dtype
    region: str


SCHEMES = {f"bf16_{region}": Scheme(f"bf16_{region}", torch.bfloat16, region) for region in REGIONS}
# What each --dtype runs (benchmarks/bench_dtype.py measured the candidates): bf16 in the backward only is the
# one whose maps stay at float32's fidelity (ReLU masks decided in float32); see the README's dtype table.
SHIPPED = {"fp32": None, "bf16": SCHEMES["bf16_backward"],
           "fp16": Scheme("fp16_backward", torch.float16, "backward"), "tf32": None}

# Where each dtype runs: {format or "eager": device types}. The one source of the README table and of every
# refusal (measured on this CPU machine, torch 2.14.1 and onnxruntime 1.32; the CUDA entries follow torch's
# CUDA kernels, which run bf16 and fp16, and are not measured here: no GPU):
# - bf16: torch runs it on CPU (fast only with avx512_bf16 / AMX) and CUDA. ONNX's Conv has no bfloat16 type
#   (opset 20: float16, float, double), so the onnx exporter's shape inference refuses the graph.
# - fp16: torch's x86 CPU fp16 matmul runs at under 1 GFLOP/s (2048^2: 62 s on this AVX2 machine), so torch
#   formats run fp16 on CUDA only; onnxruntime's CPU provider runs the fp16 ONNX graph (it computes the
#   fp16 ops it lacks in float32 behind casts of its own).
SUPPORT = {
    "fp32": {"eager": ("cpu", "cuda"), "torchscript": ("cpu", "cuda"), "onnx": ("cpu", "cuda"), "aoti": ("cpu", "cuda"),
             "aoti_n1": ("cpu", "cuda"), "triton": ("cpu", "cuda")},
    "bf16": {"eager": ("cpu", "cuda"), "torchscript": ("cpu", "cuda"), "aoti": ("cpu", "cuda"),
             "aoti_n1": ("cpu", "cuda")},
    "fp16": {"eager": ("cuda",), "torchscript": ("cuda",), "onnx": ("cpu",), "aoti": ("cuda",), "aoti_n1": ("cuda",),
             "triton": ("cpu",)},
    "tf32": {"eager": ("cuda",), "torchscript": ("cuda",), "aoti": ("cuda",), "aoti_n1": ("cuda",)},
}
WHY_NOT = {"bf16": "ONNX's Conv has no bfloat16 type", "fp16": "torch's x86 CPU fp16 kernels run at under 1 GFLOP/s",
           "tf32": "TensorFloat-32 is a mode of CUDA's tensor cores, which salrt sets for torch's kernels only"}


@contextlib.contextmanager
def numerics(dtype: str):
    """The mode a graph of ``dtype`` runs (and AOTInductor compiles) in: TensorFloat-32 for "tf32", else as is."""
    if dtype != "tf32":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return dtype


def formats_for(dtype: str) -> list[str]:
    return [name for name in SUPPORT[check_dtype(dtype)] if name != "eager"]


def check_formats(dtype: str, formats) -> None:
    """InputError naming the formats that run ``dtype`` when one of ``formats`` does not."""
    unsupported = [f for f in formats if f not in SUPPORT[check_dtype(dtype)]]
    if unsupported:
        raise InputError(f"--dtype {dtype} is not supported for format {', '.join(unsupported)} "
                         f"({WHY_NOT[dtype]}); formats that run {dtype}: {', '.join(formats_for(dtype))}")


def check_device(dtype: str, where: str, device_type: str) -> None:
    """InputError when ``where`` (a format or "eager") does not run ``dtype`` on ``device_type``."""
    devices = SUPPORT[check_dtype(dtype)].get(where, ())
    if device_type not in devices:
        hint = f"; {where} runs {dtype} on {', '.join(devices)}" if devices else ""
        raise InputError(f"--dtype {dtype} does not run on {device_type} with {where} ({WHY_NOT[dtype]}){hint}")


def support_table() -> str:
    """The README's "which formats support which dtype" table, from ``SUPPORT``."""
    places = list(SUPPORT[DEFAULT])
    lines = ["| dtype | " + " | ".join(places) + " |", "|---|" + "---|" * len(places)]
    for dtype, support in SUPPORT.items():
        cells = [", ".join(support[p]) if p in support else "no" for p in places]
        lines.append(f"| `{dtype}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the graph pass ---------------------------------------------------------------------------------------------

_HEAVY = (aten.convolution.default, aten.mm.default, aten.addmm.default, aten.bmm.default)
_SEEDS = (aten.ones_like.default,)
_CONSTANT_LAYOUT = (aten.transpose.int, aten.reshape.default, aten.flip.default, aten.t.default, aten.view.default,
                    aten.permute.default)


def apply_precision(gm: torch.fx.GraphModule, scheme: Optional[Scheme], emulate: bool = False) -> torch.fx.GraphModule:
    """Run the heavy ops that ``scheme`` selects with inputs in its dtype and float32 outputs (None: unchanged).

    ``emulate``: round the inputs to the dtype and back, then run the float32 op: the numerics of a
    float32-accumulating reduced-precision kernel, at float32 speed, for measuring a scheme's error where the
    machine's bf16 kernels are too slow to run (AVX2 CPUs). Artifacts never use it.
    """
    if scheme is None:
        return gm
    for node in _selected(gm, scheme.region):
        _cast_heavy(gm, node, scheme.dtype, emulate)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _selected(gm: torch.fx.GraphModule, region: str) -> list[torch.fx.Node]:
    heavy = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in _HEAVY]
    backward = _descendants(gm, [n for n in gm.graph.nodes if n.target in _SEEDS])
    forward_ops = [n for n in heavy if n not in backward]
    backward_ops = [n for n in heavy if n in backward]
    if region == "forward":
        return forward_ops
    if region == "backward":
        return backward_ops
    if region == "all":
        return heavy
    edges = set(_ends(gm, forward_ops)) | set(_ends(gm, backward_ops))
    return [n for n in heavy if n not in edges]


def _descendants(gm: torch.fx.GraphModule, roots: list[torch.fx.Node]) -> set:
    reached = set(roots)
    for node in gm.graph.nodes:  # topological order: a node's inputs come before it
        if any(source in reached for source in node.all_input_nodes):
            reached.add(node)
    return reached


def _ends(gm: torch.fx.GraphModule, ops: list[torch.fx.Node]) -> list[torch.fx.Node]:
    """The ops of ``ops`` with none of them upstream (the stem's) or downstream (the head's)."""
    chosen, nodes = set(ops), list(gm.graph.nodes)
    upstream, downstream = set(), set()  # nodes with one of ``ops`` above / below them
    for node in nodes:
        if any(src in chosen or src in upstream for src in node.all_input_nodes):
            upstream.add(node)
    for node in reversed(nodes):
        if any(user in chosen or user in downstream for user in node.users):
            downstream.add(node)
    return [n for n in ops if n not in upstream or n not in downstream]


def _constant_value(gm: torch.fx.GraphModule, node) -> Optional[torch.Tensor]:
    """The value of a constant (a buffer, or layout ops on one), else None."""
    if not isinstance(node, torch.fx.Node):
        return None
    if node.op == "get_attr":
        return getattr(gm, node.target)
    if node.op == "call_function" and node.target in _CONSTANT_LAYOUT:
        source = _constant_value(gm, node.args[0])
        if source is not None and not any(isinstance(a, torch.fx.Node) for a in node.args[1:]):
            return node.target(source, *node.args[1:])
    return None


# fp16's range (subnormals from 6e-8, max 65504) misses input gradients (1e-16 in a randomly initialised
# EfficientNet-B0) and can overflow activations: its activation operands are scaled into [-1, 1] first.
_SCALED = (torch.float16,)


def _cast_input(gm: torch.fx.GraphModule, value, dtype: torch.dtype, emulate: bool, name: str):
    """(``value`` in ``dtype``, its scale node or None): a constant becomes a new constant of that dtype, stored
    once; an activation gets a cast op (fp16: after division by its largest magnitude)."""
    constant = _constant_value(gm, value)
    if constant is not None:
        cast = constant.to(dtype)
        gm.register_buffer(name, (cast.float() if emulate else cast).contiguous())
        return gm.graph.get_attr(name), None
    graph, scale = gm.graph, None
    if dtype in _SCALED:
        peak = graph.call_function(aten.max.default, (graph.call_function(aten.abs.default, (value,)),))
        scale = graph.call_function(aten.clamp_min.default, (peak, torch.finfo(torch.float32).tiny))
        value = graph.call_function(aten.div.Tensor, (value, scale))
    cast = graph.call_function(aten._to_copy.default, (value,), {"dtype": dtype})
    if emulate:
        cast = graph.call_function(aten._to_copy.default, (cast,), {"dtype": torch.float32})
    return cast, scale


def _cast_heavy(gm: torch.fx.GraphModule, node: torch.fx.Node, dtype: torch.dtype, emulate: bool) -> None:
    """Rewrite one heavy op as: cast inputs, the op without bias, cast to float32, undo the scales, + the
    float32 bias. Every heavy op is linear in each operand, so op(x / s) * s = op(x)."""
    graph, prefix = gm.graph, f"{node.name}_{dtype_name(dtype)}"
    if node.kwargs or (node.target is aten.addmm.default and len(node.args) > 3):
        return  # addmm's alpha/beta, or keyword arguments this pass does not know: left in float32
    with graph.inserting_before(node):
        bias, bias_shape = None, None
        if node.target is aten.convolution.default:
            x, weight, bias, *rest = node.args
            operands, op, bias_shape = (x, weight), aten.convolution.default, [1, -1] + [1] * len(rest[0])
        elif node.target is aten.addmm.default:
            bias, *operands = node.args
            op = aten.mm.default
        else:
            operands, op, rest = node.args, node.target, []
        cast = [_cast_input(gm, v, dtype, emulate, f"{prefix}_{i}") for i, v in enumerate(operands)]
        args = (*(c for c, _ in cast), None, *rest) if op is aten.convolution.default else tuple(c for c, _ in cast)
        out = graph.call_function(op, args)
        if not emulate:
            out = graph.call_function(aten._to_copy.default, (out,), {"dtype": torch.float32})
        for _, scale in cast:
            if scale is not None:
                out = graph.call_function(aten.mul.Tensor, (out, scale))
        if bias is not None:
            if bias_shape is not None:
                bias = graph.call_function(aten.reshape.default, (bias, bias_shape))
            out = graph.call_function(aten.add.Tensor, (out, bias))
    node.replace_all_uses_with(out)
    graph.erase_node(node)


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)
