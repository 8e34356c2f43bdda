"""Models users own: their classes, preprocessing, channels and sizes; timm and Hugging Face sources."""
import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm  # salrt[timm] and salrt[hf] are part of `make test`: without them this file fails, it does not skip
import torch
import torchvision
import transformers
from PIL import Image

import salrt
from salrt.errors import InputError

from conftest import GRAY_CLASSES, GRAY_SHAPE, gray_classifier, reference, relative_l2


def unseen(shape, n=3, seed=77):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def assert_per_image_at_floor(result, module, image, target=None):
    """Per image against float64 autograd: the median at the float32 floor, at most one ReLU flip."""
    target = torch.full((len(image),), -1) if target is None else target
    _, used, _, expected = reference(module, image, target)
    assert torch.equal(result.target, used)
    assert result.grad.abs().amax() > 0, "all-zero gradient"
    errors = sorted(relative_l2(g, e) for g, e in zip(result.grad, expected))
    assert errors[len(errors) // 2] < 1e-4 and errors[-2 if len(errors) > 1 else -1] < 1e-4 and errors[-1] < 2e-2, errors


def test_grayscale_non_square_contract_is_recorded(gray_artifact):
    explainer = salrt.load(gray_artifact, backend="onnxruntime")
    assert explainer.input_shape == GRAY_SHAPE and explainer.categories == GRAY_CLASSES
    assert explainer.inputs[0]["shape"] == ["N", *GRAY_SHAPE]
    assert {io["name"]: io["shape"] for io in explainer.outputs} == {
        "logits": ["N", 5], "used_target": ["N"], "saliency": ["N", 48, 64], "grad": ["N", *GRAY_SHAPE]}
    p = explainer.preprocessing
    assert p.mean == (0.5,) and p.std == (0.25,) and p.size == (48, 64)


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript", "aoti_n1"])
def test_grayscale_non_square_matches_float64(gray_artifact, backend):
    image = unseen(GRAY_SHAPE)
    result = salrt.load(gray_artifact, backend=backend).explain(image, [-1, 3, -1])
    assert result.saliency.shape == (3, 48, 64)
    assert_per_image_at_floor(result, gray_classifier(), image, torch.tensor([-1, 3, -1]))
    assert result.top(2)[1][0][1] in GRAY_CLASSES


def test_photos_are_converted_to_the_models_channels(gray_artifact, photo_files):
    explainer = salrt.load(gray_artifact, backend="onnxruntime")
    result = explainer.explain([photo_files["chelsea"]])
    grey = Image.open(photo_files["chelsea"]).convert("L")
    assert torch.equal(explainer.preprocess([grey]), explainer.preprocess([photo_files["chelsea"]]))
    assert explainer.preprocess([grey]).shape == (1, *GRAY_SHAPE) and result.saliency.shape == (1, 48, 64)
    with pytest.raises(InputError, match=r"takes a float32 \[N, 1, 48, 64\] tensor"):
        explainer.explain(torch.zeros(1, 3, 48, 64))


def test_four_channel_models_take_tensors_and_refuse_files(tmp_path, photo_files):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(6, 3))
    explainer = salrt.load(net, image_size=40)
    image = unseen((4, 40, 40), n=2)
    result = explainer.explain(image)
    assert result.grad.shape == (2, 4, 40, 40) and result.categories == ["class 0", "class 1", "class 2"]
    assert_per_image_at_floor(result, net, image)
    with pytest.raises(InputError, match=r"takes 4 channels.*tensor"):
        explainer.explain([photo_files["coffee"]])


def test_class_names_follow_the_logits():
    ten = torchvision.models.resnet18(num_classes=10)
    assert salrt.models.as_spec(ten).categories == [f"class {i}" for i in range(10)]
    names = [f"digit {i}" for i in range(10)]
    assert salrt.models.as_spec(copy.deepcopy(ten), categories=names).categories == names
    with pytest.raises(InputError, match="9 class names for ResNet, whose logits have 10 classes"):
        salrt.models.as_spec(copy.deepcopy(ten), categories=names[:9])
    with pytest.raises(InputError, match="1000 class names"):
        salrt.models.as_spec(copy.deepcopy(ten), categories="imagenet")
    thousand = salrt.models.as_spec(torchvision.models.resnet18(), categories="imagenet")
    assert thousand.categories[281] == "tabby"


