"""``make demo``: export the offline pretrained model, explain bundled photos, write heatmaps."""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from .errors import SalrtError
from .explain import explain_files
from .artifact import export
from .evaluate import evaluate, parse_methods
from .render import contact_sheet, labelled

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def write_photos(directory: Path) -> list[Path]:
    """scikit-image ships these photographs inside its wheel: no download."""
    from skimage import data
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS:
        path = directory / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=95)
        paths.append(path)
    return paths


def _export_resnet50(out: Path) -> Path:
    try:
        return export("resnet50", out / "resnet50", weights="default", progress=_progress)
    except SalrtError as err:
        print(f"  {err}\n  so resnet50 is exported with --weights random instead: its maps show the pipeline "
              "working, not a trained model's evidence.")
        return export("resnet50", out / "resnet50-random", weights="random", progress=_progress)


def _progress(message: str) -> None:
    print(f"  {message}")


def _summary(maps: Path, photos: list[Path], path: Path, model: str) -> None:
    """One picture per model: each photo's saliency heatmap and overlay side by side, labelled."""
    rows = [[labelled(Image.open(maps / f"{photo.stem}_{kind}.png"), f"{model}: {photo.name}, {kind}")
             for kind in ("saliency", "overlay")] for photo in photos]
    contact_sheet(rows).save(path)


def main(out: Path) -> None:
    photos = write_photos(out / "photos")
    print("efficientnet_lite0 (ImageNet-pretrained, shipped on PyPI):")
    artifacts = [export("efficientnet_lite0", out / "efficientnet_lite0", formats=["torchscript", "onnx"],
                        progress=_progress)]
    print("resnet50:")
    artifacts.append(_export_resnet50(out))
    for artifact in artifacts:
        print(f"{artifact.name}:")
        maps = out / f"{artifact.name}-maps"
        explain_files(str(artifact), photos, maps)
        _summary(maps, photos, out / f"{artifact.name}-summary.png", artifact.name)
    print("every method side by side (efficientnet_lite0):")
    evaluate("efficientnet_lite0", photos, parse_methods("all"), metrics=(), out_dir=out / "methods")
    print(f"heatmaps and overlays: {out}/*-maps/; one picture per model: {out}/*-summary.png; "
          f"methods: {out}/methods/methods.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out"))
