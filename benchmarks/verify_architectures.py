"""Export classifiers from torchvision, timm and Hugging Face, segmentation models and set-prediction detectors,
and check every image's input gradient against float64 autograd.

Each model gets random weights with its batch-norm statistics randomized (``tests/architectures.py``), is exported
at its own input size, and is run on images the export never saw. A row is verified when the median image is at
the float32 floor and no image is further off than a flipped ReLU (``tests/architectures.py: judge``); an export
over 5 minutes counts as a failure. Each model runs in a subprocess of its own with a time limit, so one that hangs
or runs out of memory is a row of the report, not the end of the run.

Segmentation rows (``--family segmentation``) explain a class's logits summed over a region, detection rows
(``--family detection``) one query's class logit; images with a given region (box) or class and images with the
defaults, the class, region and query chosen from float64 outputs by the rules of tests/test_segmentation.py and
tests/test_detection.py, which every export must choose too (``tests/architectures.py: verify_segmentation,
verify_detection``). Hugging Face models are tiny configs saved with an image processor and read back as a user's
``hf:`` directory; detectors' weights are redrawn so that their queries differ.

Writes docs/architectures.json, docs/architectures.md and the table between the README's architecture markers, so
the list of verified architectures is always what a run measured, never typed by hand. Rows of earlier runs stay.

    python benchmarks/verify_architectures.py --family timm --formats onnx     # one family, in parts
    python benchmarks/verify_architectures.py timm:resnet26d hf:vit torchvision:vit_b_16
    python benchmarks/verify_architectures.py --family segmentation     # or detection
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from architectures import (EAGER_FACTOR, FLIP, FLOOR, FORMATS, hf_model, hf_saved,  # noqa: E402
                           randomized_statistics, redrawn, timm_model, verify, verify_detection, verify_segmentation)

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
TASK_SIZE = 128   # torchvision's segmentation models; the tests' tiny models keep their 64 px (tests' SIZE)


class _Directories:
    """What the tests' model builders take from pytest's ``tmp_path_factory``: ``mktemp(name)``, a new
    directory (under one the caller removes)."""

    def __init__(self, root: str):
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.root))


def _hf_detector(kind: str, directories: _Directories):
    """Detectors beyond the tests' DETR and YOLOS: tiny configs, weights redrawn as the tests' ``hf_detector``
    does, saved with their image processors at the tests' size."""
    import transformers as t
    from test_detection import CLASSES, SIZE
    labels = dict(id2label=dict(enumerate(CLASSES)), label2id={name: i for i, name in enumerate(CLASSES)})
    small = dict(num_queries=6, encoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=32, decoder_ffn_dim=32, **labels)
    if kind == "conditional_detr":
        config = t.ConditionalDetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, d_model=16, decoder_layers=1, **small,
            backbone_config=t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                           out_features=["stage2"]))
        model, processor = t.ConditionalDetrForObjectDetection, t.ConditionalDetrImageProcessor
    elif kind == "deformable_detr":  # d_model: a multiple of its GroupNorm's 32 groups; 2 decoder layers (tied heads)
        config = t.DeformableDetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, d_model=32, decoder_layers=2, **small,
            num_feature_levels=2, encoder_n_points=2, decoder_n_points=2,
            backbone_config=t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1],
                                           out_features=["stage2", "stage3"]))
        model, processor = t.DeformableDetrForObjectDetection, t.DeformableDetrImageProcessor
    else:  # rt_detr
        config = t.RTDetrConfig(
            backbone_config=t.RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                                 layer_type="basic", out_features=["stage2", "stage3", "stage4"]),
            encoder_in_channels=[16, 32, 64], encoder_hidden_dim=16, d_model=16, decoder_in_channels=[16, 16, 16],
            decoder_layers=1, decoder_n_points=2, num_denoising=0,
            **{key: value for key, value in small.items() if key != "encoder_layers"})
        model, processor = t.RTDetrForObjectDetection, t.RTDetrImageProcessor
    torch.manual_seed(0)
    extra = {} if kind == "rt_detr" else {"do_pad": False}
    return hf_saved(redrawn(model(config)), processor(size={"height": SIZE, "width": SIZE}, **extra),
                    directories.mktemp(kind), SIZE)


