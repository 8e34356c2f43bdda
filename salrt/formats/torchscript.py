"""TorchScript (``model.pt``): loads with plain ``torch.jit.load``, on CPU or CUDA, no salrt needed."""
from __future__ import annotations

import contextlib
import copy
import operator
import warnings
from pathlib import Path

import torch

from .. import _torch
from ..errors import ArtifactError

aten = torch.ops.aten
_PYTHON_OPS = (operator.getitem, operator.mul, operator.add, operator.sub, operator.floordiv, getattr)  # getattr: .device


@contextlib.contextmanager
def _deprecation_silenced():
    # TorchScript is deprecated in torch 2.14 yet still the most portable format; the warning is not the
    # user's concern. Errors still raise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated.*")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*instance-level annotations.*")
        yield


def _scriptable(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Call ops by overload packet and sizes through ``aten::size``: the forms TorchScript can compile."""
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is aten.sym_size.int:
            node.target = aten.size
        elif _torch.overload_packet(node.target) is not None:
            node.target = _torch.overload_packet(node.target)
        elif node.target not in _PYTHON_OPS:
            raise NotImplementedError(f"TorchScript cannot compile {node.target} in the saliency graph")
    gm.recompile()
    return gm


_WEIGHT_LAYOUT_OPS = (aten.transpose.int, aten.reshape.default, aten.flip.default)


def _contiguous_direct_weights(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Store each direct input-gradient weight (``passes._direct_weight``'s ops on a constant) as a
    contiguous constant of its own, as before that pass wrote them as ops.

    ``torch.jit.freeze`` would fold the flips into new constants anyway, but the 1x1 transposes into strided
    views of the forward weight, which oneDNN copies on every call (+14% at N=1 on ResNet-50). So model.pt
    keeps the second copy that model.onnx and model.pt2 no longer store.
    """
    for node in list(gm.graph.nodes):
        if node.target not in _WEIGHT_LAYOUT_OPS or any(user.target in _WEIGHT_LAYOUT_OPS for user in node.users):
            continue  # not the last op of a chain
        chain, source = [node], node.args[0]
        while source.op == "call_function" and source.target in _WEIGHT_LAYOUT_OPS:
            chain.append(source)
            source = source.args[0]
        if source.op != "get_attr" or any(isinstance(a, torch.fx.Node) for op in chain for a in op.args[1:]):
            continue  # not a chain of constant layout ops on a constant
        value = getattr(gm, source.target)
        for op in reversed(chain):
            value = op.target(value, *op.args[1:])
        name = f"{node.name}_direct_weight"
        gm.register_buffer(name, value.contiguous())
        with gm.graph.inserting_before(node):
            node.replace_all_uses_with(gm.graph.get_attr(name))
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def to_torchscript(gm: torch.fx.GraphModule) -> torch.jit.ScriptModule:
    with _deprecation_silenced():
        scripted = torch.jit.script(_scriptable(_contiguous_direct_weights(copy.deepcopy(gm))))
        return torch.jit.freeze(scripted.eval())


def write(graph: torch.fx.GraphModule, path: Path, description: dict) -> dict:
    to_torchscript(graph).save(str(path))
    return {"loads_with": "torch.jit.load (torch only)"}


def load(path: Path, device: torch.device, spin_wait: bool = True):
    try:
        with _deprecation_silenced():
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as err:
        raise ArtifactError(f"torch cannot load {path}: {str(err).splitlines()[0]}") from None

    def run(*inputs: torch.Tensor):
        # The graph holds its own backward pass. no_grad, not inference_mode: the outputs stay ordinary
        # tensors that callers may feed into autograd code of their own.
        with torch.no_grad():
            return module(*inputs)
    return run
