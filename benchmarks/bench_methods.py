"""SmoothGrad and Integrated Gradients: salrt's exported graphs against Captum's eager implementation.

ResNet-50 (random weights), 224 px, CPU. Captum runs the plain model with its memory knobs set as its docs
recommend (``internal_batch_size`` for IG, ``nt_samples_batch_size`` for NoiseTunnel, both 16, salrt's
default chunk at 224); salrt runs each of its backends on an artifact of the same method and parameters.
Rounds are interleaved (every contestant once per round) and medians reported, with the attribution's
relative L2 to Captum's. Updates docs/bench-methods.json and the README.

    python benchmarks/bench_methods.py [--rounds 3] [--batches 1,8] [--backends torchscript,onnxruntime,aoti]

Rows of a (method, batch size) pair not measured in a run are kept from docs/bench-methods.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import salrt
from salrt.bench import replace_readme_block
from salrt.bench.harness import exporter_fingerprint
from salrt.graph.methods import smoothgrad_noise
from salrt.models import load_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench-methods.json"
METHODS = {"smoothgrad": salrt.Method("smoothgrad", samples=25, noise=0.15),
           "integrated_gradients": salrt.Method("integrated_gradients", steps=32)}
CAPTUM_BATCH = 16


def captum_run(model: torch.nn.Module, method: salrt.Method):
    """Captum's call for ``method``, the SmoothGrad noise std being salrt's definition (per image)."""
    if method.name == "integrated_gradients":
        ig = IntegratedGradients(model)
        return lambda x, t: ig.attribute(x, target=t, n_steps=method.steps, method=method.ig_method,
                                         internal_batch_size=CAPTUM_BATCH)
    tunnel = NoiseTunnel(Saliency(model))
    noise = smoothgrad_noise(method.seed, method.samples, 224)

    def salrt_noise(draws: list):
        """Captum's torch.normal(0, std) made to return salrt's draws, partition by partition, so that the two
        attributions can be compared (drawing them costs Captum about the same)."""
        def normal(mean, std):
            start = sum(draws)
            draws.append(std.shape[0])
            return std * noise[start:start + std.shape[0]]
        return mock.patch("captum.attr._core.noise_tunnel.torch.normal", normal)

    def smoothgrad(x, t):
        rows = []
        for i in range(len(x)):
            with salrt_noise([]):
                rows.append(tunnel.attribute(x[i:i + 1], nt_type="smoothgrad", nt_samples=method.samples,
                                             nt_samples_batch_size=CAPTUM_BATCH, target=int(t[i]), abs=False,
                                             stdevs=method.noise * float(x[i].max() - x[i].min())))
        return torch.cat(rows)
    return smoothgrad


def artifact_for(name: str, method: salrt.Method, formats: list[str]) -> Path:
    directory = ROOT / ".salrt-bench" / f"resnet50-random-{name}-{'-'.join(sorted(formats))}-{exporter_fingerprint()}"
    if not salrt.artifact.is_artifact_dir(directory):
        print(f"exporting resnet50 {name} ({', '.join(formats)})", flush=True)
        salrt.export("resnet50", directory, formats=formats, weights="random", method=method, progress=print)
    return directory


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--backends", default="torchscript,onnxruntime,aoti")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    formats = [salrt.formats.BY_BACKEND[b].name for b in backends]
    model = load_model("resnet50", "random").module.eval()
    rows = []
    for name, method in METHODS.items():
        directory = artifact_for(name, method, formats)
        contestants = {"captum": captum_run(model, method)}
        for backend in backends:
            explainer = salrt.load(directory, backend=backend)
            contestants[f"salrt {backend}"] = lambda x, t, e=explainer: e.explain(x, t).attribution
        for n in map(int, args.batches.split(",")):
            x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
            t = torch.arange(n) * 100
            outputs = {label: run(x, t) for label, run in contestants.items()}  # warm-up, and the results
            times = {label: [] for label in contestants}
            for _ in range(args.rounds):
                for label, run in contestants.items():
                    started = time.perf_counter()
                    run(x, t)
                    times[label].append(time.perf_counter() - started)
            captum_s = statistics.median(times["captum"])
            for label in contestants:
                median = statistics.median(times[label])
                error = float((outputs[label] - outputs["captum"]).norm() / outputs["captum"].norm())
                rows.append({"method": name, "batch": n, "runner": label, "seconds": median, "rounds": args.rounds,
                             "speedup_vs_captum": captum_s / median, "rel_l2_vs_captum": error})
                print(f"{name:22} N={n}  {label:20} {median:7.2f} s  x{captum_s / median:4.2f} vs Captum  "
                      f"rel L2 {error:.1e}", flush=True)
    report = {"model": "resnet50", "cpus": torch.get_num_threads(), "rounds": args.rounds,
              "rows": _merged(rows, RESULTS), "parameters": {name: m.parameters() for name, m in METHODS.items()}}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    if not args.no_readme:
        update_readme(report)
    return report


def update_readme(report: dict) -> None:
    replace_readme_block(ROOT / "README.md", "methods-bench", (
        "Generated by `python benchmarks/bench_methods.py` (ResNet-50, 224 px, 2 CPU cores, medians of at least 2 "
        "interleaved rounds; SmoothGrad S=25, IG m=32 Gauss-Legendre, zeros baseline):\n\n" + table(report)))


def _merged(rows: list[dict], results: Path) -> list[dict]:
    """This run's rows, plus the kept rows of (method, batch) pairs it did not measure (``--batches 1`` re-measures
    N=1 alone); a pair measured now replaces all its old rows."""
    measured = {(r["method"], r["batch"]) for r in rows}
    kept = json.loads(results.read_text())["rows"] if results.exists() else []
    rows = [r for r in kept if (r["method"], r["batch"]) not in measured] + rows
    return sorted(rows, key=lambda r: (list(METHODS).index(r["method"]), r["batch"]))


def table(report: dict) -> str:
    lines = ["| method | N | runner | seconds | vs Captum | rel. L2 to Captum |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['method']} | {r['batch']} | {r['runner']} | {r['seconds']:.2f} | "
                     f"{r['speedup_vs_captum']:.2f}x | {r['rel_l2_vs_captum']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