def _upernet(directories: _Directories):
    """UperNet (PPM + FPN head) on a small ConvNeXt backbone, with SegFormer's image processor (as the
    published UperNet checkpoints have)."""
    import transformers as t
    from test_segmentation import SIZE
    names = ["background", "lesion", "vessel"]
    config = t.UperNetConfig(
        backbone_config=t.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                         out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=16, use_auxiliary_head=False, num_labels=3, id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)})
    torch.manual_seed(0)
    return hf_saved(t.UperNetForSemanticSegmentation(config),
                    t.SegformerImageProcessor(size={"height": SIZE, "width": SIZE}), directories.mktemp("upernet"))


def _user_detector(directories: _Directories):
    import salrt
    from test_detection import CLASSES, SIZE, TinyDetector
    torch.manual_seed(0)
    return salrt.models.as_spec(TinyDetector(), categories=CLASSES, image_size=SIZE)


def _test_builder(module: str, function: str, *args):
    """A model builder of a test file (tests/test_segmentation.py, tests/test_detection.py), called with its
    arguments and, where it takes one, the directories."""
    def build(directories: _Directories):
        import importlib
        make = getattr(importlib.import_module(module), function)
        return make(*args, directories) if function in ("segformer_spec", "hf_detector") else make(*args)
    return build


def _torchvision_segmentation(name: str):
    def build(directories: _Directories):
        from salrt.models import load_model
        return load_model(name, "random", image_size=TASK_SIZE)
    return build


# SOURCE:NAME -> (task, the family it stands for, builder(directories) -> a finished spec with random weights)
TASK_MODELS = {
    "torchvision:lraspp_mobilenet_v3_large": ("segmentation", "LR-ASPP (MobileNetV3)",
                                              _torchvision_segmentation("lraspp_mobilenet_v3_large")),
    "torchvision:deeplabv3_mobilenet_v3_large": ("segmentation", "DeepLabV3 (MobileNetV3, atrous ASPP)",
                                                 _torchvision_segmentation("deeplabv3_mobilenet_v3_large")),
    "torchvision:fcn_resnet50": ("segmentation", "FCN (ResNet-50, dilated)", _torchvision_segmentation("fcn_resnet50")),
    "hf:segformer": ("segmentation", "SegFormer (logits at 1/4 size)",
                     _test_builder("test_segmentation", "segformer_spec")),
    "hf:upernet": ("segmentation", "UperNet (ConvNeXt, PPM + FPN)", _upernet),
    "user:unet": ("segmentation", "U-Net (user module, transposed conv)",
                  _test_builder("test_segmentation", "unet_spec")),
    "hf:detr": ("detection", "DETR (no-object logit)", _test_builder("test_detection", "hf_detector", "detr")),
    "hf:yolos": ("detection", "YOLOS (ViT detection tokens)", _test_builder("test_detection", "hf_detector", "yolos")),
    "hf:conditional_detr": ("detection", "Conditional DETR (sigmoid head)",
                            lambda directories: _hf_detector("conditional_detr", directories)),
    "hf:deformable_detr": ("detection", "Deformable DETR (deformable attention)",
                           lambda directories: _hf_detector("deformable_detr", directories)),
    "hf:rt_detr": ("detection", "RT-DETR (hybrid encoder, deformable attention)",
                   lambda directories: _hf_detector("rt_detr", directories)),
    "user:set_predictor": ("detection", "set predictor (user module: logits, boxes)", _user_detector),
}
TASK_CHECKS = {"segmentation": verify_segmentation, "detection": verify_detection}


