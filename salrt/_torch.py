"""Every private or unstable torch API salrt relies on, behind one small interface.

The graph builder needs parts of torch that carry no stability promise: fake tensors with a symbolic
batch, ``make_fx``, the decomposition registry, op schemas, AOTInductor. They are all reached from
here and nowhere else, and ``tests/test_torch_shims.py`` checks each shim on its own: a torch release
that changes one of them fails one named test instead of building a silently wrong graph.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from typing import Any, Callable

import torch
from torch._decomp import get_decompositions
from torch._decomp.decompositions import upsample_compute_output_size
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing, make_fx
from torch.overrides import TorchFunctionMode
from torch.fx.experimental.symbolic_shapes import (DimDynamic, ShapeEnv, StatelessSymbolicContext,
                                                   statically_known_true)

OpOverload = torch._ops.OpOverload


def symbolic_batch_inputs(*specs: tuple[tuple[int, ...], torch.dtype]) -> tuple[torch.Tensor, ...]:
    """Fake tensors of the given (shape, dtype) whose first dimension is one shared symbolic size."""
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    tensors = []
    for shape, dtype in specs:
        dynamic = [DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (len(shape) - 1)
        tensors.append(mode.from_tensor(torch.zeros(shape, dtype=dtype),
                                        symbolic_context=StatelessSymbolicContext(dynamic_sizes=dynamic)))
    for other in tensors[1:]:
        torch._check(other.shape[0] == tensors[0].shape[0])  # one batch size, not two unrelated symbols
    return tuple(tensors)


def fake_like(reference: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a fake tensor in the same fake mode as ``reference`` (a fake tensor), with static sizes.

    Only the batch is symbolic. Left to the shape environment, every weight dimension would get a symbol of
    its own: sizes the architecture fixes become sympy expressions (Swin's window arithmetic grew past 13
    minutes of ``simplify``; a symbolic ``%`` TorchScript cannot compile; ops that need concrete sizes fail).
    """
    return reference.fake_mode.from_tensor(tensor, static_shapes=True)


def known_equal(a, b) -> bool:
    """True when ``a == b`` holds for every value of the symbols involved (False when unknown)."""
    return statically_known_true(a == b)


def trace(fn: Callable, decompositions: dict, *inputs) -> torch.fx.GraphModule:
    """``make_fx`` of ``fn`` into aten ops, with real tensors (weights) allowed next to fake inputs.

    The inputs' fake mode is active while tracing, so a tensor that ``fn`` creates from sizes alone
    (``torch.zeros(x.shape)``: EdgeNeXt's position encoding) is fake too, with the symbolic batch. Outside
    it, the factory would run the real CPU kernel, which takes no symbolic sizes.
    """
    mode = detect_fake_mode(inputs)
    with mode if mode is not None else contextlib.nullcontext(), _SymbolicResampling(), _transformers_uncached():
        gm = make_fx(fn, decomposition_table=decompositions, _allow_non_fake_inputs=True)(*inputs)
    if mode is not None and mode.shape_env is not None:
        _refuse_a_fixed_batch(mode.shape_env, inputs[0])
    return gm


def _refuse_a_fixed_batch(shape_env: ShapeEnv, first: torch.Tensor) -> None:
    """An error naming the model's line where tracing fixed the symbolic batch to the example's size (Python
    code that reads it as an int: ``len(x)``, ``int(x.shape[0])``): such a graph runs for that batch only."""
    fixed = shape_env.replace(first.shape[0].node.expr) if isinstance(first.shape[0], torch.SymInt) else None
    if fixed is None or not fixed.is_number:
        return
    pinned = (guard for guard in shape_env.guards if str(guard.expr).startswith("Eq(") and
              str(guard.expr).endswith(f", {fixed})"))
    where = next((str(guard.sloc).strip("()") for guard in pinned), "where is unknown")
    raise NotImplementedError(f"the model fixes the batch size while it is traced ({where}: Python code reading a "
                              "batch-sized tensor's length as an int, e.g. len(x)), so no graph of it takes any batch")


