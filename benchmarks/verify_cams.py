"""Grad-CAM on every architecture benchmarks/verify_architectures.py knows, at the layer salrt chooses, against
pytorch-grad-cam 1.5.7 in float64 on that layer.

Each model (random weights, randomized batch-norm statistics, its own input size) gets its default layer from
salrt (``salrt.graph.layers``), is exported to ONNX with Grad-CAM, and runs on 3 images the export never saw
(explicit and top-class targets). pytorch-grad-cam gets the reshape that salrt's manifest records for the layer
(tests/test_cams.py checks those reshapes against hand-written ones). A row is verified when the median image's
map is at the float32 floor, none is further off than a flipped ReLU, and not every map is constant (with random
weights a class's Grad-CAM can be negative everywhere: all zeros after its ReLU, in pytorch-grad-cam too). Each model runs in
a subprocess with a time limit. Writes docs/cams.json, docs/cams.md and the README's table between its markers.

    python benchmarks/verify_cams.py [--family timm] [MODEL ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import verify_architectures  # noqa: E402
from cam_references import nhwc_to_nchw, per_image_errors, pytorch_grad_cam, tokens_to_grid  # noqa: E402

RESULTS = ROOT / "docs" / "cams.json"
FLOOR, FLIP = 1e-4, 3e-2
LIMIT_S = 600
IMAGES = 3


def reshape_for(tap: dict):
    if tap["layout"] == "tokens":
        return tokens_to_grid(tap["prefix"], tuple(tap["grid"]))
    return nhwc_to_nchw if tap["layout"] == "nhwc" else None


def check_one(model_name: str) -> dict:
    import salrt
    module, size, family, _ = verify_architectures.build(model_name)
    row = {"model": model_name, "family": family, "size": size}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        directory = salrt.export(module, Path(workdir) / "artifact", formats="onnx", image_size=size,
                                 method=salrt.Method("gradcam"))
        row["export_s"] = time.perf_counter() - started
        explainer = salrt.load(directory, backend="onnxruntime")
        entry = explainer.manifest["method"]
        image = torch.randn(IMAGES, 3, size, size, generator=torch.Generator().manual_seed(7))
        result = explainer.explain(image, torch.tensor([-1, 3, -1]))
    expected = pytorch_grad_cam("gradcam", module, [entry["layer"]], image, result.target, reshape_for(entry["taps"][0]))
    errors = per_image_errors(result.saliency, expected)
    constant = sum(float(s.amax() - s.amin()) < 0.5 for s in result.saliency)
    verified = errors[len(errors) // 2] < FLOOR and errors[-1] < FLIP and constant < IMAGES
    return row | {"layer": entry["layer"], "reshape": entry["taps"][0]["reshape"], "errors": errors,
                  "constant_maps": constant, "status": "verified" if verified else "differs"}


def run_isolated(model: str) -> dict:
    try:
        done = subprocess.run([sys.executable, __file__, "--one", model], capture_output=True, text=True,
                              timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        return {"model": model, "error": f"over {LIMIT_S} s"}
    rows = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and rows:
        return json.loads(rows[-1])
    return {"model": model, "error": verify_architectures._first_line(done.stderr) or "no output"}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | family | input | default layer | reshape | ONNX vs pytorch-grad-cam: median / worst image | "
             "all-zero maps | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('family', '')} | | | | | | not supported: {r['error']} |")
        else:
            errors = r["errors"]
            lines.append(f"| {r['model']} | {r['family']} | {r['size']} | `{r['layer']}` | {r['reshape']} | "
                         f"{errors[len(errors) // 2]:.1e} / {errors[-1]:.1e} | {r['constant_maps']} of {IMAGES} | "
                         f"{r['status']} |")
    verified = sum(r.get("status") == "verified" for r in rows)
    return "\n".join(lines) + f"\n\n{verified} of {len(rows)} architectures verified.\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--family", choices=["timm", "hf", "torchvision"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(check_one(args.one)))
        return
    stored = {r["model"]: r for r in json.loads(RESULTS.read_text())} if RESULTS.exists() else {}
    for model in args.models or verify_architectures.models(args.family):
        started = time.perf_counter()
        stored[model] = run_isolated(model)
        print(f"{model:40} {stored[model].get('status', stored[model].get('error'))} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        RESULTS.write_text(json.dumps([stored[m] for m in sorted(stored)], indent=1))
    rows = [stored[m] for m in sorted(stored)]
    (ROOT / "docs" / "cams.md").write_text("# Grad-CAM per architecture\n\nGenerated by `python benchmarks/"
                                             f"verify_cams.py`.\n\n{markdown(rows)}")
    if not args.no_readme:
        from salrt.bench import replace_readme_block
        replace_readme_block(ROOT / "README.md", "cams-verified", "Generated by `python benchmarks/verify_cams.py` "
                             "(Grad-CAM exported to ONNX, 3 unseen images, float64 pytorch-grad-cam on the same "
                             f"layer):\n\n{markdown(rows)}")


if __name__ == "__main__":
    main()
