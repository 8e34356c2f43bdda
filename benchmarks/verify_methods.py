"""Every method of the gradient family, exported to every format, against Captum in float64.

The check of tests/test_methods.py (same references, tests/references.py) over the whole matrix: 4
architectures (batch norm, depthwise convolutions, a transformer, a plain CNN) x 6 methods x 4 backends
(TorchScript, onnxruntime, AOTInductor and its single-image package). AOTInductor compiles twice per export,
which is why CI runs a part of it and this script the rest. Inputs are fresh random images the export never
saw (N=3, targets argmax / 7 / argmax). Results go to docs/methods-verified.json and the README.

    python benchmarks/verify_methods.py                       # the whole matrix (about 25 min on 2 cores)
    python benchmarks/verify_methods.py --archs tiny_vit --methods smoothgrad
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import salrt
from salrt.bench import replace_readme_block
from salrt.formats import FORMATS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from references import SIZE, SMALL, captum_reference, tiny_vit  # noqa: E402  (the tests' own references)

RESULTS = ROOT / "docs" / "methods-verified.json"
EXPORTED = ["torchscript", "onnx", "aoti", "aoti_n1"]
BACKENDS = [FORMATS[f].backend for f in EXPORTED]
ARCHS = {
    "resnet18": lambda: salrt.models.load_model("resnet18", "random").module,                      # batch norm
    "mobilenet_v3_small": lambda: salrt.models.load_model("mobilenet_v3_small", "random").module,  # depthwise
    "tiny_vit": tiny_vit,                                                                          # attention
    "squeezenet1_1": lambda: salrt.models.load_model("squeezenet1_1", "random").module,            # plain CNN
}
TOLERANCE = 2e-2  # per image; float32 sits near 1e-6 and an image whose ReLU flips lands at 1e-3..1e-2


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def check(arch: str, name: str) -> list[dict]:
    """One export of ``arch`` with method ``name`` to every format; a row per backend."""
    model, method = ARCHS[arch]().eval(), SMALL[name]
    generator = torch.Generator().manual_seed(2025)
    image, target = torch.randn(3, 3, SIZE, SIZE, generator=generator), torch.tensor([-1, 7, -1])
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        artifact = salrt.export(model, Path(directory) / "a", formats=EXPORTED, image_size=SIZE, method=method)
        export_s = time.perf_counter() - started
        for backend in BACKENDS:
            result = salrt.load(artifact, backend=backend).explain(image, target)
            reference, reference_delta = captum_reference(method, model, image, result.target)
            errors = [relative_l2(a, r) for a, r in zip(result.attribution, reference)]
            row = {"arch": arch, "method": name, "backend": backend, "export_s": export_s,
                   "median_rel_l2": statistics.median(errors), "max_rel_l2": max(errors),
                   "nonzero": bool(all(r.abs().amax() > 0 for r in result.attribution))}
            if reference_delta is not None:
                row["delta_abs_error"] = float((result.delta.double() - reference_delta).abs().max())
                row["delta_scale"] = float(reference.abs().sum((1, 2, 3)).max())
            row["status"] = "verified" if row["nonzero"] and row["max_rel_l2"] <= TOLERANCE else "FAILED"
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    lines = ["| architecture | method | " + " | ".join(backends) + " | export (s) |",
             "|---|---|" + "---|" * (len(backends) + 1)]
    by_case = {}
    for r in rows:
        by_case.setdefault((r["arch"], r["method"]), {})[r["backend"]] = r
    for (arch, name), cells in by_case.items():
        shown = [f"{c['median_rel_l2']:.1e} / {c['max_rel_l2']:.1e}" + ("" if c["status"] == "verified" else " FAILED")
                 if (c := cells.get(b)) else "" for b in backends]
        lines.append(f"| {arch} | {name} | " + " | ".join(shown) +
                     f" | {next(iter(cells.values()))['export_s']:.0f} |")
    return "\n".join(lines) + "\n"


def write_reports(rows: list[dict]) -> None:
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    key = lambda r: (r["arch"], r["method"], r["backend"])  # noqa: E731
    merged = {key(r): r for r in stored} | {key(r): r for r in rows}
    order = {(a, m, b): (i, j, k) for i, a in enumerate(ARCHS) for j, m in enumerate(SMALL)
             for k, b in enumerate(BACKENDS)}
    rows = sorted(merged.values(), key=lambda r: order.get(key(r), (99, 99, 99)))
    RESULTS.write_text(json.dumps(rows, indent=1))
    failed = sum(r["status"] != "verified" for r in rows)
    body = (f"Generated by `python benchmarks/verify_methods.py` (results kept in docs/methods-verified.json) on "
            f"torch {torch.__version__.split('+')[0]}: the attribution's relative L2 to Captum in float64, median / "
            f"worst of 3 unseen random images per cell, {SIZE} px, the methods at tests/references.py's small "
            f"parameters; {len(rows) - failed} of {len(rows)} cells verified (worst image ≤ {TOLERANCE:g}, "
            "attributions non-zero).\n\n" + markdown(rows))
    replace_readme_block(ROOT / "README.md", "methods-verified", body)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--methods", default=",".join(SMALL))
    args = parser.parse_args(argv)
    cases = [(a, m) for a in args.archs.split(",") for m in args.methods.split(",")]
    rows = []
    for i, (arch, name) in enumerate(cases, 1):
        rows += check(arch, name)
        print(f"[{i}/{len(cases)}] {arch} {name}: " + ", ".join(
            f"{r['backend']} {r['max_rel_l2']:.1e} ({r['status']})" for r in rows[-4:]), flush=True)
        write_reports(rows)  # after every case: a stopped run still leaves its rows
    return rows


if __name__ == "__main__":
    main()