def models(family: str | None) -> list[str]:
    """Every model the script knows, as SOURCE:NAME, in one family or all."""
    names = {"timm": [f"timm:{name}" for name, _, _ in TIMM], "hf": [f"hf:{name}" for name in _hf_configs()],
             "torchvision": [f"torchvision:{name}" for name in TORCHVISION],
             **{task: [name for name, (t, _, _) in TASK_MODELS.items() if t == task] for task in TASK_CHECKS}}
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
    with tempfile.TemporaryDirectory() as directory:  # a Hugging Face model's saved directory, while it runs
        if model in TASK_MODELS:
            task, family, make = TASK_MODELS[model]
            spec = dataclasses.replace(make(_Directories(directory)), name=model)  # not the temporary directory
            randomized_statistics(spec.module)
            module, size, overrides = spec.module, spec.input_shape[-1], {}
            check = lambda: TASK_CHECKS[task](spec, formats)  # noqa: E731
        else:
            module, size, family, overrides = build(model)
            task, check = "classification", lambda: verify(module, size, formats)
        row = {"model": model, "family": family, "overrides": overrides, "size": size, "formats": formats,
               "params_m": sum(p.numel() for p in module.parameters()) / 1e6}
        result = check()
    row |= {"export_s": result["export_s"], "errors": result["errors"], "status": result["status"]}
    if task != "classification":  # eager float32's errors: how far rounding alone lands (the judge's floor)
        row |= {"task": task, "eager_errors": result["eager_errors"]}
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
        return {**_named(model), "error": f"over {CHECK_LIMIT_S} s in all (export limit: {EXPORT_LIMIT_S} s)"}
    rows = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and rows:
        return json.loads(rows[-1])
    sys.stderr.write(done.stderr[-4000:])
    killed = f"killed by signal {-done.returncode}" + (" (out of memory?)" if done.returncode == -9 else "")
    return {**_named(model), "error": killed if done.returncode < 0 else _first_line(done.stderr),
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


def markdown(rows: list[dict], tasks: bool = False) -> str:
    """One table: classifiers, or (``tasks``) segmentation and detection models with a task column."""
    task = ["task"] if tasks else []
    header = ["model", *task, "family", "params (M)", "input", "ONNX: median / worst image",
              "TorchScript: median / worst image", *(["eager float32: median"] if tasks else []), "export (s)",
              "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        named = [r["model"], *([_task(r)] if tasks else [])]
        if "error" in r or "skipped" in r:
            why = f"not supported: {r['error']}" if "error" in r else f"not run: {r['skipped']}"
            cells = [*named, r.get("family", ""), *[""] * (len(header) - len(named) - 2), why]
        else:
            named[0] += "".join(f" ({key} {value})" for key, value in r.get("overrides", {}).items())
            eager = [f"{statistics.median(r['eager_errors']):.1e}" if "eager_errors" in r else ""] if tasks else []
            params = f"{r['params_m']:.1f}" if r["params_m"] >= 0.1 else f"{r['params_m']:.3f}"
            cells = [*named, r.get("family", "torchvision (earlier run)"), params, str(r["size"]),
                     _cell(r, "onnx"), _cell(r, "torchscript"), *eager, f"{r['export_s']:.0f}", r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sourced(row: dict) -> dict:
    """Rows of runs before timm and Hugging Face were named by torchvision name alone."""
    return row if ":" in row["model"] else {**row, "model": f"torchvision:{row['model']}"}


def merged_rows(rows: list[dict]) -> list[dict]:
    """This run's rows over the ones earlier runs stored, so a run over a few models updates their rows."""
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    by_model = {r["model"]: r for r in map(_sourced, stored)} | {r["model"]: r for r in rows}
    for name in models(None):  # the script's models no run has reached yet: listed, never left out silently
        by_model.setdefault(name, {**_named(name), "skipped": "no run yet (CPU time)"})
    return [by_model[name] for name in sorted(by_model)]


def _family(model: str) -> str:
    if model in TASK_MODELS:
        return TASK_MODELS[model][1]
    source, name = model.split(":", 1)
    if source == "timm":
        return next(f for n, f, _ in TIMM if n == name)
    return _hf_configs()[name][0] if source == "hf" else "torchvision"


def _task(row: dict) -> str:
    return TASK_MODELS[row["model"]][0] if row["model"] in TASK_MODELS else row.get("task", "classification")


def _named(model: str) -> dict:
    """A row's name, family and (segmentation, detection) task: what a row without results still says."""
    task = TASK_MODELS[model][0] if model in TASK_MODELS else None
    return {"model": model, "family": _family(model), **({"task": task} if task else {})}


def write_reports(rows: list[dict]) -> None:
    from salrt.bench import replace_readme_block
    rows = merged_rows(rows)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1))
    classifiers = [r for r in rows if _task(r) == "classification"]
    tasks = sorted((r for r in rows if _task(r) != "classification"), key=lambda r: (_task(r), r["model"]))
    run = [r for r in classifiers if "skipped" not in r]
    counts = {source: sum(r["model"].startswith(source + ":") for r in run) for source in ("timm", "hf", "torchvision")}
    tasks_run = [r for r in tasks if "skipped" not in r]
    criteria = (f"Verified: median image ≤ {FLOOR:g} or ≤ {EAGER_FACTOR}× eager float32's own median on the same "
                f"images (deep ReLU nets flip on most images in eager float32 too), every image ≤ {FLIP:g} (a "
                f"flipped ReLU), export ≤ {EXPORT_LIMIT_S} s on 2 shared CPU cores. An empty format column: that "
                f"format was not run for the row (CPU time).")
    table = (f"Generated by `python benchmarks/verify_architectures.py` (results kept in docs/architectures.json) "
             f"on torch {torch.__version__.split('+')[0]}: {sum(r.get('status') == 'verified' for r in run)} of "
             f"{len(run)} run verified ({counts['timm']} timm, {counts['hf']} Hugging Face, {counts['torchvision']} "
             f"torchvision run), {len(classifiers) - len(run)} not run yet. Random weights, batch-norm statistics "
             f"randomized, each model at its own input size; relative L2 of each image's input gradient against "
             f"float64 autograd on 5 images the export never saw (explicit and argmax targets). {criteria} Family "
             f"\"earlier run\": torchvision models checked before (2 images, 128 px where the architecture allows, "
             f"default statistics).\n\n" + markdown(classifiers) +
             f"\nSegmentation and detection (`--family segmentation`, `--family detection`): "
             f"{sum(r.get('status') == 'verified' for r in tasks_run)} of {len(tasks_run)} run verified, "
             f"{len(tasks) - len(tasks_run)} not run yet. Tiny configs (Hugging Face: saved with an image processor "
             f"and read back as `hf:DIR`; detectors' weights redrawn so that queries differ), random weights, "
             f"batch-norm statistics randomized; torchvision's models at {TASK_SIZE} px, the others at 64. Each "
             f"image's input gradient of the task's score (segmentation: a class's logits summed over a region; "
             f"detection: one query's class logit) against float64 autograd of the same score, on 5 images the "
             f"export never saw: a given region (box) or class on some, the defaults on others; the class, region "
             f"and query chosen from float64 outputs by the tests' rules, which every export must choose too "
             f"(a different choice fails the row). {criteria}\n\n" + markdown(tasks, tasks=True))
    (ROOT / "docs" / "architectures.md").write_text("# Verified architectures\n\n" + table)
    replace_readme_block(ROOT / "README.md", "architectures", table)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="SOURCE:NAME (default: every model of --family, or all)")
    parser.add_argument("--family", choices=("timm", "hf", "torchvision", *TASK_CHECKS),
                        help="one family of classifiers, or the segmentation or detection models")
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
