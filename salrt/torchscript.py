"""The saliency graph as a TorchScript module (``model.pt``), loadable with plain ``torch.jit.load``."""
from __future__ import annotations

import copy
import operator
import warnings

import torch

aten = torch.ops.aten
_OUTPUT_NAMES = ("logits", "used_target", "saliency", "grad")


def _scriptable(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Call ops by overload packet and sizes through ``aten::size``: the forms TorchScript can compile."""
    gm = copy.deepcopy(gm)
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is aten.sym_size.int:
            node.target = aten.size
        elif isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
        elif node.target not in (operator.getitem, operator.mul, operator.add, operator.sub, operator.floordiv):
            raise NotImplementedError(f"TorchScript cannot compile {node.target} in the saliency graph")
    gm.recompile()
    return gm


def to_torchscript(gm: torch.fx.GraphModule) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch 2.14 yet still the most portable format; the warning is not
        # the user's concern. Errors still raise.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated.*")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*instance-level annotations.*")
        scripted = torch.jit.script(_scriptable(gm))
        return torch.jit.freeze(scripted.eval())


def write_torchscript(graph: torch.fx.GraphModule, path, description: dict) -> dict:
    to_torchscript(graph).save(str(path))
    return {"loads_with": "torch.jit.load (torch only)"}