def test_ten_class_explanations_name_their_own_classes(tmp_path):
    torch.manual_seed(1)
    names = [f"part {i}" for i in range(10)]
    (tmp_path / "classes.json").write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    artifact = salrt.export(torchvision.models.resnet18(num_classes=10), tmp_path / "ten", formats="onnx",
                            image_size=64, categories=tmp_path / "classes.json")
    result = salrt.load(artifact).explain(unseen((3, 64, 64), n=2))
    assert [row[0][1] for row in result.top(3)] == [names[int(t)] for t in result.target]
    assert len(result.logits[0]) == 10


class Returns(torch.nn.Module):
    """A small classifier whose forward wraps its logits with ``wrap``."""

    def __init__(self, wrap):
        super().__init__()
        torch.manual_seed(3)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.Tanh(), torch.nn.Flatten(1),
                                        torch.nn.Linear(4 * 15 * 15, 3))
        self.wrap = wrap

    def forward(self, x):
        return self.wrap(self.body(x))


@pytest.mark.parametrize("wrap", [lambda t: (t, t.sum()), lambda t: [t], lambda t: {"logits": t, "aux": t}],
                         ids=["tuple", "list", "mapping"])
def test_tuples_and_mappings_are_read_for_their_logits(wrap):
    image = unseen((3, 32, 32), n=2)
    result = salrt.load(Returns(wrap), image_size=32).explain(image)
    assert_per_image_at_floor(result, Returns(lambda t: t).eval(), image)


def test_anything_else_returned_is_one_clear_error():
    with pytest.raises(InputError, match=r"Returns returned str; salrt takes a classifier's logits \[N, K\]"):
        salrt.load(Returns(lambda t: "not logits"), image_size=32)
    with pytest.raises(InputError, match=r"Returns returned a tensor of shape \[1, 3, 1\]"):
        salrt.load(Returns(lambda t: t.unsqueeze(2)), image_size=32)


def test_hugging_face_vit_from_save_pretrained(tmp_path):
    labels = {0: "cat", 1: "dog", 2: "fox"}
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3, id2label=labels,
                                    label2id={v: k for k, v in labels.items()})
    torch.manual_seed(2)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                   image_std=[0.2, 0.25, 0.3], resample=3).save_pretrained(tmp_path / "vit")
    artifact = salrt.export(f"hf:{tmp_path / 'vit'}", tmp_path / "art", formats="onnx,torchscript")
    manifest = salrt.load(artifact).manifest
    assert manifest["categories"] == ["cat", "dog", "fox"]
    assert manifest["preprocessing"] == {"resize": [32, 32], "crop": 32, "mean": [0.4, 0.5, 0.6],
                                         "std": [0.2, 0.25, 0.3], "interpolation": "bicubic"}
    module = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "vit").eval()
    image = unseen((3, 32, 32))
    for backend in ("onnxruntime", "torchscript"):
        assert_per_image_at_floor(salrt.load(artifact, backend=backend).explain(image),
                                  salrt.models.Logits(module), image)


def test_timm_models_by_name_with_their_own_preprocessing(tmp_path):
    spec = salrt.models.load_model("timm:convnext_atto", "random", image_size=64)
    cfg = timm.create_model("convnext_atto").pretrained_cfg
    assert spec.preprocessing.interpolation == cfg["interpolation"] and spec.categories[281] == "tabby"
    assert spec.preprocessing.resize == round(64 * int(224 / cfg["crop_pct"]) / 224)  # timm: 224 / crop_pct
    spec = salrt.models.load_model("timm:test_convnext", "random", image_size=64)  # timm's own small test model
    artifact = salrt.export(spec, tmp_path / "convnext", formats="onnx")
    image = unseen((3, 64, 64))
    assert_per_image_at_floor(salrt.load(artifact).explain(image), spec.module, image)


def test_timm_vit(tmp_path):
    spec = salrt.models.load_model("timm:vit_tiny_patch16_224", "random")
    assert spec.preprocessing.mean == (0.5, 0.5, 0.5) and spec.preprocessing.resize == 248  # crop_pct 0.9
    spec = salrt.models.load_model("timm:test_vit", "random")  # timm's own small ViT, at its fixed 160 px
    artifact = salrt.export(spec, tmp_path / "vit", formats="onnx")
    image = unseen(spec.input_shape, n=2)
    assert_per_image_at_floor(salrt.load(artifact).explain(image), spec.module, image)


