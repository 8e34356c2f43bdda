"""salrt's GPU paths, checked and measured in one run on a lent machine; with ``--device cpu --quick`` the same
steps run on the CPU in CI, so none of them rots while no GPU is lent. ``benchmarks/gpu_check.sh`` builds the
extension for the machine's torch first, then runs this.

Steps (each recorded as ok, failed or skipped, with its seconds; a failure does not stop the others):
  environment   torch, the device, the extension and whether it holds a kernel for the device
  op_tests      the fused op's tests and opcheck, the torch shims, the CUDA tests of the devices
  op_bandwidth  the fused op on [32,3,224,224] float32/bfloat16 against a copy of the same size
  correctness   every backend (CUDA graphs too) and dtype against float64 autograd, per image, on two models
  end_to_end    ResNet-50 at N=1, 8, 32: every backend and dtype against the naive eager recipe and the forward
Writes results.json and results.md to --out; a step that needs more than the time left is skipped.

    python benchmarks/gpu_check.py --device cuda --out gpu-check
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/check    # CI's dry run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
import salrt  # noqa: E402
from salrt import ops  # noqa: E402
from salrt.bench import benchmark  # noqa: E402
from salrt.bench.harness import FORWARD, GRAPHED, NAIVE, cached_artifact  # noqa: E402
from salrt.devices import checked_device, describe  # noqa: E402
from salrt.formats import BY_BACKEND, CUDA_GRAPH_BACKENDS, EAGER  # noqa: E402
from salrt.graph import input_gradient  # noqa: E402
from salrt.graph.precision import DEFAULT, DTYPES, SUPPORT  # noqa: E402
from salrt.models import load_model  # noqa: E402
from architectures import judge, randomized_statistics, relative_l2, unseen_inputs  # noqa: E402

# Per mode: the correctness models (name, image size, BN statistics randomized: a BN at its initial statistics
# would hide a wrong BN rewrite), then the end-to-end one. The end-to-end model is checked with the weights it
# is timed with, so its artifacts are exported once for both steps (the export cache is shared).
PLAN = {
    "full": {"correctness": [("resnet18", 224, True), ("resnet50", 224, False)], "end_to_end": ("resnet50", 224),
             "batches": [1, 8, 32], "rounds": 10, "op_batches": "32"},
    "quick": {"correctness": [("resnet18", 64, True)], "end_to_end": ("resnet18", 96),
              "batches": [1], "rounds": 3, "op_batches": "2"},
}
GOALS = {  # what the lent machine must show (issue 20), read from the end-to-end and bandwidth rows
    "op_fraction_of_copy": 0.80, "speedup_vs_naive_n1": 5.0, "speedup_vs_naive_n32": 2.0, "cost_vs_forward_n32": 2.2,
}
REDUCED_BOUND = 1e-2  # a reduced dtype's median relative L2 to float64 above this: measured, marked not recommended
QUICK_DTYPES = ("fp32", "bf16")  # the dry run's: the float32 path and the shipped reduced scheme


class Check:
    """The steps' results and the time left."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.steps: dict[str, dict] = {}

    def run(self, name: str, step, estimate_s: float, *args) -> None:
        left = self.deadline - time.monotonic()
        if left < estimate_s:
            self.steps[name] = {"status": "skipped", "why": f"needs ~{estimate_s:.0f} s, {left:.0f} s left"}
            print(f"== {name}: skipped ({self.steps[name]['why']})", flush=True)
            return
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            details = step(*args)
            status = details.pop("status", "ok")
        except Exception as err:  # one failing step must not hide the others' results
            traceback.print_exc()
            details, status = {"error": f"{type(err).__name__}: {err}"}, "failed"
        self.steps[name] = {"status": status, "seconds": round(time.monotonic() - started, 1), **details}
        print(f"== {name}: {status} in {self.steps[name]['seconds']} s", flush=True)


def environment(device: torch.device) -> dict:
    has_kernel = ops.HAS_EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key(
        "salrt::abs_channel_max_normalize", "CUDA" if device.type == "cuda" else "CPU")
    return {"status": "ok" if has_kernel else "failed", "device": describe(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "salrt": salrt.__version__,
            "extension": ops.HAS_EXTENSION, "op_kernel_for_device": has_kernel}


def op_tests(device: torch.device, quick: bool) -> dict:
    """The tests as pytest runs them (a subprocess: their own fixtures, skips and exit code)."""
    paths = ["tests/test_torch_shims.py", "tests/test_ops.py"]
    selection = ["-k", "opcheck or cuda or shim"] if quick else []
    if device.type == "cuda":
        paths.append("tests/test_devices.py")
        selection = ["-k", "not refuses and not without"] if not quick else selection
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths, *selection],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "SALRT_REQUIRE_EXTENSION": "1"})
    print(result.stdout[-3000:], result.stderr[-2000:], sep="\n")
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"status": "ok" if result.returncode == 0 else "failed", "summary": summary}


