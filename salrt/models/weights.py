"""Weights: seeded random initialisation and checkpoints of the user's (state dicts, safetensors)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError

RANDOM_INIT_SEED = 0  # --weights random: the same weights on every run and machine
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # where training scripts nest the weights


def seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


def read_checkpoint(path: str) -> dict:
    """A state dict from a .safetensors file or a torch.save'd one (possibly nested under 'state_dict')."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--weights {path!r} is neither 'default', 'random' nor an existing file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(file))
    state = torch.load(file, map_location="cpu", weights_only=True)
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def load_state_dict(module: torch.nn.Module, path: str, name: str) -> None:
    try:
        module.load_state_dict(read_checkpoint(path), strict=True)
    except InputError:
        raise
    except Exception as err:  # pickle, zip, safetensors and key-mismatch errors all mean "not this model's weights"
        raise InputError(f"{path} is not a state dict for {name}: {str(err).splitlines()[0][:300]}") from None


def zero_matrices_randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Give weight matrices initialised to zero (torchvision's ViT head, timm's MLP-Mixer head) small random
    values: with a zero head every logit is constant and every input gradient zero, which tests and demos
    cannot use."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() >= 2 and not parameter.any():
                torch.nn.init.normal_(parameter, std=0.02)
    return module
