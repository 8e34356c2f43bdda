"""``timm:NAME``: a timm model, with the preprocessing of its ``pretrained_cfg`` and its class names."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..errors import InputError
from .spec import ClassifierSpec, Preprocessing, numbered_categories
from .weights import seeded, zero_matrices_randomized


def _timm():
    try:
        import timm
    except ImportError:
        raise InputError("timm: models need timm: pip install 'salrt[timm]'") from None
    return timm


def load(name: str, weights: str, classes: Optional[int], channels: Optional[int]) -> ClassifierSpec:
    """``weights``: "default" (timm's pretrained weights, from the Hugging Face cache or hub), "random" or a
    checkpoint path (.safetensors or .pth, read by timm's own ``load_checkpoint``). ``classes`` and ``channels``
    build the head and stem a fine-tuned checkpoint has (timm's ``num_classes`` and ``in_chans``)."""
    timm = _timm()
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise InputError(f"timm has no model {name!r} (timm.list_models() lists them)")
    extra = {key: value for key, value in (("num_classes", classes), ("in_chans", channels)) if value}
    if weights == "default":
        module = _pretrained(timm, name, extra)
    else:
        module = seeded(lambda: zero_matrices_randomized(timm.create_model(name, pretrained=False, **extra)))
        if weights != "random":
            _load_checkpoint(timm, module, weights, name)
    return ClassifierSpec(f"timm:{name}", weights, module, preprocessing(timm, module), categories(timm, module))


def _pretrained(timm, name: str, extra: dict):
    try:
        return timm.create_model(name, pretrained=True, **extra)
    except (OSError, RuntimeError, ValueError) as err:  # offline: huggingface_hub raises OSError subclasses
        hub_id = timm.models.get_pretrained_cfg(name.split(".")[0]).hf_hub_id if "." not in name else None
        where = f"https://huggingface.co/{hub_id or 'timm/' + name}"
        raise InputError(f"cannot get timm's pretrained weights for {name} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); offline, download model.safetensors from {where} and "
                         "pass --weights PATH, or use --weights random") from None


def _load_checkpoint(timm, module, path: str, name: str) -> None:
    if not Path(path).is_file():
        raise InputError(f"--weights {path!r} is neither 'default', 'random' nor an existing file")
    try:
        timm.models.load_checkpoint(module, path, strict=True)
    except Exception as err:  # key mismatches, unreadable files
        raise InputError(f"{path} is not a checkpoint for timm:{name}: {str(err).splitlines()[0][:300]}") from None


def preprocessing(timm, module) -> Preprocessing:
    """timm's eval transform (``resolve_data_config``): resize to size / crop_pct, center crop, mean/std."""
    config = timm.data.resolve_data_config({}, model=module)
    channels, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or 1.0
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    square = height == width and config.get("crop_mode", "center") == "center"
    mean, std = tuple(config["mean"]), tuple(config["std"])
    recipe = Preprocessing(resize=scaled[0] if square else scaled, crop=height if height == width else (height, width),
                           mean=mean, std=std, interpolation=config.get("interpolation") or "bilinear")
    actual = getattr(module, "in_chans", None) or channels
    return recipe.with_channels(actual) if actual != recipe.channels else recipe


def categories(timm, module) -> list[str]:
    """ImageNet's names (torchvision's short forms for the 1k classes) where timm knows the subset, else
    numbered names (salrt checks them against the logits)."""
    from . import imagenet_categories
    subset = timm.data.infer_imagenet_subset(module)
    if not subset:
        return numbered_categories(module.num_classes)
    if subset == "imagenet-1k":
        return imagenet_categories()
    info = timm.data.ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]
