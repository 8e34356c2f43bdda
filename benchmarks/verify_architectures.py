"""Export classifiers from torchvision, timm and Hugging Face and check every image's input gradient against
float64 autograd.

Each model gets random weights with its batch-norm statistics randomized (``tests/architectures.py``), is exported
at its own input size, and is run on images the export never saw. A row is verified when the median image is at
the float32 floor and no image is further off than a flipped ReLU (``tests/architectures.py: judge``); an export
over 5 minutes counts as a failure. Each model runs in a subprocess of its own with a time limit, so one that hangs
or runs out of memory is a row of the report, not the end of the run.

Writes docs/architectures.json, docs/architectures.md and the table between the README's architecture markers, so
the list of verified architectures is always what a run measured, never typed by hand. Rows of earlier runs stay.

    python benchmarks/verify_architectures.py --family timm --formats onnx     # one family, in parts
    python benchmarks/verify_architectures.py timm:resnet26d hf:vit torchvision:vit_b_16
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from architectures import (EAGER_FACTOR, FLIP, FLOOR, FORMATS, hf_model, randomized_statistics,  # noqa: E402
                           timm_model, verify)

RESULTS = ROOT / "docs" / "architectures.json"
EXPORT_LIMIT_S = 300   # an export slower than this on the 2-core CPU machine counts as a failure
CHECK_LIMIT_S = 900    # the whole subprocess: build, float64 reference, export and every backend

# (name, the family it stands for, timm.create_model overrides): the smallest member of each family; a depth
# override where the family has no small member (the architecture's blocks, fewer of them).
TIMM = [
    ("efficientnet_b0", "CNN, SE + SiLU", {}), ("mobilenetv3_small_100", "CNN, SE + hard-swish", {}),
    ("lcnet_050", "CNN, hard-swish", {}), ("rexnet_100", "CNN, SE + SiLU", {}), ("regnety_002", "CNN, SE", {}),
    ("ghostnet_100", "CNN, ghost modules", {}), ("resnet26d", "ResNet-D (avg-pool downsample)", {}),
    ("resnet50d", "ResNet-D (avg-pool downsample)", {}), ("resnest14d", "split attention", {}),
    ("ese_vovnet19b_dw", "VoVNet, eSE", {}), ("dla34", "DLA", {}), ("hrnet_w18_small", "HRNet (nearest upsample)", {}),
    ("convnext_atto", "ConvNeXt", {}), ("convnextv2_atto", "ConvNeXt V2 (GRN)", {}),
    ("inception_next_tiny", "InceptionNeXt", {}),
    ("vit_tiny_patch16_224", "ViT", {}), ("deit_tiny_patch16_224", "DeiT", {}),
    ("beit_base_patch16_224", "BEiT (relative position bias)", {"depth": 4}),
    ("eva02_tiny_patch14_224", "EVA-02 (rotary, SwiGLU)", {}), ("cait_xxs24_224", "CaiT (class attention)", {}),
    ("xcit_nano_12_p16_224", "XCiT", {}), ("pit_ti_224", "PiT", {}), ("crossvit_tiny_240", "CrossViT", {}),
    ("swin_tiny_patch4_window7_224", "Swin", {}), ("swinv2_cr_tiny_ns_224", "Swin V2 (CR)", {}),
    ("mixer_s16_224", "MLP-Mixer", {}), ("repvgg_a0", "RepVGG (reparameterizable)", {}),
    ("mobileone_s0", "MobileOne (reparameterizable)", {}), ("fastvit_t8", "FastViT (reparameterizable)", {}),
    ("nf_regnet_b0", "NFNet (RegNet)", {}), ("nf_resnet26", "NFNet (ResNet)", {}),
    ("poolformer_s12", "PoolFormer (GroupNorm, avg-pool mixer)", {}), ("mobilevit_xxs", "MobileViT", {}),
    ("mobilevitv2_050", "MobileViT V2", {}), ("edgenext_xx_small", "EdgeNeXt", {}), ("levit_128s", "LeViT", {}),
    ("efficientformer_l1", "EfficientFormer", {}), ("efficientvit_b0", "EfficientViT (MIT)", {}),
    ("tiny_vit_5m_224", "TinyViT", {}), ("visformer_tiny", "Visformer", {}), ("gcvit_xxtiny", "GCViT", {}),
    ("maxvit_pico_rw_256", "MaxViT", {}), ("coatnet_pico_rw_224", "CoAtNet", {}),
]


def _hf_configs() -> dict:
    """Small configs of Hugging Face image classifiers (random weights): the architecture, fewer and narrower
    layers, at the config's own 224 px."""
    import transformers as t
    vit = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=224)
    return {
        "vit": ("ViT", lambda: t.ViTConfig(**vit)),
        # two DeiT heads share the config: the one classifying with the distillation token too
        "deit": ("DeiT (distillation token)", lambda: t.DeiTConfig(
            **vit, architectures=["DeiTForImageClassificationWithTeacher"])),
        "beit": ("BEiT (relative position bias)", lambda: t.BeitConfig(**vit, use_relative_position_bias=True)),
        "convnext": ("ConvNeXt", lambda: t.ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1])),
        "swin": ("Swin", lambda: t.SwinConfig(embed_dim=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4])),
        "resnet": ("ResNet (batch norm)", lambda: t.ResNetConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                                                 embedding_size=16)),
        "mobilevit": ("MobileViT", lambda: t.MobileViTConfig(image_size=256)),
        "efficientnet": ("EfficientNet (B0)", lambda: t.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0,
                                                                           hidden_dim=1280, image_size=224)),
        "regnet": ("RegNet", lambda: t.RegNetConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1],
                                                    groups_width=8, embedding_size=16)),
    }


