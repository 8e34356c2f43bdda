"""``salrt evaluate``: how faithful each method's maps are, measured, next to a random ranking.

- Deletion and insertion (Petsiuk et al. 2018, RISE): pixels ranked by the map, removed (set to zero in the
  normalized input space) or inserted into a blurred copy, ``steps`` at a time; the curve is the softmax
  probability of the explained class, its area the trapezoid rule over [0, 1]. A faithful map makes deletion
  fall fast (low AUC) and insertion rise fast (high AUC). Every step of every image runs batched.
- Model randomization (Adebayo et al. 2018): the model's weights re-initialized cascading from the logits
  layer down; at each cut, the Spearman rank correlation of the new map with the original one. A map that
  follows the model falls towards 0; one that only echoes the image stays high.

The source is a model name (every method runs eagerly) or an artifact directory: then its own method's maps
come from the artifact through the runtime, as deployed, while the scoring and the randomized copies run the
model the manifest names in PyTorch (an artifact's weights are frozen into its graph), after a check that the
two agree.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from .devices import checked_device
from .errors import InputError
from .graph import METHODS, Method, method_outputs
from .images import displayed_image, mode_for, open_image, to_batch
from .models import ClassifierSpec, is_model_name, load_model
from .render import contact_sheet, labelled, overlay
from .runtime import Explainer, load, rebuilt_spec

METRICS = ("deletion", "insertion", "randomization")
RANDOM = "random"  # the baseline ranking
SCORING_BATCH = 32
RANDOMIZATION_CUTS = 8  # `salrt evaluate`'s default
SAME_MODEL_TOLERANCE = 1e-3  # relative L2 of an artifact's probabilities to its model's in PyTorch (float32: ~1e-6)


def auc(curve: np.ndarray) -> float:
    """Trapezoid area of a curve sampled evenly over [0, 1] (RISE's definition)."""
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1))


def _probabilities(model: torch.nn.Module, batch: torch.Tensor, target: int) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(part).softmax(1)[:, target] for part in batch.split(SCORING_BATCH)]).cpu().numpy()


