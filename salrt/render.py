"""Saliency maps as pictures: a colour heatmap and a heatmap blended over the input.

Gradient maps are sparse: a few pixels reach 1 and most sit near 0, so a linear colour scale shows a
black square. For display only, values are scaled so the 99th percentile is full colour.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

COLORMAP = "inferno"
DISPLAY_PERCENTILE = 99.0


def _display_scale(saliency: torch.Tensor) -> np.ndarray:
    values = saliency.detach().float().cpu().clamp(0, 1).numpy()
    top = np.percentile(values, DISPLAY_PERCENTILE)
    return np.clip(values / top, 0, 1) if top > 0 else values


def heatmap(saliency: torch.Tensor) -> Image.Image:
    """An [H, W] map in [0, 1] as an RGB image."""
    rgb = colormaps[COLORMAP](_display_scale(saliency))[..., :3]
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def overlay(image: Image.Image, saliency: torch.Tensor) -> Image.Image:
    """The heatmap over ``image`` (already cropped to the map's size), opaque where saliency is high."""
    weight = _display_scale(saliency)[..., None] * 0.85
    photo = np.asarray(image.convert("RGB").resize(saliency.shape[::-1]), dtype=np.float32)
    heat = np.asarray(heatmap(saliency), dtype=np.float32)
    return Image.fromarray((photo * (1 - weight) + heat * weight).round().astype(np.uint8))


def outlined(image: Image.Image, region: torch.Tensor, colour=(0, 255, 255)) -> Image.Image:
    """``image`` with the border of a region (an [h, w] mask at any grid, scaled to the image) drawn over it:
    what a segmentation explanation explained."""
    mask = _scaled_mask(region, image.size)
    inside = np.pad(mask, 1, mode="edge")
    border = mask & ~(inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
    pixels = np.array(image.convert("RGB"))
    pixels[border] = colour
    return Image.fromarray(pixels)


LEGEND_CLASSES = 3  # the most predicted classes named on a segmentation panel


def segmentation(predicted: torch.Tensor, size: tuple[int, int], categories) -> Image.Image:
    """An [h, w] map of class indices as an RGB image of ``size`` (W, H): a colour per class (tab20's, cycled),
    nearest-resized so the classes' borders stay sharp, the most predicted classes named in its bottom corner."""
    palette = (np.asarray(colormaps["tab20"].colors) * 255).round().astype(np.uint8)
    classes = predicted.detach().cpu().numpy()
    picture = Image.fromarray(palette[classes % len(palette)]).resize(size, Image.NEAREST)
    found, counts = np.unique(classes, return_counts=True)
    named = found[np.argsort(-counts)][:LEGEND_CLASSES]
    draw, line = ImageDraw.Draw(picture), 12
    top = picture.height - line * len(named) - 2
    draw.rectangle([0, top, max(draw.textlength(categories[c]) for c in named) + 14, picture.height], fill="white")
    for row, c in enumerate(named):
        y = top + 2 + row * line
        draw.rectangle([2, y + 1, 9, y + 8], fill=tuple(int(v) for v in palette[c % len(palette)]))
        draw.text((12, y - 1), categories[c], fill="black")
    return picture


def beside(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two pictures of one height side by side, a white gap between them."""
    return contact_sheet([[left, right]])


def boxed(image: Image.Image, box: torch.Tensor, size, colour=(0, 255, 255)) -> Image.Image:
    """``image`` with a box (x0, y0, x1, y1 in pixels of an input of ``size`` (H, W)) drawn over it: what a
    detection explanation explained."""
    scale = (image.width / size[1], image.height / size[0]) * 2
    picture = image.convert("RGB")
    ImageDraw.Draw(picture).rectangle([v * s for v, s in zip(box.tolist(), scale)], outline=colour, width=2)
    return picture


def _scaled_mask(region: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    scaled = torch.nn.functional.interpolate((region.detach().float().cpu() > 0).float()[None, None],
                                             size=size[::-1], mode="nearest")
    return scaled[0, 0].numpy() > 0


def contact_sheet(rows: list[list[Image.Image]], gap: int = 4) -> Image.Image:
    """Images laid out in a grid, one list per row, on white."""
    width = max(sum(image.width for image in row) + gap * (len(row) - 1) for row in rows)
    height = sum(max(image.height for image in row) for row in rows) + gap * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    for row in rows:
        x = 0
        for image in row:
            sheet.paste(image, (x, y))
            x += image.width + gap
        y += max(image.height for image in row) + gap
    return sheet


def labelled(picture: Image.Image, text: str) -> Image.Image:
    """``picture`` under a white strip holding ``text`` (one or more lines)."""
    strip = 14 * (text.count("\n") + 1) + 4
    result = Image.new("RGB", (picture.width, picture.height + strip), "white")
    result.paste(picture, (0, strip))
    ImageDraw.Draw(result).multiline_text((3, 2), text, fill="black", spacing=2)
    return result
