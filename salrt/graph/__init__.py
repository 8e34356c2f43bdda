"""The saliency graph: forward pass, input gradient and saliency map as one aten FX graph.

Stage 1 traces the model's forward pass into aten ops (``trace``) and folds eval-mode batch norms into
the convolutions before them (``passes``). Stage 2 traces autograd through that graph with every backward
op written as forward ops (``decompositions``); stride-1 input-gradient convolutions then become ordinary
ones, and strided ones producing few channels (the stem's) ordinary ones over their output phases. The batch is symbolic in both stages, so the graph takes any N; the spatial size is fixed at
export. Weights are graph constants that never require grad. ``saliency`` holds what the graph computes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .decompositions import backward_as_forward_ops, forward_rewrites
from .io import INPUTS, OUTPUTS, as_image_shape, contract, contract_of, image_shape
from .layers import GUIDED_DECOMPOSITIONS
from .methods import METHODS, Method, graph_function, instrumented, method_outputs
from .precision import DEFAULT as DEFAULT_DTYPE, DTYPES, SHIPPED, Scheme, apply_precision, check_dtype
from .passes import (check_no_backward_ops, created_on_the_input_device, direct_input_gradient_convolutions,
                     drop_no_op_restrides, fold_batch_norms, polyphase_narrow_transposed_convolutions,
                     unexpanded_matrix_products)
from .saliency import input_gradient
from .tasks import TASKS, Task
from .trace import example_inputs, exported_program, trace_with_constant_weights

__all__ = ["DEFAULT_DTYPE", "DTYPES", "INPUTS", "METHODS", "Method", "OUTPUTS", "build_saliency_graph", "Scheme", "TASKS", "Task", "contract", "contract_of",
           "exported_program", "image_shape", "input_gradient", "method_outputs", "trace_forward"]


def trace_forward(model: torch.nn.Module, image_shape: Sequence[int], method: Method = Method()) -> torch.fx.GraphModule:
    """The forward pass as ``method`` reads it (resolved): the logits, or for the CAM family and guided methods
    what ``methods.instrumented`` returns (the layers' maps, guided ReLUs)."""
    image, _ = example_inputs(image_shape)
    instrument = instrumented(model, method)
    with instrument.installed():
        return trace_with_constant_weights(model, instrument.run, (image,), forward_rewrites())


def build_saliency_graph(model: torch.nn.Module, image_shape: Sequence[int], method: Method = Method(),
                         mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                         dtype: str = DEFAULT_DTYPE, scheme: Optional[Scheme] = None,
                         task: Task = Task()) -> torch.fx.GraphModule:
    """The joint forward + input-gradient + saliency graph of ``model`` for [N, C, H, W] inputs of
    ``image_shape`` (C, H, W), computing ``method`` (``mean``/``std``: the model's normalization, for the
    black IG baseline; default 0 and 1 per channel) with its heavy ops in ``dtype`` (``precision.SHIPPED``'s
    scheme; ``scheme``: another one, as the dtype benchmark compares them), explaining ``task``'s score (its
    inputs follow image and target). The I/O stays float32."""
    image_shape = as_image_shape(image_shape)
    method = method.check().resolved(model, image_shape)
    forward = unexpanded_matrix_products(fold_batch_norms(drop_no_op_restrides(trace_forward(model, image_shape,
                                                                                             method))))
    inputs = example_inputs(image_shape, task.inputs)
    joint = trace_with_constant_weights(forward, graph_function(method, image_shape, mean, std, task), inputs,
                                        {**backward_as_forward_ops(), **GUIDED_DECOMPOSITIONS})
    check_no_backward_ops(joint)
    joint = polyphase_narrow_transposed_convolutions(direct_input_gradient_convolutions(
        unexpanded_matrix_products(joint)))
    # after the passes above (they match float32 convolutions with constant weights)
    return created_on_the_input_device(apply_precision(joint, scheme or SHIPPED[check_dtype(dtype)]))
