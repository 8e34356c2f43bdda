"""End-to-end saliency latency: every salrt backend against the eager recipe users copy today.

All paths run the same model, weights and inputs, interleaved round by round in one process after
warm-up, so machine noise hits them alike. ``naive`` (the eager recipe) is the baseline of every
speed-up; ``forward`` (plain inference, no saliency) is the floor that saliency cost is expressed against.
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import statistics
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..artifact import export, is_artifact_dir
from ..devices import checked_device, describe, timed
from ..errors import InputError
from ..formats import BY_BACKEND, CUDA_GRAPH_BACKENDS, EAGER, MEASURED_BACKENDS
from ..graph import DEFAULT_DTYPE
from ..graph.precision import SUPPORT, check_dtype
from ..graph.saliency import saliency_from_grad
from ..models import ClassifierSpec, load_model
from ..runtime import load

NAIVE, FORWARD = "naive", "forward"  # the two reference paths timed next to salrt's backends
GRAPHED = "+cudagraphs"  # a backend's name with this suffix: the same backend with cuda_graphs=True


def naive_recipe(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The recipe users copy today: parameters left trainable (so .backward() also computes weight
    gradients), the same reduction as salrt's."""
    model = model.requires_grad_(True)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        out = model(x)
        out[range(x.shape[0]), out.argmax(1)].sum().backward()
        return saliency_from_grad(x.grad)
    return run