def test_fine_tuned_checkpoints_build_their_own_head_and_stem(tmp_path):
    torch.manual_seed(4)
    tuned = timm.create_model("resnet18", num_classes=3, in_chans=1).eval()
    torch.save({"state_dict": tuned.state_dict()}, tmp_path / "tuned.pth")
    (tmp_path / "classes.txt").write_text("benign\nmalignant\nunclear\n")
    spec = salrt.models.load_model("timm:resnet18", str(tmp_path / "tuned.pth"), categories=tmp_path / "classes.txt",
                                   channels=1, image_size=64)
    assert spec.input_shape == (1, 64, 64) and spec.categories == ["benign", "malignant", "unclear"]
    assert len(spec.preprocessing.mean) == 1
    image = unseen((1, 64, 64), n=2)
    assert_per_image_at_floor(salrt.load(spec).explain(image), tuned, image)
    with pytest.raises(InputError, match="not a checkpoint for timm:resnet18"):
        salrt.models.load_model("timm:resnet18", str(tmp_path / "tuned.pth"), image_size=64)


def test_safetensors_checkpoint_of_a_custom_module(tmp_path):
    from safetensors.torch import save_file
    trained = gray_classifier()
    save_file(trained.state_dict(), tmp_path / "weights.safetensors")
    fresh = gray_classifier()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    spec = salrt.models.as_spec(fresh, str(tmp_path / "weights.safetensors"), image_size=GRAY_SHAPE[1:])
    image = unseen(GRAY_SHAPE, n=2)
    assert_per_image_at_floor(salrt.load(spec).explain(image), gray_classifier(), image)


def test_manifests_with_the_old_symbolic_contract_still_load(gray_artifact, tmp_path):
    import shutil
    old = shutil.copytree(gray_artifact, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    symbolic = {"image": ["N", "C", "H", "W"], "saliency": ["N", "H", "W"], "grad": ["N", "C", "H", "W"],
                "logits": ["N", "K"]}
    for io in manifest["inputs"] + manifest["outputs"]:
        io["shape"] = symbolic.get(io["name"], io["shape"])
    manifest["inputs"][0]["shape"] = ["N", 3, "H", "W"]  # format 1 before per-model channels: 3 always
    (old / "manifest.json").write_text(json.dumps(manifest))
    explainer = salrt.load(old, backend="onnxruntime")
    assert explainer.outputs[2]["shape"] == ["N", 48, 64] and explainer.outputs[0]["shape"] == ["N", 5]


def test_cli_exports_and_explains_a_module_of_the_users_own(tmp_path, photo_files):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from conftest import gray_classifier as build_classifier
    """ % os.path.dirname(__file__)))
    torch.save(gray_classifier().state_dict(), tmp_path / "ckpt.pt")
    (tmp_path / "classes.txt").write_text("\n".join(GRAY_CLASSES))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def salrt_cli(*args):
        return subprocess.run([sys.executable, "-m", "salrt.cli", *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)
    done = salrt_cli("export", "mymodels:build_classifier", "--weights", "ckpt.pt", "--classes", "classes.txt",
                     "--image-size", "48x64", "--mean", "0.5", "--std", "0.25", "--format", "onnx")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "build_classifier" / "model.onnx").is_file()
    done = salrt_cli("explain", "build_classifier/", photo_files["chelsea"], "--out", "maps")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(":")[1].split()[0] in GRAY_CLASSES
    assert Image.open(tmp_path / "maps" / "chelsea_overlay.png").size == (64, 48)
    done = salrt_cli("export", "mymodels:build_classifier", "--classes", "classes.txt", "--channels", "3")
    assert done.returncode == 1 and done.stderr.startswith("error: mymodels:build_classifier cannot run on a "
                                                           "[1, 3, 224, 224] image"), done.stderr
    done = salrt_cli("export", "mymodels:build_classifier", "--image-size", "4x")
    assert done.returncode == 2 and "expected N or HxW" in done.stderr


class _BatchFromLen(torch.nn.Module):
    """Reads the batch as a Python int (transformers' RT-DETR does: ``batch_size = len(source_flatten)``)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.head(x.mean((2, 3)).reshape(len(x), -1))


def test_a_model_that_fixes_the_batch_is_refused_naming_its_line(tmp_path):
    from salrt.errors import ExportError
    with pytest.raises(ExportError, match=r"fixes the batch size while it is traced \(.*test_own_models.py:\d+ in "
                                          r"forward: .*len\(x\)\)"):
        salrt.export(_BatchFromLen(), tmp_path / "fixed", formats="torchscript", image_size=32)
    assert not (tmp_path / "fixed").exists()
