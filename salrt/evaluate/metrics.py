"""The faithfulness metrics, and the scores of one method's maps under them.

- Deletion and insertion (Petsiuk et al. 2018, RISE): pixels ranked by the map, removed (set to zero in the
  normalized input space) or inserted into a blurred copy, ``steps`` at a time; the curve is the softmax
  probability of the explained class, its area the trapezoid rule over [0, 1]. A faithful map makes deletion
  fall fast (low AUC) and insertion rise fast (high AUC). Every step of every image runs batched.
- Model randomization (Adebayo et al. 2018): the model's weights re-initialized cascading from the logits
  layer down; at each cut, the Spearman rank correlation of the new map with the original one. A map that
  follows the model falls towards 0; one that only echoes the image stays high.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from ..graph.io import BASE_OUTPUTS

METRICS = ("deletion", "insertion", "randomization")
PERTURBATIONS = ("deletion", "insertion")  # the metrics that perturb the image along the map's ranking
RANDOM = "random"  # the baseline ranking
SCORING_BATCH = 32
RANDOMIZATION_CUTS = 8  # `salrt evaluate`'s default
SALIENCY = BASE_OUTPUTS.index("saliency")  # where the map is among a method's outputs


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


def saliency_maps(explain: Callable, model: torch.nn.Module, batch: torch.Tensor, targets: torch.Tensor):
    """The maps ``explain`` (a ``graph.method_outputs`` function) gives ``model`` on ``batch`` for ``targets``."""
    return explain(model, batch, targets)[SALIENCY]


@dataclass(frozen=True)
class Scoring:
    """What stays fixed while every method of one run is scored: the model that scores (in PyTorch), the images
    and their explained classes, the metrics asked for, the deletion/insertion steps, the randomization cuts."""
    model: torch.nn.Module
    batch: torch.Tensor  # [N,C,H,W], normalized
    targets: torch.Tensor  # [N]
    metrics: Sequence[str]
    steps: int
    randomization_steps: int


def scores(scoring: Scoring, maps: torch.Tensor, *, explain: Optional[Callable] = None) -> dict:
    """``maps``' scores under ``scoring.metrics``. Randomization needs ``explain``, the method that made the maps,
    to run again on the re-initialized models: without it (the random baseline) that metric is left out."""
    result = {kind: _perturbation_scores(scoring, maps, kind) for kind in PERTURBATIONS if kind in scoring.metrics}
    if explain is not None and "randomization" in scoring.metrics:
        result["randomization"] = _randomization_scores(scoring, maps, explain)
    return result


def _perturbation_scores(scoring: Scoring, maps: torch.Tensor, kind: str) -> dict:
    """The mean AUC and the mean curve over the images of deleting (or inserting) pixels in ``maps``' order."""
    curves = np.stack([perturbation_curve(scoring.model, image, saliency.flatten().argsort(descending=True),
                                          int(target), kind, scoring.steps)
                       for image, saliency, target in zip(scoring.batch, maps, scoring.targets)])
    return {"auc": float(np.mean([auc(c) for c in curves])), "curve": curves.mean(0).tolist()}


def _randomization_scores(scoring: Scoring, maps: torch.Tensor, explain: Callable) -> dict:
    """At each cascading cut, the mean Spearman correlation of ``maps`` with those of the re-initialized model."""
    cuts = randomization_cuts(scoring.model, scoring.randomization_steps)
    correlations = []
    for names in cuts:
        randomized_maps = saliency_maps(explain, _reinitialized(scoring.model, names), scoring.batch, scoring.targets)
        correlations.append(float(np.mean([spearman(a, b) for a, b in zip(maps, randomized_maps)])))
    return {"layers_randomized": [len(n) for n in cuts], "down_to": [n[-1] for n in cuts], "spearman": correlations}
