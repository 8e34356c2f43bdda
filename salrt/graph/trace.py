"""Trace a model into an aten FX graph with a symbolic batch and its weights as graph constants."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import _torch
from .io import BASE_INPUTS, input_specs

TRACE_BATCH = 2  # sizes 0 and 1 would be specialized by the tracer


def example_inputs(image_shape: Sequence[int], inputs: Sequence[str] = BASE_INPUTS) -> tuple[torch.Tensor, ...]:
    """Fake graph inputs (image [N, C, H, W], target [N], a task's) whose batch is one shared symbol: no example
    values get baked in."""
    return _torch.symbolic_batch_inputs(*(((TRACE_BATCH, *shape), getattr(torch, dtype))
                                          for shape, dtype in input_specs(image_shape, inputs)))


def add_constant(gm: torch.fx.GraphModule, value: torch.Tensor, name: str) -> torch.fx.Node:
    """Register ``value`` as a buffer of ``gm`` and return a node reading it (insert point: the caller's)."""
    gm.register_buffer(name, value.detach().contiguous())
    return gm.graph.get_attr(name)


def trace_with_constant_weights(module: torch.nn.Module, fn, inputs: tuple, decompositions: dict) -> torch.fx.GraphModule:
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
    fake_state = [_torch.fake_like(inputs[0], state[name]) for name in names]
    gm = _torch.trace(with_state, decompositions, *inputs, *fake_state)
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"][len(inputs):]
    for node, name in zip(placeholders, names):
        with gm.graph.inserting_before(node):
            node.replace_all_uses_with(add_constant(gm, state[name], name.replace(".", "_")))
        gm.graph.erase_node(node)
    gm.recompile()
    return gm


def exported_program(graph: torch.fx.GraphModule, image_shape: Sequence[int], batch: Optional[int] = None,
                     device: torch.device = torch.device("cpu"), inputs: Sequence[str] = BASE_INPUTS
                     ) -> torch.export.ExportedProgram:
    """The graph (its constants on ``device``) as a torch.export program (what the ONNX and AOTI writers take)
    for [N, *image_shape] images (and the other ``inputs``) on ``device``: with a dynamic batch, or specialized
    to a fixed ``batch``."""
    n = batch or TRACE_BATCH
    examples = tuple(torch.full((n, *shape), -1, dtype=getattr(torch, dtype), device=device)
                     for shape, dtype in input_specs(image_shape, inputs))
    if batch is not None:
        return torch.export.export(graph, examples)
    dynamic = torch.export.Dim("N", min=1, max=65536)
    return torch.export.export(graph, examples, dynamic_shapes=tuple({0: dynamic} for _ in examples))
