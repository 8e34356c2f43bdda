"""``salrt evaluate``: how faithful each method's maps are, measured, next to a random ranking.

The metrics (deletion, insertion, model randomization) are in ``metrics``; ``report`` plots them, lays the maps
side by side and writes the Markdown table; ``sources`` reads a model name or an artifact directory.

The source is a model name (every method runs eagerly) or an artifact directory: then its own method's maps
come from the artifact through the runtime, as deployed, while the scoring and the randomized copies run the
model the manifest names in PyTorch (an artifact's weights are frozen into its graph), after a check that the
two agree.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..devices import checked_device
from ..errors import InputError
from ..graph import METHODS, Method, method_outputs
from ..images import mode_for, open_image, to_batch
from .metrics import (METRICS, RANDOM, RANDOMIZATION_CUTS, SCORING_BATCH, Scoring, auc, perturbation_curve,
                      randomization_cuts, saliency_maps, scores, spearman)
from .report import methods_sheet, plot, table
from .sources import SAME_MODEL_TOLERANCE, artifact_maps, resolve

__all__ = ["METRICS", "RANDOM", "RANDOMIZATION_CUTS", "SAME_MODEL_TOLERANCE", "SCORING_BATCH", "Scoring", "auc",
           "evaluate", "parse_methods", "perturbation_curve", "randomization_cuts", "scores", "spearman", "table"]


def evaluate(source: str | Path, paths: list[Path], methods: list[Method] | None = None, metrics=METRICS,
             out_dir: Path = Path("evaluation"), steps: int = 50, randomization_steps: int = RANDOMIZATION_CUTS,
             weights: str = "default", backend: str = "auto", device: str = "cpu") -> dict:
    """Scores ``methods`` on the images with ``metrics``; writes report.json, curves.png, randomization.png and
    methods.png (the maps side by side, labelled) to ``out_dir`` and returns the report.

    ``source`` is a model name (``methods`` default to all, run eagerly with ``weights``) or an artifact
    directory (its own method, run with ``backend``; ``methods``, if given, must be that one). Everything runs
    on ``device``."""
    device = checked_device(device)
    _check_settings(metrics, steps, randomization_steps)
    images = [open_image(path) for path in paths]  # a bad file fails first, before any model loads
    spec, artifact, methods = resolve(source, methods, weights, backend, device)
    if spec.task != "classification":  # its metrics delete and insert pixels against one class probability
        raise InputError(f"salrt evaluate scores classifiers; {spec.name} is a {spec.task} model")
    model = spec.module.eval().to(device)
    p = artifact.preprocessing if artifact else spec.preprocessing
    images = [open_image(image, mode_for(p.channels)) for image in images]  # the model's channels
    batch = to_batch(images, p).to(device)
    with torch.no_grad():
        probabilities = model(batch).softmax(1)
    targets = probabilities.argmax(1)
    report = {"model": spec.name, "weights": spec.weights, "source": str(source), "images": [path.name for path in paths],
              "classes": [spec.categories[int(t)] for t in targets], "steps": steps, "methods": {}}
    scoring = Scoring(model, batch, targets, tuple(metrics), steps, randomization_steps)
    maps = {}
    for method in tqdm(methods, desc="methods", unit="method", leave=False):
        explain = method_outputs(method.check(), p.input_shape, p.mean, p.std)
        if artifact:
            maps[method.name], report["backend"] = artifact_maps(artifact, batch, targets, probabilities)
        else:
            maps[method.name] = saliency_maps(explain, model, batch, targets)
        report["methods"][method.name] = scores(scoring, maps[method.name], explain=explain)
    report["methods"][RANDOM] = scores(scoring, _random_maps(batch.shape[0], p.size, device))
    _write(report, out_dir, images, p, maps, probabilities, targets)
    return report


def _check_settings(metrics, steps: int, randomization_steps: int) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if steps < 1 or randomization_steps < 1:
        raise InputError(f"--steps and the randomization steps must be at least 1, got {steps} and {randomization_steps}")


def _random_maps(count: int, size, device) -> torch.Tensor:
    """The baseline: uniform noise, seeded so that every run ranks the pixels alike."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, *size, generator=generator).to(device)


def _write(report: dict, out_dir: Path, images, p, maps: dict, probabilities, targets) -> None:
    """report.json, the plots and methods.png, only once everything is scored (a refusal leaves no directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    plot(report, out_dir)
    on_cpu = {name: m.cpu() for name, m in maps.items()}
    methods_sheet(images, p, on_cpu, report, probabilities.cpu(), targets.cpu()).save(out_dir / "methods.png")


def parse_methods(text: str | None) -> list[Method] | None:
    """"all" or comma-separated method names, each with its default parameters; None stays None."""
    if text is None:
        return None
    names = list(METHODS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    return [Method(name).check() for name in names]