@contextlib.contextmanager
def _transformers_uncached():
    """transformers memoizes some functions of shapes (DETR's position embeddings, ``lru_cache``) unless it
    believes torch.compile is tracing, and a symbolic batch size cannot be hashed: while salrt traces, its
    ``compile_compatible_method_lru_cache`` is told so (other threads' calls then just skip the cache)."""
    module = sys.modules.get("transformers.pytorch_utils")
    if module is None or not hasattr(module, "is_torchdynamo_compiling"):
        yield
        return
    original = module.is_torchdynamo_compiling
    module.is_torchdynamo_compiling = lambda: True
    try:
        yield
    finally:
        module.is_torchdynamo_compiling = original


class _SymbolicResampling(TorchFunctionMode):
    """Resampling made traceable: ``F.grid_sample`` as gathers (``grid_sample``); and ``F.interpolate``, which calls aten's ``.vec`` overloads, some of whose C++ composite kernels read the input's
    sizes as plain integers: the symbolic batch is then specialized to the example's (timm's HRNet, nearest
    by a scale, and CrossViT, bicubic to a size, exported for N == 2 only). While tracing, such a call is made
    here instead: the output size computed from the symbolic sizes (as PyTorch's own decomposition does),
    then the ``.default`` overload, which takes SymInt sizes and is the op salrt's backward rewrites know. A
    mode sees ``F.interpolate`` itself, not the aten call inside it, so that is the call taken over; anything
    it does not map (area, a mode that does not fit the rank) runs as ``F.interpolate`` does."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.interpolate:
            call = _INTERPOLATE.bind(*args, **kwargs)
            call.apply_defaults()
            if resampling_op(call.arguments) is not None:
                return interpolate(**call.arguments)
        if func is torch.nn.functional.grid_sample:
            call = _GRID_SAMPLE.bind(*args, **kwargs)
            call.apply_defaults()
            if call.arguments["input"].dim() == 4:
                return grid_sample(**call.arguments)
        return func(*args, **kwargs)


_GRID_SAMPLE = inspect.signature(torch.nn.functional.grid_sample)
_GRID_MODES = {"bilinear": 0, "nearest": 1, "bicubic": 2}
_GRID_PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """2-D ``F.grid_sample`` as PyTorch's own decomposition writes it: gathers and arithmetic, whose gradients
    (scatter-adds) every format runs. Autograd records ``grid_sampler_2d`` otherwise, and its backward op has
    no decomposition (Deformable DETR's and RT-DETR's deformable attention samples so)."""
    from torch._decomp.decompositions import _grid_sampler_2d
    return _grid_sampler_2d(input, grid, _GRID_MODES[mode], _GRID_PADDINGS[padding_mode], bool(align_corners))


_INTERPOLATE = inspect.signature(torch.nn.functional.interpolate)
# (mode, antialias) -> the aten op of F.interpolate's ("{}": 1, 2 or 3 spatial dimensions) and the rank it takes
_RESAMPLING_OPS = {("nearest", False): ("upsample_nearest{}d", None),
                   ("nearest-exact", False): ("_upsample_nearest_exact{}d", None),
                   ("linear", False): ("upsample_linear1d", 3), ("bilinear", False): ("upsample_bilinear2d", 4),
                   ("bicubic", False): ("upsample_bicubic2d", 4), ("trilinear", False): ("upsample_trilinear3d", 5),
                   ("bilinear", True): ("_upsample_bilinear2d_aa", 4), ("bicubic", True): ("_upsample_bicubic2d_aa", 4)}


def resampling_op(arguments: dict):
    """The aten ``.default`` op that F.interpolate's ``arguments`` resample with; None where F.interpolate
    must run itself (area mode, a rank the mode does not take, align_corners given to a nearest mode)."""
    found = _RESAMPLING_OPS.get((arguments["mode"], bool(arguments["antialias"])))
    image = arguments["input"]
    if found is None or not 3 <= image.dim() <= 5:
        return None
    name, rank = found
    if (rank is None and arguments["align_corners"] is not None) or (rank is not None and image.dim() != rank):
        return None
    return getattr(torch.ops.aten, name.format(image.dim() - 2)).default


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """``F.interpolate`` through aten's ``.default`` overloads, the sizes kept symbolic (``resampling_op``)."""
    op = resampling_op(locals())
    dims = input.dim() - 2
    if size is not None:
        output_size, scales = list(size) if isinstance(size, (list, tuple)) else [size] * dims, None
    else:
        scales = list(scale_factor) if isinstance(scale_factor, (list, tuple)) else [scale_factor] * dims
        output_size = None
        if recompute_scale_factor:  # the scales then only set the size, as in F.interpolate
            output_size = [torch.sym_int(input.shape[2 + i] * scales[i]) for i in range(dims)]
            scales = None
    output_size = upsample_compute_output_size(input.size(), output_size, scales)
    corners = () if mode.startswith("nearest") else (bool(align_corners),)
    return op(input, output_size, *corners, *(scales or [None] * dims))


