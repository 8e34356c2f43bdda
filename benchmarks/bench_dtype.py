"""Reduced-precision schemes (``salrt.graph.precision.SCHEMES``) against float32 salrt and float64 autograd.

    python benchmarks/bench_dtype.py                 # resnet50, timm convnext_tiny and vit_base at 224; README + docs/
    python benchmarks/bench_dtype.py --models resnet18 --size 64 --no-readme   # a quick look
    python benchmarks/bench_dtype.py --readme-from docs/bench-dtype.json       # README block of a stored run

Per model (random weights, seeded) and scheme:
- speed: ms per image of the scheme's graph against the float32 graph, both run op by op in PyTorch (what the
  eager backend runs), N=1, medians of interleaved rounds after a warm-up. A model is timed only where this
  CPU's bf16 kernels can run it in the time: the run measures bf16 and float32 GEMM and convolution rates
  first, and skips timing models with matrix-product layers when bf16 GEMM runs at under a quarter of float32's.
- error, on random inputs the graphs never saw: the input gradient's relative L2 and the map's Spearman
  correlation against float64 autograd of the same model, per image (mean and worst). Where a model is not
  timed, its reduced-precision graphs run *emulated* (inputs of every cast op rounded to bf16 and back, then
  the float32 op: the numerics of a float32-accumulating bf16 kernel); where it is, the real bf16 graph runs.
  ``numerics`` in the JSON says which.
- faithfulness on real data: the pretrained EfficientNet-Lite0 on scikit-image's photos: deletion and insertion
  AUC (``salrt.evaluate``) of each scheme's maps against float32's, and their Spearman against float64's.

The CPU model and its avx512_bf16 / AMX flags are printed and stored: bf16 speed depends on them entirely.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from salrt import bench
from salrt.demo import PHOTOS
from salrt.devices import CPU_FLAGS, cpu_info, timed
from salrt.evaluate import auc, perturbation_curve, spearman
from salrt.graph import build_saliency_graph
from salrt.graph.precision import SCHEMES, SHIPPED, apply_precision, support_table
from salrt.graph.saliency import saliency_from_grad
from salrt.images import open_image, to_batch
from salrt.models import load_model

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
MODELS = ("resnet50", "timm:convnext_tiny", "timm:vit_base_patch16_224")
ERROR_IMAGES = 2
SLOW_GEMM = 0.25  # bf16/float32 GEMM rate under which matmul-heavy models are not timed
MATMUL = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)


def _rate(fn, flops: float, repeats: int = 2) -> float:
    fn()
    best = min(timed(fn, CPU) for _ in range(repeats))
    return flops / best / 1e9


def kernel_rates() -> dict:
    """GFLOP/s of a 512^2 GEMM and a 3x3 convolution [1,128,28,28] channels_last, float32 and bf16."""
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(512, 512).to(dtype)
        x = torch.randn(1, 128, 28, 28).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(128, 128, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            rates[f"gemm_{name}"] = _rate(lambda: a @ a, 2 * 512**3)
            rates[f"conv_{name}"] = _rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * 128 * 128 * 9 * 28 * 28)
    return rates


def float64_grad(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model64 = copy.deepcopy(module).double()
    x64 = x.double().requires_grad_(True)
    logits = model64(x64)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return x64.grad


def errors(graph, x: torch.Tensor, reference: torch.Tensor) -> dict:
    with torch.no_grad():
        _, _, saliency, grad = graph(x, torch.full((x.shape[0],), -1))
    reference_map = saliency_from_grad(reference)
    rel = [float((g.double() - r).norm() / r.norm()) for g, r in zip(grad, reference)]
    rho = [spearman(s, r) for s, r in zip(saliency, reference_map)]
    return {"grad_rel_l2": statistics.mean(rel), "grad_rel_l2_worst": max(rel),
            "spearman": statistics.mean(rho), "spearman_worst": min(rho)}


def scheme_graphs(base: torch.fx.GraphModule, emulate: bool) -> dict:
    graphs = {"fp32": base}
    for name, scheme in SCHEMES.items():
        graphs[name] = apply_precision(copy.deepcopy(base), scheme, emulate=emulate)
    return graphs


def time_graphs(graphs: dict, shape, rounds: int) -> dict:
    x, target = torch.randn(1, *shape, generator=torch.Generator().manual_seed(7)), torch.full((1,), -1)
    samples = {name: [] for name in graphs}
    with torch.no_grad():
        for graph in graphs.values():
            graph(x, target)  # warm-up
        for _ in range(rounds):
            for name, graph in graphs.items():  # interleaved: noise hits every scheme alike
                samples[name].append(timed(lambda: graph(x, target), CPU))
    return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


def bench_model(name: str, size, rounds: int, rates: dict, progress) -> dict:
    spec = load_model(name, "random", image_size=size)
    shape = spec.input_shape
    progress(f"{name}: tracing")
    base = build_saliency_graph(spec.module, shape)
    matmuls = sum(node.target in MATMUL for node in base.graph.nodes)
    slow_gemm = rates["gemm_bf16"] < SLOW_GEMM * rates["gemm_fp32"]
    timeable = not (slow_gemm and matmuls > 4)
    graphs = scheme_graphs(base, emulate=not timeable)
    x = torch.randn(ERROR_IMAGES, *shape, generator=torch.Generator().manual_seed(1234))
    progress(f"{name}: float64 reference")
    reference = float64_grad(spec.module, x)
    rows = {}
    for scheme, graph in graphs.items():
        progress(f"{name}: errors of {scheme}")
        rows[scheme] = {"scheme": scheme, **errors(graph, x, reference),
                        "numerics": "real" if timeable or scheme == "fp32" else "emulated"}
    if timeable:
        progress(f"{name}: timing {len(graphs)} graphs, {rounds} rounds")
        ms = time_graphs(graphs, shape, rounds)
        for scheme, row in rows.items():
            row.update(ms_per_image=ms[scheme], speedup_vs_fp32=ms["fp32"] / ms[scheme])
    return {"model": name, "input_size": list(shape[1:]), "timed": timeable, "matmul_ops": matmuls,
            "not_timed_why": None if timeable else (f"bf16 GEMM runs at {rates['gemm_bf16']:.2f} GFLOP/s on this CPU "
                                                 f"(float32: {rates['gemm_fp32']:.0f}); the graph has {matmuls} "
                                                 "matrix products"),
            "schemes": list(rows.values())}


def photos_batch(spec) -> torch.Tensor:
    from skimage import data
    return to_batch([open_image(getattr(data, name)()) for name in PHOTOS], spec.preprocessing)


def lite0_faithfulness(steps: int, progress) -> dict:
    """Deletion/insertion AUC of each scheme's maps (real bf16: Lite0 is small) on the pretrained Lite0 photos."""
    spec = load_model("efficientnet_lite0", "default")
    model = spec.module.eval()
    batch = photos_batch(spec)
    with torch.no_grad():
        targets = model(batch).argmax(1)
    progress("efficientnet_lite0: tracing")
    graphs = scheme_graphs(build_saliency_graph(model, spec.input_shape), emulate=False)
    reference_map = saliency_from_grad(float64_grad(model, batch))
    rows = []
    for scheme, graph in graphs.items():
        progress(f"efficientnet_lite0: deletion/insertion of {scheme}")
        with torch.no_grad():
            maps = graph(batch, targets)[2]
        row = {"scheme": scheme, "spearman_vs_fp64": statistics.mean(spearman(m, r) for m, r in zip(maps, reference_map))}
        for kind in ("deletion", "insertion"):
            row[f"{kind}_auc"] = float(np.mean([auc(perturbation_curve(model, image, m.flatten().argsort(descending=True),
                                                                       int(t), kind, steps))
                                                for image, m, t in zip(batch, maps, targets)]))
        rows.append(row)
    fp32 = rows[0]
    for row in rows:
        row["deletion_vs_fp32"] = row["deletion_auc"] - fp32["deletion_auc"]
        row["insertion_vs_fp32"] = row["insertion_auc"] - fp32["insertion_auc"]
    return {"photos": list(PHOTOS), "steps": steps, "schemes": rows}


