"""``make demo``: export the offline pretrained model, explain bundled photos, write heatmaps."""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from .errors import SalrtError
from .explain import explain_files
from .export import export

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
        return export("resnet50", out / "resnet50", weights="default", progress=_say)
    except SalrtError as err:
        print(f"resnet50: torchvision's pretrained weights are not available ({err}).\n"
              "resnet50: exporting with --weights random instead: its maps show the pipeline, not a trained "
              "model's evidence.")
        return export("resnet50", out / "resnet50-random", weights="random", progress=_say)


def _say(message: str) -> None:
    print(f"  {message}")


def main(out: Path) -> None:
    photos = write_photos(out / "photos")
    print("efficientnet_lite0 (ImageNet-pretrained, shipped on PyPI):")
    artifact = export("efficientnet_lite0", out / "efficientnet_lite0", progress=_say)
    explain_files(str(artifact), photos, out / "efficientnet_lite0-maps")
    print("resnet50:")
    artifact = _export_resnet50(out)
    explain_files(str(artifact), photos, out / f"{artifact.name}-maps")
    print(f"heatmaps and overlays are in {out}/*-maps/")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out"))
