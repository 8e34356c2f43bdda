"""End-to-end saliency latency: every salrt backend against the eager recipe users copy today.

All paths run the same model, weights and inputs, interleaved round by round in one process after
warm-up, so machine noise hits them alike. ``seed`` is the baseline of every speed-up; ``forward`` (plain
inference, no saliency) is the floor that saliency cost is expressed against.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from .errors import SalrtError
from .export import export
from .models import ClassifierSpec, load_model
from .runtime import load

SALRT_BACKENDS = ("eager", "torchscript", "onnxruntime", "aoti")
FORMAT_FOR = {"torchscript": "torchscript", "onnxruntime": "onnx", "aoti": "aoti"}


def seed_recipe(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The naive recipe, exactly: parameters left trainable, .backward(), reduction by hand."""
    model = model.requires_grad_(True)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        out = model(x)
        out[range(x.shape[0]), out.argmax(1)].sum().backward()
        saliency = x.grad.abs().amax(1)
        low = saliency.amin((1, 2), keepdim=True)
        return (saliency - low) / (saliency.amax((1, 2), keepdim=True) - low)
    return run


def forward_only(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return run


def forward_flops(model: torch.nn.Module, size: int) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _artifact(spec: ClassifierSpec, formats: list[str], cache: Path, say) -> Path:
    """Export once per model, weights and format set; later runs reuse the directory."""
    directory = cache / f"{spec.name}-{spec.weights}-{'-'.join(sorted(formats))}"
    if not (directory / "manifest.json").exists():
        say(f"exporting {spec.name} ({', '.join(formats)}) to {directory}")
        export(spec, directory, formats=formats, progress=say)
    return directory


def benchmark(model_name: str, batches=(1, 8), backends=SALRT_BACKENDS, weights: str = "random",
              rounds: int = 10, warmup: int = 2, cache: Path = Path(".salrt-bench"),
              say: Callable[[str], None] = print) -> dict:
    """Latency per backend and batch size; returns the JSON-ready report."""
    unknown = [b for b in backends if b not in SALRT_BACKENDS]
    if unknown:
        raise SalrtError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(SALRT_BACKENDS)}")
    spec = load_model(model_name, weights)
    size = spec.preprocessing.crop
    formats = [FORMAT_FOR[b] for b in backends if b in FORMAT_FOR]
    artifact = _artifact(spec, formats, cache, say) if formats else None
    flops = forward_flops(spec.module, size)

    runs, first_call_ms, rss_added = {}, {}, {}
    inputs = {n: torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n)) for n in batches}
    reference_model = load_model(model_name, weights).module  # a separate copy: seed makes it trainable
    def salrt_backend(backend: str) -> Callable[[], Callable[[torch.Tensor], object]]:
        return lambda: load(model_name if backend == "eager" else artifact, backend=backend, weights=weights).explain

    candidates = {"seed": lambda: seed_recipe(reference_model), "forward": lambda: forward_only(spec.module),
                  **{backend: salrt_backend(backend) for backend in backends}}
    for name, make in candidates.items():
        before = _rss_mb()
        run = make()
        started = time.perf_counter()
        run(inputs[batches[0]])
        first_call_ms[name] = (time.perf_counter() - started) * 1e3
        for n in batches:
            for _ in range(warmup):
                run(inputs[n])
        rss_added[name] = _rss_mb() - before
        runs[name] = run

    times = {(name, n): [] for name in runs for n in batches}
    for _ in tqdm(range(rounds), desc=f"{model_name}: timing", unit="round", leave=False):
        for n in batches:
            for name, run in runs.items():  # interleaved: noise hits every path alike
                started = time.perf_counter()
                run(inputs[n])
                times[(name, n)].append(time.perf_counter() - started)

    results = []
    for (name, n), samples in times.items():
        p50 = statistics.median(samples)
        results.append({
            "backend": name, "batch": n, "p50_ms": p50 * 1e3, "p90_ms": _percentile(samples, 90) * 1e3,
            "p99_ms": _percentile(samples, 99) * 1e3, "ms_per_image": p50 * 1e3 / n, "images_per_s": n / p50,
            "gflops": flops * n * (1 if name == "forward" else 2) / p50 / 1e9,
            "first_call_ms": first_call_ms[name], "rss_added_mb": rss_added[name],
        })
    for row in results:
        same_batch = {r["backend"]: r["p50_ms"] for r in results if r["batch"] == row["batch"]}
        row["speedup_vs_seed"] = same_batch["seed"] / row["p50_ms"]
        row["cost_vs_forward"] = row["p50_ms"] / same_batch["forward"]
    return {"model": model_name, "weights": weights, "input_size": size, "threads": torch.get_num_threads(),
            "forward_gflop_per_image": flops / 1e9, "rounds": rounds, "torch": torch.__version__,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, "results": results}


def table(report: dict) -> str:
    header = (f"{'backend':12} {'N':>3} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'ms/img':>8} {'img/s':>7} "
              f"{'GFLOP/s':>8} {'1st ms':>8} {'+RSS MB':>8} {'vs seed':>8} {'÷ fwd':>6}")
    lines = [f"{report['model']} ({report['weights']} weights, {report['input_size']}px, {report['threads']} threads, "
             f"forward {report['forward_gflop_per_image']:.1f} GFLOP/img, {report['rounds']} rounds)", header]
    for r in sorted(report["results"], key=lambda r: (r["batch"], r["p50_ms"])):
        lines.append(f"{r['backend']:12} {r['batch']:>3} {r['p50_ms']:8.1f} {r['p90_ms']:8.1f} {r['p99_ms']:8.1f} "
                     f"{r['ms_per_image']:8.1f} {r['images_per_s']:7.1f} {r['gflops']:8.1f} "
                     f"{r['first_call_ms']:8.0f} {r['rss_added_mb']:8.0f} {r['speedup_vs_seed']:7.2f}x "
                     f"{r['cost_vs_forward']:5.2f}")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in report["results"]})
    backends = list(dict.fromkeys(r["backend"] for r in report["results"]))
    figure, axis = plt.subplots(figsize=(1.6 + 1.3 * len(backends), 4.2))
    width = 0.8 / len(batches)
    for i, n in enumerate(batches):
        values = [next(r["ms_per_image"] for r in report["results"] if r["backend"] == b and r["batch"] == n)
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