def tables(report: dict) -> str:
    cpu = report["cpu"]
    flags = ", ".join(f"{flag} {'yes' if cpu[flag] else 'no'}" for flag in CPU_FLAGS)
    rates = report["kernel_rates"]
    lines = [f"CPU: {cpu['model']} ({flags}; torch capability {cpu['torch_capability']}, {cpu['threads']} threads). "
             f"Kernel rates measured in the run, GFLOP/s: GEMM fp32 {rates['gemm_fp32']:.1f}, bf16 "
             f"{rates['gemm_bf16']:.2f}; 3x3 conv fp32 {rates['conv_fp32']:.1f}, bf16 {rates['conv_bf16']:.1f}. "
             f"Shipped as `bf16`: `{SHIPPED['bf16'].name}`.", "",
             "| model | scheme | ms/img (N=1) | vs fp32 | grad rel L2 vs fp64 (mean / worst) | map Spearman vs fp64 "
             "(mean / worst) | numerics |", "|---|---|---|---|---|---|---|"]
    for model in report["models"]:
        for row in model["schemes"]:
            speed = (f"{row['ms_per_image']:.0f} | {row['speedup_vs_fp32']:.2f}x" if model["timed"]
                     else "not timed | ")
            lines.append(f"| {model['model']} {model['input_size'][0]}px | {row['scheme']} | {speed} | "
                         f"{row['grad_rel_l2']:.2e} / {row['grad_rel_l2_worst']:.2e} | "
                         f"{row['spearman']:.4f} / {row['spearman_worst']:.4f} | {row['numerics']} |")
    lines += [""] + [f"Not timed, {m['model']}: {m['not_timed_why']}." for m in report["models"] if not m["timed"]]
    lite0 = report.get("lite0")
    if lite0:
        lines += ["", f"Pretrained EfficientNet-Lite0 on {', '.join(lite0['photos'])} ({lite0['steps']} steps; real bf16 "
                      "kernels):", "",
                  "| scheme | deletion AUC (lower better) | Δ vs fp32 | insertion AUC (higher better) | Δ vs fp32 | "
                  "map Spearman vs fp64 |", "|---|---|---|---|---|---|"]
        for row in lite0["schemes"]:
            lines.append(f"| {row['scheme']} | {row['deletion_auc']:.4f} | {row['deletion_vs_fp32']:+.4f} | "
                         f"{row['insertion_auc']:.4f} | {row['insertion_vs_fp32']:+.4f} | {row['spearman_vs_fp64']:.4f} |")
    return "\n".join(lines)


