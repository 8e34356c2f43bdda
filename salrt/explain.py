"""Explain image files and write their heatmaps: the work behind ``salrt explain``."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from .errors import InputError
from .formats import AUTO
from .images import displayed_image, open_image
from .render import heatmap, overlay
from .runtime import load


def _writable(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as err:
        raise InputError(f"cannot write to {out_dir}: {err.strerror}") from None
    return out_dir


def explain_files(source: str, paths: list[Path], out_dir: Path, target: Optional[int] = None,
                  backend: str = AUTO, device: str = "cpu", weights: str = "default", batch_size: int = 8,
                  output: Callable[[str], None] = print) -> list[Path]:
    """Writes NAME_saliency.png and NAME_overlay.png for each image and passes each image's top-5 line to
    ``output``; returns the files written.

    Every image is read before anything is computed or written, so a bad file fails the run up front.
    """
    images = [open_image(path) for path in paths]
    explainer = load(source, backend=backend, device=device, weights=weights)
    _writable(out_dir)
    written = []
    bar = tqdm(range(0, len(images), batch_size), desc="explaining", unit="batch", disable=len(images) <= 1,
               leave=False)
    say = output if bar.disable else bar.write  # lines printed above the bar, not through it
    for start in bar:
        chunk = images[start:start + batch_size]
        result = explainer.explain(chunk, target=target)
        for path, image, saliency, top in zip(paths[start:], chunk, result.saliency, result.top(5)):
            shown = displayed_image(image, explainer.preprocessing)
            for kind, picture in (("saliency", heatmap(saliency)), ("overlay", overlay(shown, saliency))):
                file = out_dir / f"{path.stem}_{kind}.png"
                picture.save(file)
                written.append(file)
            say(f"{path.name}: " + ", ".join(f"{name} {p:.3f}" for _, name, p in top))
    return written