def _hf_size(config) -> int:
    size = getattr(config, "image_size", 224)
    return size if isinstance(size, int) else size[0]


TORCHVISION = ["vit_b_16", "swin_t"]  # the rest of torchvision's rows come from earlier runs (kept in the JSON)


def models(family: str | None) -> list[str]:
    """Every model the script knows, as SOURCE:NAME, in one family or all."""
    names = {"timm": [f"timm:{name}" for name, _, _ in TIMM], "hf": [f"hf:{name}" for name in _hf_configs()],
             "torchvision": [f"torchvision:{name}" for name in TORCHVISION]}
    return names[family] if family else [name for family_names in names.values() for name in family_names]


def build(model: str) -> tuple[torch.nn.Module, int, str, dict]:
    """(module with random weights and statistics, its own input size, the family it stands for, overrides)."""
    source, name = model.split(":", 1)
    if source == "timm":
        family, overrides = next((f, o) for n, f, o in TIMM if n == name)
        module = timm_model(name, **overrides)
        return module, module.pretrained_cfg["input_size"][-1], family, overrides
    if source == "hf":
        family, config = _hf_configs()[name]
        config = config()
        return hf_model(config), _hf_size(config), family, {}
    from salrt.models import load_model
    module = randomized_statistics(load_model(name, "random").module)
    return module, 224, "torchvision", {}


def check_one(model: str, formats: list[str]) -> dict:
    module, size, family, overrides = build(model)
    row = {"model": model, "family": family, "overrides": overrides, "size": size, "formats": formats,
           "params_m": sum(p.numel() for p in module.parameters()) / 1e6}
    result = verify(module, size, formats)
    row |= {"export_s": result["export_s"], "errors": result["errors"], "status": result["status"]}
    if result["export_s"] > EXPORT_LIMIT_S:
        row["status"] = f"export over {EXPORT_LIMIT_S} s"
    return row


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    # the line that names the op, else the exception's own line
    line = next((line for line in reversed(lines) if "aten." in line or "prims." in line), lines[-1] if lines else "")
    return line.strip()[:200].replace("|", "/")