def op_bandwidth(device: torch.device, quick: bool, batches: str) -> dict:
    import bench_reduce
    threads = torch.get_num_threads()  # bench_reduce sets its own thread counts
    try:
        report = bench_reduce.main(["--device", device.type, "--n", batches, "--hw", "64" if quick else "224",
                                    "--dtypes", "f32,bf16", "--layouts", "nchw", "--no-compile",
                                    "--reps", "3" if quick else "20", *(["--threads", "1"] if device.type == "cpu" else [])])
    finally:
        torch.set_num_threads(threads)
    rows = [{k: row[k] for k in ("dtype", "n", "hw", "op_gbps", "copy_gbps", "copy_fraction")} for row in report["rows"]]
    return {"rows": rows, "copy_gbps_dram": report["copy_gbps"]}


def _dtypes(device: torch.device, quick: bool) -> list[str]:
    """The dtypes salrt runs on the device (precision.SUPPORT's eager column), float32 first."""
    chosen = QUICK_DTYPES if quick else DTYPES
    return [dtype for dtype in chosen if device.type in SUPPORT[dtype][EAGER]]


def _formats(device: torch.device, quick: bool, dtype: str = DEFAULT) -> list[str]:
    import onnxruntime
    formats = ["torchscript"]
    if device.type == "cpu" or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        formats.append("onnx")  # on CUDA only with onnxruntime-gpu (the [gpu] extra)
    if not quick and dtype == DEFAULT:
        formats.append("aoti")  # one compile per model (minutes on the CPU, so not in the dry run); float32 only
    return [f for f in formats if device.type in SUPPORT[dtype].get(f, ())]


def _backends(formats: list[str], device: torch.device) -> list[tuple[str, bool]]:
    """(backend, cuda_graphs) pairs to check: each backend, and on CUDA each capturable one graphed too."""
    plain = [EAGER, *(f.backend for f in BY_BACKEND.values() if f.name in formats)]
    graphed = [b for b in plain if b in CUDA_GRAPH_BACKENDS] if device.type == "cuda" else []
    return [(b, False) for b in plain] + [(b, True) for b in graphed]


def correctness(device: torch.device, quick: bool, cache: Path, models) -> dict:
    """Per image relative L2 of each backend's gradient to float64 autograd on the CPU, per dtype. float32 is
    judged as tests/architectures.py judges (the median at the floor, flips within their bound); a reduced
    dtype's error is measured and marked "not recommended" above REDUCED_BOUND (a fact, not a failure)."""
    rows, failed = [], False
    for name, size, randomized in models:
        spec = load_model(name, "random", image_size=size)
        if randomized:
            randomized_statistics(spec.module)
        image, target = unseen_inputs(size, count=3 if quick else 5)
        _, expected_target, expected = input_gradient(spec.module.double(), image.double(), target)
        spec.module.float()
        _, _, eager = input_gradient(spec.module, image, target)
        eager_errors = [relative_l2(g, e) for g, e in zip(eager, expected)]
        for dtype in _dtypes(device, quick):
            formats = _formats(device, quick, dtype)
            artifact = cached_artifact(spec, formats, cache, print, device, dtype)
            for backend, graphs in _backends(formats, device):
                source = spec if backend == EAGER else artifact
                explainer = salrt.load(source, backend=backend, device=device, cuda_graphs=graphs,
                                       **({"dtype": dtype} if backend == EAGER else {}))
                result = explainer.explain(image, target=target)
                errors = [relative_l2(g.cpu(), e) for g, e in zip(result.grad, expected)]
                status = _judged(errors, eager_errors, dtype, torch.equal(result.used_target.cpu(), expected_target))
                failed |= status not in ("verified", "within 1e-2", "not recommended") or \
                    not all(float(g.abs().max()) > 0 for g in result.grad)
                rows.append({"model": name, "size": size, "dtype": dtype, "backend": backend + (GRAPHED if graphs else ""),
                             "median_rel_l2": statistics.median(errors), "max_rel_l2": max(errors), "status": status})
                print(f"  {name} {dtype} {rows[-1]['backend']:24} median {rows[-1]['median_rel_l2']:.1e} "
                      f"max {rows[-1]['max_rel_l2']:.1e} {status}", flush=True)
    return {"status": "failed" if failed else "ok", "rows": rows}


def _judged(errors: list[float], eager_errors: list[float], dtype: str, same_target: bool) -> str:
    if not same_target:
        return "explained other classes"
    if dtype == DEFAULT:
        return judge(errors, eager_errors)
    return "within 1e-2" if statistics.median(errors) <= REDUCED_BOUND else "not recommended"


def end_to_end(device: torch.device, quick: bool, cache: Path, model, batches, rounds) -> dict:
    """salrt bench's reports: float32 on every backend, then the reduced dtypes on the backends that run them
    without a compile of their own (each report times its own naive recipe and forward, interleaved)."""
    from salrt.bench import table
    name, size = model
    reports = {}
    for label, dtypes in (("report", [DEFAULT]), ("reduced", [d for d in _dtypes(device, quick) if d != DEFAULT])):
        if not dtypes:
            continue
        formats = set().union(*(_formats(device, quick, dtype) for dtype in dtypes))
        backends = [EAGER, *(f.backend for f in BY_BACKEND.values() if f.name in formats)]
        reports[label] = benchmark(name, batches, backends, weights="random", rounds=rounds, cache=cache,
                                   progress=print, device=str(device), image_size=size, dtypes=dtypes)
        print(table(reports[label]))
    return reports