def update_readme(report: dict, command: str) -> None:
    bench.replace_readme_block(ROOT / "README.md", "dtype", (
        f"Generated by `{command}` (random weights, seeded; error inputs unseen by the export; "
        f"{report['seconds']:.0f} s):\n\n{tables(report)}\n\nWhich formats run which dtype "
        f"(`salrt.graph.precision.SUPPORT`):\n\n{support_table()}"))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="deletion/insertion steps")
    parser.add_argument("--no-lite0", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where bench-dtype.json goes")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--readme-from", type=Path, default=None, metavar="JSON",
                        help="only rewrite the README block from a stored run (e.g. docs/bench-dtype.json)")
    args = parser.parse_args(argv)
    if args.readme_from:
        report = json.loads(args.readme_from.read_text())
        update_readme(report, "python benchmarks/bench_dtype.py")
        return report
    started = time.perf_counter()
    report = {"cpu": cpu_info(), "torch": torch.__version__, "kernel_rates": kernel_rates(), "models": []}
    print(json.dumps({"cpu": report["cpu"], "kernel_rates": report["kernel_rates"]}), flush=True)
    for name in [m for m in args.models.split(",") if m]:
        report["models"].append(bench_model(name, args.size, args.rounds, report["kernel_rates"], print))
        print(tables(report), flush=True)  # so far: a long run shows its figures as it goes
    if not args.no_lite0:
        report["lite0"] = lite0_faithfulness(args.steps, print)
    report["seconds"] = time.perf_counter() - started
    print(tables(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-dtype.json").write_text(json.dumps(report, indent=1))
    if not args.no_readme:
        update_readme(report, "python benchmarks/bench_dtype.py")
    return report


if __name__ == "__main__":
    main()
