"""Grad-CAM: salrt's exported graphs against pytorch-grad-cam 1.5.7, Captum's LayerGradCam and the plain forward.

ResNet-50 and ViT-B/16 (torchvision, random weights), 224 px, CPU, N=1 and N=8, each at the layer salrt
chooses (``layer4``; ``encoder.layers.encoder_layer_11.ln_1``). Contestants:
- salrt: each backend of one Grad-CAM artifact (its backward stops at the layer);
- pytorch-grad-cam's ``GradCAM`` and Captum's ``LayerGradCam`` (+ bilinear upsampling), eager with hooks, the
  model's weights requiring grad as their users' models do (both call backward through the whole model);
- the plain forward: the same model exported forward-only to ONNX (torch.onnx, dynamo) run in onnxruntime,
  and eager PyTorch under inference_mode.
Rounds are interleaved (every contestant once per round) after a warm-up; medians reported, with the map's largest
difference to pytorch-grad-cam's (ViT: with the reshape its docs have users write). The CPU and its measured
peak are printed with the table. Updates docs/bench-cams.json and the README's table.

    python benchmarks/bench_cams.py [--rounds 5] [--batches 1,8] [--backends onnxruntime,aoti_n1,aoti]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import salrt
from salrt.bench import replace_readme_block
from salrt.bench.harness import exporter_fingerprint, forward_flops, peak_gflops
from salrt.devices import cpu_description
from salrt.models import load_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from cam_references import tokens_to_grid  # noqa: E402

RESULTS = ROOT / "docs" / "bench-cams.json"
MODELS = {"resnet50": None, "vit_b_16": tokens_to_grid(1, (14, 14))}  # name: pytorch-grad-cam's reshape


def artifact_for(name: str, formats: list[str]) -> Path:
    directory = ROOT / ".salrt-bench" / f"{name}-random-gradcam-{'-'.join(sorted(formats))}-{exporter_fingerprint()}"
    if not salrt.artifact.is_artifact_dir(directory):
        print(f"exporting {name} gradcam ({', '.join(formats)})", flush=True)
        salrt.export(name, directory, formats=formats, weights="random", method=salrt.Method("gradcam"),
                     progress=print)
    return directory


def normalized(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image: (m - min) / (max - min + 1e-7) per image."""
    shifted = maps - maps.amin((1, 2), keepdim=True)
    return shifted / (shifted.amax((1, 2), keepdim=True) + 1e-7)


def eager_references(model: torch.nn.Module, layer: str, reshape) -> dict:
    """pytorch-grad-cam's and Captum's Grad-CAM as their users call them: hooks, weights that require grad."""
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    trainable = copy.deepcopy(model).requires_grad_(True)
    module = trainable.get_submodule(layer)
    grad_cam = GradCAM(model=trainable, target_layers=[module], reshape_transform=reshape)
    captum = LayerGradCam(trainable, module)

    def pytorch_grad_cam(x, t):
        return torch.from_numpy(grad_cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))

    def captum_layer_gradcam(x, t):
        cam = captum.attribute(x, target=t, relu_attributions=True)
        return normalized(LayerAttribution.interpolate(cam, x.shape[2:], "bilinear")[:, 0].detach())
    # Captum takes no reshape: on a ViT its layer output is tokens, not a map, and it has no row
    return {"pytorch-grad-cam": pytorch_grad_cam, **({"captum LayerGradCam": captum_layer_gradcam} if reshape is None
                                                     else {})}


