"""Explain image files and write their heatmaps: the work behind ``salrt explain``."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from .errors import InputError
from .formats import AUTO
from .graph import Method
from .images import decode, displayed_image, read_file
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
                  output: Callable[[str], None] = print, server: Optional[str] = None,
                  method: Optional[Method] = None, **model_options) -> list[Path]:
    """Writes NAME_saliency.png and NAME_overlay.png for each image and passes each image's top-5 line to
    ``output``; returns the files written. With ``server`` (host:port of ``salrt serve``), ``source`` is the
    served model's name and the server computes the maps from the encoded files. ``model_options``: for a
    model source, as ``salrt.load`` takes them (categories, preprocessing, channels, image_size).

    Every image is read before anything is computed or written, so a bad file fails the run up front.
    """
    encoded = [read_file(path) for path in paths]
    images = [decode(io.BytesIO(data), str(path)) for data, path in zip(encoded, paths)]
    if server:
        from .server.client import RemoteExplainer
        remote = RemoteExplainer(server, source)
        explain, preprocessing = lambda rows: remote.explain(encoded[rows], target), remote.preprocessing
    else:
        explainer = load(source, backend=backend, device=device, weights=weights, method=method, **model_options)
        explain, preprocessing = lambda rows: explainer.explain(images[rows], target=target), explainer.preprocessing
    _writable(out_dir)
    written = []
    bar = tqdm(range(0, len(images), batch_size), desc="explaining", unit="batch", disable=len(images) <= 1,
               leave=False)
    say = output if bar.disable else bar.write  # lines printed above the bar, not through it
    for start in bar:
        rows = slice(start, start + batch_size)
        result = explain(rows)
        for path, image, saliency, top in zip(paths[rows], images[rows], result.saliency, result.top(5)):
            shown = displayed_image(image, preprocessing)
            for kind, picture in (("saliency", heatmap(saliency)), ("overlay", overlay(shown, saliency))):
                file = out_dir / f"{path.stem}_{kind}.png"
                picture.save(file)
                written.append(file)
            say(f"{path.name}: " + ", ".join(f"{name} {p:.3f}" for _, name, p in top))
    return written
