"""How an evaluation report is shown: its curves and correlations plotted, the maps side by side, a Markdown table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..images import displayed_image
from ..render import contact_sheet, labelled, overlay
from .metrics import PERTURBATIONS, RANDOM


def plot(report: dict, out_dir: Path) -> None:
    """Writes curves.png (deletion/insertion) and randomization.png to ``out_dir``, each when the report has
    its metrics."""
    # pyplot is imported here, not at the top: it is slow to import, and cli.py imports this package for
    # every command
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    kinds = [k for k in PERTURBATIONS if k in report["methods"][RANDOM]]
    if kinds:
        _save(plt, _perturbation_figure(plt, report, kinds), out_dir / "curves.png")
    randomized = {n: s["randomization"] for n, s in report["methods"].items() if "randomization" in s}
    if randomized:
        _save(plt, _randomization_figure(plt, report, randomized), out_dir / "randomization.png")


def _perturbation_figure(plt, report: dict, kinds: list[str]):
    """One panel per kind (deletion, insertion), one curve per method, the random baseline dashed."""
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
    return figure


def _randomization_figure(plt, report: dict, randomized: dict):
    """Each method's correlation with its original map against the number of layers re-initialized."""
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, scores in randomized.items():
        axis.plot(scores["layers_randomized"], scores["spearman"], "o-", label=name)
    axis.set_xlabel("layers re-initialized, from the logits down")
    axis.set_ylabel("Spearman correlation with the original map")
    axis.set_title(f"model randomization ({report['model']})")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.legend(fontsize=7)
    return figure


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)  # pyplot keeps every open figure alive until closed


def methods_sheet(images, p, maps: dict, report: dict, probabilities, targets) -> Image.Image:
    """One row per image (labelled: image, class, probability), one column per method (labelled)."""
    rows = []
    for i, image in enumerate(images):
        shown = displayed_image(image, p)
        label = f"{report['images'][i]}\n{report['classes'][i]} {float(probabilities[i, targets[i]]):.2f}"
        row = [labelled(shown, label)]
        row += [labelled(overlay(shown, maps[name][i]), name) for name in maps]
        rows.append(row)
    return contact_sheet(rows)


def table(report: dict) -> str:
    """The report as a Markdown table: AUCs and the randomization correlations, first cut to last."""
    lines = ["| method | deletion AUC (lower is better) | insertion AUC (higher is better) | "
             "randomization: Spearman, logits layer -> all layers |", "|---|---|---|---|"]
    for name, scores in report["methods"].items():
        cells = [f"{scores[k]['auc']:.3f}" if k in scores else "" for k in PERTURBATIONS]
        randomization = scores.get("randomization")
        cells.append(" -> ".join(f"{c:.2f}" for c in randomization["spearman"]) if randomization else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