def outside_trace(fn: Callable, *args):
    """``fn(*args)`` on real tensors, neither traced nor fake, from inside a decomposition: a constant of the
    graph computed at export from sizes the graph fixes (an interpolation matrix, a pooling divisor map).
    The tracer then records the result as one constant rather than the ops that made it."""
    with unset_fake_temporarily(), disable_proxy_modes_tracing():
        return fn(*args)


def torch_decompositions(ops: list) -> dict:
    """PyTorch's own decompositions of ``ops`` (OpOverloadPackets), as a ``make_fx`` table."""
    return get_decompositions(ops)


def _schema_arguments(node: torch.fx.Node) -> list:
    if not isinstance(node.target, OpOverload):
        raise TypeError(f"{node.format_node()} does not call an aten op overload")
    return node.target._schema.arguments


def op_arguments(node: torch.fx.Node) -> dict[str, Any]:
    """The arguments of an aten op call by schema name, defaults filled in (never by position)."""
    values = {}
    for i, argument in enumerate(_schema_arguments(node)):
        if i < len(node.args):
            values[argument.name] = node.args[i]
        elif argument.name in node.kwargs:
            values[argument.name] = node.kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


def set_op_argument(node: torch.fx.Node, name: str, value) -> None:
    """Replace the argument called ``name`` of an aten op call, wherever the call passed it."""
    if name in node.kwargs:
        node.update_kwarg(name, value)
        return
    index = [argument.name for argument in _schema_arguments(node)].index(name)
    if index >= len(node.args):
        node.update_kwarg(name, value)
    else:
        node.update_arg(index, value)


def overload_packet(target):
    """The op packet of an aten overload (``aten.add.Tensor`` -> ``aten.add``), else None."""
    return target.overloadpacket if isinstance(target, OpOverload) else None


@contextlib.contextmanager
def _quiet_cpp_builder():
    # Inductor's C++ build looks for a CUDA toolkit and logs a warning on CPU-only machines.
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def aoti_compile(program: torch.export.ExportedProgram, path: str, freeze: bool = False) -> None:
    """Compile with AOTInductor into a ``.pt2`` package.

    ``freeze``: fold and pre-pack the constant weights for the program's shapes. Inductor freezes only with
    grad disabled (its ``freezing`` option alone does nothing under enabled grad). Frozen packages store
    the folded weights too: on ResNet-50 a dynamic-batch package ran 13% faster at N=1 and 4% at N=8 frozen,
    but grew from 105 to 183 MB.
    """
    grad = contextlib.nullcontext() if not freeze else torch.no_grad()
    with _quiet_cpp_builder(), grad, torch._inductor.config.patch(freezing=freeze):
        torch._inductor.aoti_compile_and_package(program, package_path=path)


def aoti_load(path: str) -> Callable:
    """A ``.pt2`` package written by ``aoti_compile``, as a callable over tensors."""
    return torch._inductor.aoti_load_package(path)