def _timed_rows(check: Check) -> list[dict]:
    step = check.steps.get("end_to_end", {})
    return [row for label in ("report", "reduced") for row in step.get(label, {}).get("results", [])
            if label == "report" or row["dtype"] != DEFAULT]


def goals(check: Check) -> list[dict]:
    """Each goal with the figure the run measured (None where its step did not run)."""
    rows = []
    bandwidth = check.steps.get("op_bandwidth", {}).get("rows", [])
    for dtype in ("f32", "bf16"):
        fractions = [r["copy_fraction"] for r in bandwidth if r["dtype"] == dtype]
        rows.append(_goal(f"fused op {dtype} / copy bandwidth", max(fractions) if fractions else None,
                          GOALS["op_fraction_of_copy"], at_least=True))
    reduced = [r["median_rel_l2"] for r in check.steps.get("correctness", {}).get("rows", []) if r["dtype"] == "bf16"]
    rows.append(_goal("bf16 grad rel. L2 vs float64 (worst median)", max(reduced) if reduced else None, REDUCED_BOUND,
                      at_least=False))
    results = _timed_rows(check)
    for n in (1, 32):
        salrt_rows = [r for r in results if r["batch"] == n and r["backend"] not in (NAIVE, FORWARD)]
        best = max(salrt_rows, key=lambda r: r["speedup_vs_naive"]) if salrt_rows else None
        rows.append(_goal(f"best salrt vs naive, N={n}" + (f" ({best['backend']}, {best['dtype']})" if best else ""),
                          best and best["speedup_vs_naive"], GOALS[f"speedup_vs_naive_n{n}"], at_least=True))
        if n == 32:
            rows.append(_goal("saliency / forward, N=32", best and best["cost_vs_forward"],
                              GOALS["cost_vs_forward_n32"], at_least=False))
    return rows


def _goal(what: str, measured, target: float, at_least: bool) -> dict:
    met = None if measured is None else (measured >= target if at_least else measured <= target)
    return {"goal": what, "target": f"{'≥' if at_least else '≤'} {target:g}", "measured": measured, "met": met}


def markdown(check: Check, device: torch.device) -> str:
    env = check.steps.get("environment", {})
    lines = [f"# salrt GPU check on {env.get('device', device)} (torch {env.get('torch', '?')})", "",
             "| step | status | seconds | notes |", "|---|---|---|---|"]
    for name, step in check.steps.items():
        note = step.get("summary") or step.get("why") or step.get("error", "")
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '')} | {str(note)[:120]} |")
    rows = check.steps.get("correctness", {}).get("rows", [])
    if rows:
        lines += ["", "| model | dtype | backend | median rel. L2 vs float64 | max | status |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} {r['size']}px | {r['dtype']} | {r['backend']} | {r['median_rel_l2']:.1e} | "
                  f"{r['max_rel_l2']:.1e} | {r['status']} |" for r in rows]
    results = _timed_rows(check)
    if results:
        lines += ["", "| backend | dtype | N | p50 ms | ms/img | vs naive | ÷ forward |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['backend']} | {r['dtype']} | {r['batch']} | {r['p50_ms']:.2f} | {r['ms_per_image']:.2f} | "
                  f"{r['speedup_vs_naive']:.2f}x | {r['cost_vs_forward']:.2f} |"
                  for r in sorted(results, key=lambda r: (r["batch"], r["p50_ms"]))]
    lines += ["", "| goal | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['target']} | {_figure(g['measured'])} | "
              f"{'—' if g['met'] is None else ('yes' if g['met'] else 'no')} |" for g in goals(check)]
    return "\n".join(lines) + "\n"


def _figure(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="a small model, small sizes, N=1 (CI: under 2 minutes)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=450, help="skip a step that would end past this")
    args = parser.parse_args(argv)
    device = checked_device(args.device)
    plan = PLAN["quick" if args.quick else "full"]
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "artifacts"
    check = Check(args.out, args.budget_s)
    check.run("environment", environment, 0, device)
    check.run("op_tests", op_tests, 10, device, args.quick)
    check.run("op_bandwidth", op_bandwidth, 10, device, args.quick, plan["op_batches"])
    check.run("correctness", correctness, 30 if args.quick else 150, device, args.quick, cache, plan["correctness"])
    check.run("end_to_end", end_to_end, 20 if args.quick else 120, device, args.quick, cache, plan["end_to_end"],
              plan["batches"], plan["rounds"])
    results = {"device": args.device, "quick": args.quick, "steps": check.steps, "goals": goals(check)}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "results.md").write_text(markdown(check, device))
    print((args.out / "results.md").read_text())
    return 0 if all(step["status"] != "failed" for step in check.steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
