"""Turn what users hold (paths, PIL images, uint8 arrays, tensors) into a preprocessed batch."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T

from .errors import SalrtError
from .models import Preprocessing

ImageLike = Union[str, Path, Image.Image, np.ndarray]


def open_image(source: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an HWC uint8 array; SalrtError for anything else."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (3, 4)):
            raise SalrtError(f"expected an HxW or HxWx3 uint8 array, got {source.dtype} {tuple(source.shape)}")
        return Image.fromarray(source).convert("RGB")
    if isinstance(source, (str, Path)):
        return _read_image_file(Path(source))
    raise SalrtError(f"cannot read an image from {type(source).__name__}")


def _read_image_file(path: Path) -> Image.Image:
    if not path.is_file():
        raise SalrtError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not halfway through a batch
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise SalrtError(f"{path}: not a readable image ({err.__class__.__name__})") from None


def _resize_and_crop(p: Preprocessing) -> T.Compose:
    interpolation = T.InterpolationMode(p.interpolation)
    return T.Compose([T.Resize(p.resize, interpolation=interpolation, antialias=True), T.CenterCrop(p.crop)])


def displayed_image(image: Image.Image, p: Preprocessing) -> Image.Image:
    """The image as the model sees it, before normalization: what a saliency overlay is drawn on."""
    return _resize_and_crop(p)(image)


def to_batch(images: Iterable[Image.Image], p: Preprocessing) -> torch.Tensor:
    transform = T.Compose([_resize_and_crop(p), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                           T.Normalize(p.mean, p.std)])
    return torch.stack([transform(image) for image in images])