def run_isolated(model: str, formats: list[str]) -> dict:
    """``check_one`` in a subprocess with a time limit: its row, or the error that stopped it."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--one", model, "--formats", ",".join(formats)],
                              capture_output=True, text=True, timeout=CHECK_LIMIT_S)
    except subprocess.TimeoutExpired:
        return {"model": model, "error": f"over {CHECK_LIMIT_S} s in all (export limit: {EXPORT_LIMIT_S} s)"}
    rows = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and rows:
        return json.loads(rows[-1])
    sys.stderr.write(done.stderr[-4000:])
    killed = f"killed by signal {-done.returncode}" + (" (out of memory?)" if done.returncode == -9 else "")
    return {"model": model, "error": killed if done.returncode < 0 else _first_line(done.stderr),
            "seconds": time.perf_counter() - started}


def _cell(row: dict, fmt: str) -> str:
    if "errors" not in row:  # an earlier run's row: one error over 2 images per backend
        value = row.get({"onnx": "onnxruntime"}.get(fmt, fmt))
        return "" if value is None else f"{value:.1e} (2 images)"
    errors = row["errors"].get(fmt)
    if errors is None:
        return ""
    ordered = sorted(errors)
    off = sum(e > 10 * FLOOR for e in ordered)
    return f"{ordered[len(ordered) // 2]:.1e} / {ordered[-1]:.1e}" + (f" ({off} flip{'s' * (off > 1)})" if off else "")


def markdown(rows: list[dict]) -> str:
    lines = ["| model | family | params (M) | input | ONNX: median / worst image | TorchScript: median / worst image | "
             "export (s) | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('family', '')} | | | | | | not supported: {r['error']} |")
            continue
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r.get('family', '')} | | | | | | not run: {r['skipped']} |")
            continue
        name = r["model"] + "".join(f" ({key} {value})" for key, value in r.get("overrides", {}).items())
        lines.append(f"| {name} | {r.get('family', 'torchvision (earlier run)')} | {r['params_m']:.1f} | {r['size']} | "
                     f"{_cell(r, 'onnx')} | {_cell(r, 'torchscript')} | {r['export_s']:.0f} | {r['status']} |")
    return "\n".join(lines) + "\n"


def _sourced(row: dict) -> dict:
    """Rows of runs before timm and Hugging Face were named by torchvision name alone."""
    return row if ":" in row["model"] else {**row, "model": f"torchvision:{row['model']}"}


def merged_rows(rows: list[dict]) -> list[dict]:
    """This run's rows over the ones earlier runs stored, so a run over a few models updates their rows."""
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    by_model = {r["model"]: r for r in map(_sourced, stored)} | {r["model"]: r for r in rows}
    for name in models(None):  # the script's models no run has reached yet: listed, never left out silently
        by_model.setdefault(name, {"model": name, "family": _family(name), "skipped": "no run yet (CPU time)"})
    return [by_model[name] for name in sorted(by_model)]


def _family(model: str) -> str:
    source, name = model.split(":", 1)
    if source == "timm":
        return next(f for n, f, _ in TIMM if n == name)
    return _hf_configs()[name][0] if source == "hf" else "torchvision"


def write_reports(rows: list[dict]) -> None:
    from salrt.bench import replace_readme_block
    rows = merged_rows(rows)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1))
    run = [r for r in rows if "skipped" not in r]
    counts = {source: sum(r["model"].startswith(source + ":") for r in run) for source in ("timm", "hf", "torchvision")}
    table = (f"Generated by `python benchmarks/verify_architectures.py` (results kept in docs/architectures.json) "
             f"on torch {torch.__version__.split('+')[0]}: {sum(r.get('status') == 'verified' for r in run)} of "
             f"{len(run)} run verified ({counts['timm']} timm, {counts['hf']} Hugging Face, {counts['torchvision']} "
             f"torchvision run), {len(rows) - len(run)} not run yet. Random weights, batch-norm statistics "
             f"randomized, each model at its own input size; relative L2 of each image's input gradient against "
             f"float64 autograd on 5 images the export never saw (explicit and argmax targets). Verified: median "
             f"image ≤ {FLOOR:g} or ≤ {EAGER_FACTOR}× eager float32's own median on the same images (deep ReLU "
             f"nets flip on most images in eager float32 too), every image ≤ {FLIP:g} (a flipped ReLU), export ≤ "
             f"{EXPORT_LIMIT_S} s on 2 shared "
             f"CPU cores. An empty format column: that format was not run for the row (CPU time). Family \"earlier "
             f"run\": torchvision models checked before (2 images, 128 px where the architecture allows, default "
             f"statistics).\n\n" + markdown(rows))
    (ROOT / "docs" / "architectures.md").write_text("# Verified architectures\n\n" + table)
    replace_readme_block(ROOT / "README.md", "architectures", table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="SOURCE:NAME (default: every model of --family, or all)")
    parser.add_argument("--family", choices=("timm", "hf", "torchvision"))
    parser.add_argument("--formats", default=",".join(FORMATS), help="onnx,torchscript (default) or one of them")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the subprocess: check one model, print its row
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    if args.one:
        print(json.dumps(check_one(args.one, formats)))
        return
    rows = []
    for model in args.models or models(args.family):
        rows.append(run_isolated(model, formats))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "overrides"}), flush=True)
        write_reports(rows)  # after every model: a long run that is stopped still leaves its table


if __name__ == "__main__":
    main()