def perturbation_curve(model, image: torch.Tensor, ranking: torch.Tensor, target: int, kind: str, steps: int):
    """Probabilities of ``target`` as the ``ranking``'s pixels (most important first) are deleted or inserted.

    image: [3,H,W] normalized; ranking: [H*W] pixel indices. Returns ``steps + 1`` probabilities."""
    blurred = TF.gaussian_blur(image, kernel_size=[11, 11], sigma=[5.0, 5.0])
    start, finish = (image, torch.zeros_like(image)) if kind == "deletion" else (blurred, image)
    pixels = ranking.numel()
    batch = start.reshape(3, -1).expand(steps + 1, 3, pixels).clone()
    order = torch.empty(pixels, dtype=torch.long, device=image.device)
    order[ranking] = torch.arange(pixels, device=image.device)  # the step after which each pixel has changed
    steps_done = torch.arange(steps + 1, device=image.device)
    changed = order.unsqueeze(0) < (steps_done * pixels / steps).ceil().long().unsqueeze(1)
    flat_finish = finish.reshape(3, -1)
    batch = torch.where(changed.unsqueeze(1), flat_finish.unsqueeze(0), batch)
    return _probabilities(model, batch.reshape(steps + 1, *image.shape), target)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two maps (ties are rare in float maps and broken by position)."""
    ranks = [x.flatten().double().argsort().argsort().double() for x in (a, b)]
    ranks = [r - r.mean() for r in ranks]
    return float((ranks[0] * ranks[1]).sum() / (ranks[0].norm() * ranks[1].norm()))


def randomization_cuts(model: torch.nn.Module, count: int) -> list[list[str]]:
    """Cascading sets of module names to re-initialize: the logits layer first, all layers last."""
    layers = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    layers.reverse()
    cut_points = sorted({max(1, round(len(layers) * k / count)) for k in range(1, count + 1)})
    return [layers[:n] for n in cut_points]


def _reinitialized(model: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    randomized = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    for name in names:
        module = randomized.get_submodule(name)
        for parameter_name, parameter in module.named_parameters(recurse=False):
            with torch.no_grad():
                if parameter_name == "weight" and parameter.dim() > 1:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) *
                                    (2 / parameter[0].numel()) ** 0.5)  # He initialization
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1 +
                                    (1.0 if parameter_name == "weight" else 0.0))
    return randomized


def evaluate(source: str | Path, paths: list[Path], methods: list[Method] | None = None, metrics=METRICS,
             out_dir: Path = Path("evaluation"), steps: int = 50, randomization_steps: int = RANDOMIZATION_CUTS,
             weights: str = "default", backend: str = "auto", device: str = "cpu") -> dict:
    """Scores ``methods`` on the images with ``metrics``; writes report.json, curves.png, randomization.png and
    methods.png (the maps side by side, labelled) to ``out_dir`` and returns the report.

    ``source`` is a model name (``methods`` default to all, run eagerly with ``weights``) or an artifact
    directory (its own method, run with ``backend``; ``methods``, if given, must be that one). Everything runs
    on ``device``."""
    device = checked_device(device)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if steps < 1 or randomization_steps < 1:
        raise InputError(f"--steps and the randomization steps must be at least 1, got {steps} and {randomization_steps}")
    images = [open_image(path) for path in paths]  # a bad file fails first, before any model loads
    spec, artifact, methods = _source(source, methods, weights, backend, device)
    model = spec.module.eval().to(device)
    p = artifact.preprocessing if artifact else spec.preprocessing
    images = [open_image(image, mode_for(p.channels)) for image in images]  # the model's channels
    batch = to_batch(images, p).to(device)
    with torch.no_grad():
        probabilities = model(batch).softmax(1)
    targets = probabilities.argmax(1)
    report = {"model": spec.name, "weights": spec.weights, "source": str(source), "images": [path.name for path in paths],
              "classes": [spec.categories[int(t)] for t in targets], "steps": steps, "methods": {}}
    maps = {}
    for method in tqdm(methods, desc="methods", unit="method", leave=False):
        explain = method_outputs(method.check(), p.input_shape, p.mean, p.std)
        if artifact:
            maps[method.name], report["backend"] = _artifact_maps(artifact, batch, targets, probabilities)
        else:
            maps[method.name] = explain(model, batch, targets)[2]
        report["methods"][method.name] = _scores(model, batch, maps[method.name], targets, method, explain, metrics,
                                                 steps, randomization_steps)
    generator = torch.Generator().manual_seed(0)
    random_maps = torch.rand(batch.shape[0], *p.size, generator=generator).to(device)
    report["methods"][RANDOM] = _scores(model, batch, random_maps, targets, None, None,
                                        [m for m in metrics if m != "randomization"], steps, 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    _plot(report, out_dir)
    on_cpu = {name: m.cpu() for name, m in maps.items()}
    _sheet(images, p, on_cpu, report, probabilities.cpu(), targets.cpu()).save(out_dir / "methods.png")
    return report


def _source(source, methods, weights, backend, device) -> tuple[ClassifierSpec, Explainer | None, list[Method]]:
    """(the model in PyTorch, the artifact's explainer or None, the methods to score)."""
    if is_model_name(source):
        return load_model(source, weights), None, list(methods or [Method(name) for name in METHODS])
    artifact = load(source, backend, device, method=methods[0] if methods and len(methods) == 1 else None)
    if methods and len(methods) > 1:
        raise InputError(f"{source} computes one method, {artifact.manifest['method']['name']}: an artifact is "
                         f"scored with its own method only; give a model name to compare several")
    name, artifact_weights = artifact.manifest["model"], artifact.manifest["weights"]
    try:
        if artifact_weights == "custom" or not is_model_name(name):
            raise InputError("a custom module")
        spec = rebuilt_spec(artifact.manifest)
    except InputError as err:
        raise InputError(f"{source}: scoring runs the artifact's model in PyTorch, and {name!r} with weights "
                         f"{artifact_weights!r} cannot be rebuilt here ({err})") from None
    return spec, artifact, [Method.of(artifact.manifest)]


def _artifact_maps(artifact: Explainer, batch, targets, probabilities) -> tuple[torch.Tensor, str]:
    """The artifact's maps for ``targets``, once its logits are shown to be those of the model that scores them."""
    explanation = artifact.explain(batch, targets)
    error = float((explanation.logits.softmax(1) - probabilities).norm() / probabilities.norm())
    if error > SAME_MODEL_TOLERANCE:
        raise InputError(f"{artifact.manifest['model']} in PyTorch (weights {artifact.manifest['weights']!r}) is not "
                         f"the model the artifact holds (probabilities differ by {error:.1e} relative L2): export "
                         f"it again from these weights")
    return explanation.saliency, explanation.backend


def _scores(model, batch, maps, targets, method, explain, metrics, steps, randomization_steps) -> dict:
    scores = {}
    for kind in ("deletion", "insertion"):
        if kind in metrics:
            curves = np.stack([perturbation_curve(model, image, saliency.flatten().argsort(descending=True),
                                                  int(target), kind, steps)
                               for image, saliency, target in zip(batch, maps, targets)])
            scores[kind] = {"auc": float(np.mean([auc(c) for c in curves])), "curve": curves.mean(0).tolist()}
    if "randomization" in metrics and method is not None:
        cuts = randomization_cuts(model, randomization_steps)
        correlations = []
        for names in cuts:
            randomized_maps = explain(_reinitialized(model, names), batch, targets)[2]
            correlations.append(float(np.mean([spearman(a, b) for a, b in zip(maps, randomized_maps)])))
        scores["randomization"] = {"layers_randomized": [len(n) for n in cuts], "down_to": [n[-1] for n in cuts],
                                   "spearman": correlations}
    return scores


def _plot(report: dict, out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [k for k in ("deletion", "insertion") if k in report["methods"][RANDOM]]
    if kinds:
        figure, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
        for axis, kind in zip(axes[0], kinds):
            for name, scores in report["methods"].items():
                curve = scores[kind]["curve"]
                axis.plot(np.linspace(0, 1, len(curve)), curve, "--" if name == RANDOM else "-",
                          label=f"{name} (AUC {scores[kind]['auc']:.3f})")
            axis.set_title(f"{kind} ({report['model']}, {len(report['images'])} images)")
            axis.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}")
            axis.set_ylabel("probability of the explained class")
            axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out_dir / "curves.png", dpi=110)
        plt.close(figure)
    randomized = {n: s["randomization"] for n, s in report["methods"].items() if "randomization" in s}
    if randomized:
        figure, axis = plt.subplots(figsize=(6.5, 4))
        for name, scores in randomized.items():
            axis.plot(scores["layers_randomized"], scores["spearman"], "o-", label=name)
        axis.set_xlabel("layers re-initialized, from the logits down")
        axis.set_ylabel("Spearman correlation with the original map")
        axis.set_title(f"model randomization ({report['model']})")
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out_dir / "randomization.png", dpi=110)
        plt.close(figure)


