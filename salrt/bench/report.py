"""The benchmark report as a table, a JSON file and a bar chart."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional


def table(report: dict) -> str:
    header = (f"{'backend':12} {'dtype':5} {'N':>3} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'ms/img':>8} {'img/s':>7} "
              f"{'GFLOP/s':>8} {'% peak':>6} {'1st ms':>8} {'+RSS MB':>8} {'vs naive':>8} {'÷ fwd':>6}")
    on = report.get("hardware", "?")
    lines = [f"{report['model']} on {on} ({report['weights']} weights, {report['input_size']}px, {report['threads']} threads, "
             f"forward {report['forward_gflop_per_image']:.1f} GFLOP/img, {report['rounds']} rounds, "
             f"peak {report['peak_gflops']:.0f} GFLOP/s measured in the same run)", header]
    for r in sorted(report["results"], key=lambda r: (r["batch"], r["p50_ms"])):
        lines.append(f"{r['backend']:12} {r.get('dtype', 'fp32'):5} {r['batch']:>3} {r['p50_ms']:8.1f} {r['p90_ms']:8.1f} {r['p99_ms']:8.1f} "
                     f"{r['ms_per_image']:8.1f} {r['images_per_s']:7.1f} {r['gflops']:8.1f} "
                     f"{100 * r['peak_fraction']:5.0f}% "
                     f"{r['first_call_ms']:8.0f} {r['rss_added_mb']:8.0f} {r['speedup_vs_naive']:7.2f}x "
                     f"{r['cost_vs_forward']:5.2f}")
    return "\n".join(lines)


def _label(row: dict) -> str:
    """A bar's name: the backend, and its dtype where it is not float32 (reports before --dtype: float32)."""
    dtype = row.get("dtype", "fp32")
    return row["backend"] if dtype == "fp32" else f"{row['backend']} {dtype}"


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in report["results"]})
    backends = list(dict.fromkeys(_label(r) for r in report["results"]))
    figure, axis = plt.subplots(figsize=(1.6 + 1.3 * len(backends), 4.2))
    width = 0.8 / len(batches)
    for i, n in enumerate(batches):
        values = [next(r["ms_per_image"] for r in report["results"] if _label(r) == b and r["batch"] == n)
                  for b in backends]
        bars = axis.bar([x + i * width for x in range(len(backends))], values, width, label=f"N={n}")
        axis.bar_label(bars, fmt="%.0f", fontsize=7)
    axis.set_xticks([x + width * (len(batches) - 1) / 2 for x in range(len(backends))], backends)
    axis.set_ylabel("ms per image (median)")
    axis.set_title(f"{report['model']} saliency, {report['threads']} CPU threads (lower is better)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def save(report: dict, json_path: Optional[Path], plot_path: Optional[Path]) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
    if plot_path:
        plot(report, Path(plot_path))


def replace_readme_block(readme: Path, name: str, body: str) -> None:
    """Rewrites what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``readme``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block")
    pattern = re.escape(start) + ".*?" + re.escape(end)
    readme.write_text(re.sub(pattern, lambda _: f"{start}\n{body}\n{end}", text, flags=re.S))