def forward_runs(model: torch.nn.Module, workdir: Path, n: int, size: int = 224) -> dict:
    """The plain forward: exported forward-only to ONNX for batches of ``n`` (a static batch: with a dynamic one,
    onnxruntime's session for ViT-B/16 grows past 24 GiB) and run in onnxruntime, and eager under
    inference_mode."""
    import onnxruntime
    path = workdir / f"forward-{n}.onnx"
    torch.onnx.export(model, (torch.randn(n, 3, size, size),), str(path), dynamo=True, input_names=["image"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def eager(x, t):
        with torch.inference_mode():
            model(x)
    return {"forward: onnxruntime": lambda x, t: session.run(None, {"image": x.numpy()}) and None,
            "forward: eager": eager}


def measure(contestants: dict, x: torch.Tensor, t: torch.Tensor, rounds: int) -> tuple[dict, dict]:
    outputs = {label: run(x, t) for label, run in contestants.items()}  # warm-up, and the maps
    times = {label: [] for label in contestants}
    for _ in range(rounds):
        for label, run in contestants.items():
            started = time.perf_counter()
            run(x, t)
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in times.items()}, outputs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--backends", default="onnxruntime,aoti_n1,aoti")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    formats = list(dict.fromkeys(salrt.formats.BY_BACKEND[b].name for b in backends))
    peak = peak_gflops()
    rows = []
    for name in args.models.split(","):
        model = load_model(name, "random").module.eval()
        directory = artifact_for(name, formats)
        layer = salrt.load(directory, backend=backends[0]).manifest["method"]["layer"]
        flops = forward_flops(model, (3, 224, 224))
        with tempfile.TemporaryDirectory() as workdir:
            contestants = {f"salrt {b}": (lambda x, t, e=salrt.load(directory, backend=b): e.explain(x, t).saliency)
                           for b in backends}
            contestants |= eager_references(model, layer, MODELS[name])
            for n in map(int, args.batches.split(",")):
                x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
                with torch.no_grad():  # the top class, as users explain it (given explicitly to every runner)
                    t = model(x).argmax(1)
                seconds, outputs = measure(contestants | forward_runs(model, Path(workdir), n), x, t, args.rounds)
                rows += report_rows(name, layer, n, seconds, outputs, flops, peak, backends)
    report = {"cpu": cpu_description(), "peak_gflops": peak, "threads": torch.get_num_threads(),
              "rounds": args.rounds, "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(table(report))
    if not args.no_readme:
        write_readme(report)
    return report


def write_readme(report: dict) -> None:
    replace_readme_block(ROOT / "README.md", "cams-bench", (
        f"Generated by `python benchmarks/bench_cams.py` ({report['cpu']}, peak {report['peak_gflops']:.0f} GFLOP/s "
        f"measured in the same run, {report['threads']} threads, medians of {report['rounds']} interleaved rounds "
        "after a warm-up; random weights, 224 px, the top class, Grad-CAM at the layer salrt chooses; Captum's "
        "LayerGradCam takes no reshape, so it has no ViT row):\n\n" + table(report)))


def report_rows(name, layer, n, seconds, outputs, flops, peak, backends) -> list[dict]:
    best = min((f"salrt {b}" for b in backends), key=seconds.get)
    reference = outputs["pytorch-grad-cam"]
    rows = []
    for label, median in seconds.items():
        output = outputs[label]
        error = None if output is None or label.startswith("forward") else \
            float((torch.as_tensor(output).float() - reference).abs().amax())
        rows.append({"model": name, "layer": layer, "batch": n, "runner": label, "ms_per_image": 1e3 * median / n,
                     "best_salrt": label == best, "vs_best_salrt": median / seconds[best],
                     "gflops_per_s_forward": flops * n / median / 1e9, "max_abs_vs_pytorch_grad_cam": error})
        print(f"{name:9} N={n} {label:22} {1e3 * median / n:8.1f} ms/img  {median / seconds[best]:5.2f}x salrt's best"
              + ("" if error is None else f"  max |diff| {error:.1e}"), flush=True)
    return rows


def table(report: dict) -> str:
    lines = ["| model (layer) | N | runner | ms / image | time ÷ salrt's best | forward GFLOP/s (% of peak) | "
             "max \\|difference\\| to pytorch-grad-cam (maps in [0, 1]) |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        error = "" if r["max_abs_vs_pytorch_grad_cam"] is None else f"{r['max_abs_vs_pytorch_grad_cam']:.1e}"
        runner = f"**{r['runner']}**" if r["best_salrt"] else r["runner"]
        lines.append(f"| {r['model']} (`{r['layer']}`) | {r['batch']} | {runner} | {r['ms_per_image']:.1f} | "
                     f"{r['vs_best_salrt']:.2f} | {r['gflops_per_s_forward']:.0f} "
                     f"({100 * r['gflops_per_s_forward'] / report['peak_gflops']:.0f}%) | {error} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