def _sheet(images, p, maps: dict, report: dict, probabilities, targets) -> Image.Image:
    """One row per image (labelled: image, class, probability), one column per method (labelled)."""
    rows = []
    for i, image in enumerate(images):
        shown = displayed_image(image, p)
        label = f"{report['images'][i]}\n{report['classes'][i]} {float(probabilities[i, targets[i]]):.2f}"
        row = [labelled(shown, label)]
        row += [labelled(overlay(shown, maps[name][i]), name) for name in maps]
        rows.append(row)
    return contact_sheet(rows)


def parse_methods(text: str | None) -> list[Method] | None:
    """"all" or comma-separated method names, each with its default parameters; None stays None."""
    if text is None:
        return None
    names = list(METHODS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    return [Method(name).check() for name in names]


def table(report: dict) -> str:
    """The report as a Markdown table: AUCs and the randomization correlations, first cut to last."""
    lines = ["| method | deletion AUC (lower is better) | insertion AUC (higher is better) | "
             "randomization: Spearman, logits layer -> all layers |", "|---|---|---|---|"]
    for name, scores in report["methods"].items():
        cells = [f"{scores[k]['auc']:.3f}" if k in scores else "" for k in ("deletion", "insertion")]
        randomization = scores.get("randomization")
        cells.append(" -> ".join(f"{c:.2f}" for c in randomization["spearman"]) if randomization else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