def forward_only(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return run


def forward_flops(model: torch.nn.Module, input_shape, device: torch.device = torch.device("cpu")) -> int:
    """FLOPs of one forward pass on one [C, H, W] image."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
    return counter.get_total_flops()


def peak_gflops(repeats: int = 5, device: torch.device = torch.device("cpu")) -> float:
    """The best of two compute-bound float32 kernels, measured now on ``device``: a 3x3 convolution
    [8,256,56,56] channels_last and a 4096x4096 matmul. What a saliency path's GFLOP/s is a fraction of."""
    x = torch.randn(8, 256, 56, 56, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    a, b = torch.randn(4096, 4096, device=device), torch.randn(4096, 4096, device=device)
    kernels = [(lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * 8 * 256 * 56 * 56 * 256 * 9),
               (lambda: a @ b, 2 * 4096**3)]
    best = 0.0
    with torch.inference_mode():
        for kernel, flops in kernels:
            kernel()
            seconds = [timed(kernel, device) for _ in range(repeats)]
            best = max(best, flops / min(seconds) / 1e9)
    return best


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def exporter_fingerprint() -> str:
    """12 hex digits of the code that writes an artifact (graph building, formats) and of torch's version:
    a cached export from other code would time another graph."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(torch.__version__.encode())
    for source in sorted([*package.glob("graph/*.py"), *package.glob("formats/*.py"), package / "artifact.py"]):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def cached_artifact(spec: ClassifierSpec, formats: list[str], cache: Path, progress,
                    device: torch.device = torch.device("cpu"), dtype: str = DEFAULT_DTYPE) -> Path:
    """Export once per model, weights, format set, device, dtype and exporter code; later runs reuse the directory."""
    size = "x".join(map(str, spec.input_shape))
    key = (f"{spec.name}-{spec.weights}-{size}-{'-'.join(sorted(formats))}-{device.type}-{dtype}-"
           f"{exporter_fingerprint()}")
    directory = cache / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)  # timm:NAME, hf:./dir and weight paths as one name
    if not is_artifact_dir(directory):
        progress(f"exporting {spec.name} ({', '.join(formats)}) to {directory}")
        export(spec, directory, formats=formats, progress=progress, device=device, dtype=dtype)
    return directory


def _salrt_candidates(model_name: str, spec: ClassifierSpec, weights: str, backends, dtype: str, cache: Path,
                      progress, device: torch.device, image_size) -> dict:
    """{(backend, dtype): a maker of its explain} for the backends that run ``dtype`` on ``device``; on CUDA each
    capturable backend also replayed from CUDA graphs."""
    runs_here = {name for name, devices in SUPPORT[dtype].items() if device.type in devices}
    chosen = [b for b in backends if (b if b == EAGER else BY_BACKEND[b].name) in runs_here]
    if len(chosen) < len(backends):
        progress(f"{dtype}: not timed on {', '.join(b for b in backends if b not in chosen)} (it does not run "
                 f"{dtype} on {device.type}; see salrt.graph.precision.SUPPORT)")
    formats = [BY_BACKEND[b].name for b in chosen if b in BY_BACKEND]
    artifact = cached_artifact(spec, formats, cache, progress, device, dtype) if formats else None

    def make(backend: str, cuda_graphs: bool = False) -> Callable[[], Callable[[torch.Tensor], object]]:
        source, options = (model_name, {"image_size": image_size, "dtype": dtype} if image_size else {"dtype": dtype}) \
            if backend == EAGER else (artifact, {})
        return lambda: load(source, backend=backend, weights=weights, device=device, cuda_graphs=cuda_graphs,
                            **options).explain
    candidates = {(backend, dtype): make(backend) for backend in chosen}
    if device.type == "cuda":
        candidates.update({(backend + GRAPHED, dtype): make(backend, cuda_graphs=True)
                           for backend in chosen if backend in CUDA_GRAPH_BACKENDS})
    return candidates


def benchmark(model_name: str, batches=(1, 8), backends=MEASURED_BACKENDS, weights: str = "random",
              rounds: int = 10, warmup: int = 2, cache: Path = Path(".salrt-bench"),
              progress: Callable[[str], None] = print, device: str = "cpu", image_size=None,
              dtypes=(DEFAULT_DTYPE,)) -> dict:
    """Latency per backend, dtype and batch size on ``device`` (``image_size``: the model's own by default);
    returns the JSON-ready report. A backend that does not run a dtype on the device
    (``graph.precision.SUPPORT``) is left out of that dtype's rows, with a note."""
    device = checked_device(device)
    unknown = [b for b in backends if b not in MEASURED_BACKENDS]
    if unknown:
        raise InputError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(MEASURED_BACKENDS)}")
    dtypes = [check_dtype(d) for d in dict.fromkeys(dtypes)]
    spec = load_model(model_name, weights, image_size=image_size)
    shape = spec.input_shape
    height, width = shape[1:]
    spec.module.to(device)
    flops = forward_flops(spec.module, shape, device)

    runs, first_call_ms, rss_added = {}, {}, {}
    inputs = {n: torch.randn(n, *shape, generator=torch.Generator().manual_seed(n)).to(device) for n in batches}
    naive_model = load_model(model_name, weights, image_size=image_size).module.to(device)  # a copy: the naive recipe makes it trainable

    candidates = {(NAIVE, DEFAULT_DTYPE): lambda: naive_recipe(naive_model),
                  (FORWARD, DEFAULT_DTYPE): lambda: forward_only(spec.module)}
    for dtype in dtypes:
        candidates.update(_salrt_candidates(model_name, spec, weights, backends, dtype, cache, progress, device,
                                            image_size))
    for name, make in candidates.items():  # name: (backend, dtype)
        before = _rss_mb()
        run = make()
        first_call_ms[name] = timed(lambda: run(inputs[batches[0]]), device) * 1e3
        for n in batches:
            for _ in range(warmup):
                run(inputs[n])
        rss_added[name] = _rss_mb() - before
        runs[name] = run

    times = {(name, n): [] for name in runs for n in batches}
    for _ in tqdm(range(rounds), desc=f"{model_name}: timing", unit="round", leave=False):
        for n in batches:
            for name, run in runs.items():  # interleaved: noise hits every path alike
                times[(name, n)].append(timed(lambda: run(inputs[n]), device))

    peak = peak_gflops(device=device)
    results = []
    for ((name, dtype), n), samples in times.items():
        p50 = statistics.median(samples)
        results.append({
            "backend": name, "dtype": dtype, "batch": n, "p50_ms": p50 * 1e3, "p90_ms": percentile(samples, 90) * 1e3,
            "p99_ms": percentile(samples, 99) * 1e3, "ms_per_image": p50 * 1e3 / n, "images_per_s": n / p50,
            "gflops": flops * n * (1 if name == FORWARD else 2) / p50 / 1e9,
            "peak_fraction": flops * n * (1 if name == FORWARD else 2) / p50 / 1e9 / peak,
            "first_call_ms": first_call_ms[(name, dtype)], "rss_added_mb": rss_added[(name, dtype)],
        })
    for row in results:
        same_batch = {r["backend"]: r["p50_ms"] for r in results if r["batch"] == row["batch"]
                      and r["dtype"] == DEFAULT_DTYPE}
        row["speedup_vs_naive"] = same_batch[NAIVE] / row["p50_ms"]
        row["cost_vs_forward"] = row["p50_ms"] / same_batch[FORWARD]
    return {"model": model_name, "weights": weights, "input_size": height if height == width else f"{height}x{width}",
            "device": device.type, "hardware": describe(device), "threads": torch.get_num_threads(),
            "forward_gflop_per_image": flops / 1e9, "rounds": rounds, "torch": torch.__version__,
            "peak_gflops": peak, "dtypes": dtypes,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, "results": results}
