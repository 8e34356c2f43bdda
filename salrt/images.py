"""Turn what users hold (paths, encoded bytes, PIL images, uint8 arrays) into a preprocessed batch."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import BinaryIO, Iterable, Optional, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T

from .errors import InputError
from .models import Preprocessing

ImageLike = Union[str, Path, bytes, Image.Image, np.ndarray]

# Decoding allocates width x height x 3 bytes before any check of ours could run, so a small PNG that
# claims 20000 x 20000 pixels would take 1.2 GB. Sizes are read from the header and refused first.
MAX_PIXELS_VARIABLE = "SALRT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default warning limit (~89 megapixels)
_MODES = {1: "L", 3: "RGB"}
DRAFT_MARGIN = 2  # a reduced JPEG decode keeps twice the size needed (Image.thumbnail's reducing_gap)


def max_pixels() -> int:
    """The largest image (width x height) salrt decodes: $SALRT_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "")
    try:
        limit = int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        limit = 0
    if limit <= 0:
        raise InputError(f"{MAX_PIXELS_VARIABLE} must be a positive whole number of pixels, got {value!r}")
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # raised by the user on purpose: PIL's own check must not veto it
    return limit


def mode_for(channels: int) -> str:
    """The PIL mode image files are converted to for a model taking ``channels`` channels."""
    if channels not in _MODES:
        raise InputError(f"the model takes {channels} channels; image files give 1 (grayscale) or 3 (RGB): pass "
                         f"a preprocessed float32 [N, {channels}, H, W] tensor to explain() instead")
    return _MODES[channels]


def open_image(source: ImageLike, mode: str = "RGB") -> Image.Image:
    """A PIL image in ``mode`` ("RGB", or "L" for grayscale models) from a path, encoded bytes, a PIL image or an
    HW / HWC uint8 array; InputError otherwise."""
    if isinstance(source, Image.Image):
        return source.convert(mode)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise InputError(f"expected an HxW or HxWx3 uint8 array, got {source.dtype} {tuple(source.shape)}")
        return Image.fromarray(source.squeeze(2) if source.ndim == 3 and source.shape[2] == 1 else source).convert(mode)
    if isinstance(source, (bytes, bytearray)):
        return decode(io.BytesIO(source), "image bytes", mode)
    if isinstance(source, (str, Path)):
        return decode(io.BytesIO(read_file(source)), str(source), mode)
    raise InputError(f"cannot read an image from {type(source).__name__}")


def read_file(path: Union[str, Path]) -> bytes:
    """An image file's encoded bytes; InputError naming the file if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: {err.strerror}") from None


def decode(file: BinaryIO, name: str, mode: str = "RGB") -> Image.Image:
    """Decode an encoded image fully (a truncated file fails here, not halfway through a batch), after
    refusing one whose header promises more than ``max_pixels()`` pixels."""
    return decode_reduced(file, name, mode)[0]


def decode_reduced(file: BinaryIO, name: str, mode: str = "RGB",
                   at_least: Optional[tuple[int, int]] = None) -> tuple[Image.Image, tuple[int, int]]:
    """``decode``, and the image's (width, height) in the file. With ``at_least`` (width, height), a JPEG is
    decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (PIL's ``draft``) where that still leaves
    DRAFT_MARGIN times ``at_least``, as ``Image.thumbnail`` does: several times faster on large photos, the
    pixels differing slightly from a full decode's."""
    limit = max_pixels()  # never below PIL's own limit, so PIL warns about nothing we accept
    try:
        with Image.open(file) as image:
            size = image.size
            _check_size(image.width * image.height, limit, name, f"{image.width}x{image.height} is ")
            if at_least is not None and image.format == "JPEG":
                image.draft(mode, tuple(DRAFT_MARGIN * side for side in at_least))
            image.load()
            return image.convert(mode), size
    except Image.DecompressionBombError as err:  # PIL refuses sizes above twice its own limit while opening
        found = re.search(r"\((\d+) pixels\)", str(err))
        _check_size(int(found.group(1)) if found else limit + 1, limit, name, "")
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{name}: not a readable image ({err.__class__.__name__})") from None


def needed_size(p: Preprocessing) -> tuple[int, int]:
    """The smallest (width, height) an image may have for ``p``'s resize to only shrink it."""
    if isinstance(p.resize, int):
        return p.resize, p.resize  # the short side becomes resize: both sides must reach it
    height, width = p.resize
    return width, height


def _check_size(pixels: int, limit: int, name: str, size: str) -> None:
    if pixels > limit:
        raise InputError(f"{name}: {size}{pixels / 1e6:.0f} megapixels, over the limit of {limit / 1e6:.0f}; "
                         f"to allow it, set {MAX_PIXELS_VARIABLE}={pixels}")


def _resize_and_crop(p: Preprocessing, interpolation: str = "") -> T.Compose:
    interpolation = T.InterpolationMode(interpolation or p.interpolation)
    resize = p.resize if isinstance(p.resize, int) else list(p.resize)  # an int: the short side; [H, W]: exact
    return T.Compose([T.Resize(resize, interpolation=interpolation, antialias=True), T.CenterCrop(list(p.size))])


def displayed_image(image: Image.Image, p: Preprocessing) -> Image.Image:
    """The image as the model sees it, before normalization: what a saliency overlay is drawn on."""
    return _resize_and_crop(p)(image)


def to_batch(images: Iterable[Image.Image], p: Preprocessing) -> torch.Tensor:
    """[N, C, H, W] float32 from PIL images already in the model's mode (``mode_for(p.channels)``)."""
    transform = T.Compose([_resize_and_crop(p), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                           T.Normalize(p.mean, p.std)])
    return torch.stack([transform(image) for image in images])


def region_mask(source: ImageLike, p: Preprocessing) -> torch.Tensor:
    """A region drawn as an image (a mask file: pixels above 0 are in it) as the model's [H, W] float32 0/1 mask,
    resized and cropped as the images are (nearest: a mask stays a mask)."""
    mask = _resize_and_crop(p, "nearest")(open_image(source, "L"))
    return (torch.from_numpy(np.array(mask)) > 0).float()
