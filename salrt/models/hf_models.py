"""``hf:PATH_OR_ID``: a Hugging Face ``transformers`` image classifier, semantic segmentation model or object
detector, with the preprocessing of its image processor and the class names of ``config.id2label``. Its
forward returns an ``ImageClassifierOutput``, ``SemanticSegmenterOutput`` or a detector's output, which salrt
reads by its ``logits`` (and a detector's ``pred_boxes``)."""
from __future__ import annotations

from typing import Optional

from ..errors import InputError
from .spec import INTERPOLATIONS, ClassifierSpec, Preprocessing
from .weights import load_state_dict, seeded

_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
AUTO_CLASSES = {"classification": "AutoModelForImageClassification",
                "segmentation": "AutoModelForSemanticSegmentation", "detection": "AutoModelForObjectDetection"}
ARCHITECTURE_TASKS = {"segmentation": "ForSemanticSegmentation", "detection": "ForObjectDetection"}  # by class name


def _transformers():
    try:
        import transformers
    except ImportError:
        raise InputError("hf: models need transformers: pip install 'salrt[hf]'") from None
    transformers.logging.disable_progress_bar()  # per-shard bars while loading: noise next to salrt's progress
    return transformers


def load(source: str, weights: str, task: Optional[str] = None) -> ClassifierSpec:
    """``source``: a directory written by ``save_pretrained`` or a hub id (the cache, or the hub when online).
    ``weights``: "default" (the saved or published weights), "random" (the config's architecture, seeded init)
    or a checkpoint path. ``task``: a key of ``AUTO_CLASSES``; default: the config's architecture
    (``...ForSemanticSegmentation``: segmentation, ``...ForObjectDetection``: detection)."""
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        processor = transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"hf:{source}: cannot read its config and image processor ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); give a directory written by save_pretrained "
                         "(config.json and preprocessor_config.json) or a hub id in the cache") from None
    task = task or next((found for found, suffix in ARCHITECTURE_TASKS.items()
                         if any(suffix in name for name in getattr(config, "architectures", None) or ())), None)
    auto = getattr(transformers, AUTO_CLASSES[task or "classification"])
    try:
        module = seeded(lambda: auto.from_config(config)) if weights == "random" else auto.from_pretrained(source)
    except ValueError as err:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
        raise InputError(f"hf:{source}: transformers has no {auto.__name__} for {config.model_type} "
                         f"({str(err).splitlines()[0][:160]})") from None
    if weights not in ("default", "random"):
        load_state_dict(module, weights, f"hf:{source}")
    names = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else []
    return ClassifierSpec(f"hf:{source}", weights, module, preprocessing(processor, config), names, task=task)


def _get(size, key: str) -> Optional[int]:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _interpolation(resample) -> str:
    name = getattr(resample, "value", resample)  # PIL's Resampling or torchvision's InterpolationMode
    name = _PIL_RESAMPLE.get(name, name) if isinstance(name, int) else str(name)
    return name if name in INTERPOLATIONS else "bilinear"


def preprocessing(processor, config) -> Preprocessing:
    """The eval transform an image processor applies: resize (exact or shortest edge, ConvNeXt's crop_pct),
    center crop, rescale (folded into mean/std when it is not 1/255) and normalize."""
    size = getattr(processor, "size", None) or {}
    height, width, shortest = _get(size, "height"), _get(size, "width"), _get(size, "shortest_edge")
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    crop_hw = (_get(crop, "height"), _get(crop, "width")) if crop else None
    if height and width:
        resize, out = (height, width), crop_hw or (height, width)
    elif shortest:
        crop_pct = getattr(processor, "crop_pct", None)
        if crop_pct and shortest < 384:  # ConvNeXt: resize shortest_edge / crop_pct, then crop shortest_edge
            resize, out = int(shortest / crop_pct), (shortest, shortest)
        else:
            resize, out = shortest, crop_hw or (shortest, shortest)
    else:
        side = int(getattr(config, "image_size", 224))
        resize, out = (side, side), (side, side)
    channels = int(getattr(config, "num_channels", 3))
    mean = tuple(processor.image_mean) if getattr(processor, "do_normalize", True) else (0.0,) * channels
    std = tuple(processor.image_std) if getattr(processor, "do_normalize", True) else (1.0,) * channels
    # salrt scales pixels to [0, 1]; another rescale factor r is the same as mean and std divided by 255 r
    factor = getattr(processor, "rescale_factor", 1 / 255) if getattr(processor, "do_rescale", True) else 1.0
    scale = 1 / (255 * factor)
    recipe = Preprocessing(resize=resize, crop=out if out[0] != out[1] else out[0],
                           mean=tuple(m * scale for m in mean), std=tuple(s * scale for s in std),
                           interpolation=_interpolation(getattr(processor, "resample", "bilinear")))
    return recipe.with_channels(channels)
