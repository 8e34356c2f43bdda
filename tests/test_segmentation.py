"""Segmentation: the graph explains a class's logits summed over a region, against float64 references of that
same scalar (autograd, Captum's IntegratedGradients, pytorch-grad-cam's SemanticSegmentationTarget), on random
weights and inputs the export never saw, image by image."""
import copy

import numpy as np
import pytest
import torch

import salrt
from salrt.errors import InputError
from salrt.graph import Method
from salrt.graph.layers import user_root
from salrt.models import logits_of

SIZE = 64


class TinyUNet(torch.nn.Module):
    """A user's U-Net: an encoder, a decoder with a skip connection, logits [N,4,H,W] (class 0: background)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.down = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.bottom = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU())
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = torch.nn.Conv2d(16, classes, 1)

    def forward(self, x):
        skip = self.down[1](self.down[0](x))
        return self.head(torch.cat([self.up(self.bottom(self.down[3](self.down[2](skip)))), skip], 1))


def unet_spec():
    torch.manual_seed(0)
    return salrt.models.as_spec(TinyUNet(), categories=["background", "road", "car", "person"], image_size=SIZE)


def segformer_spec(tmp_path_factory):
    """A Hugging Face SegFormer with a tiny config, saved and read back as a user's directory: logits at a
    quarter of the input size."""
    import transformers
    from architectures import hf_saved
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=3,
        id2label={0: "background", 1: "lesion", 2: "vessel"}, label2id={"background": 0, "lesion": 1, "vessel": 2})
    torch.manual_seed(0)
    return hf_saved(transformers.SegformerForSemanticSegmentation(config),
                    transformers.SegformerImageProcessor(size={"height": SIZE, "width": SIZE}),
                    tmp_path_factory.mktemp("segformer"))


@pytest.fixture(scope="module", params=["lraspp_mobilenet_v3_large", "segformer", "unet"])
def spec(request, tmp_path_factory):
    if request.param == "segformer":
        return segformer_spec(tmp_path_factory)
    if request.param == "unet":
        return unet_spec()
    return salrt.models.load_model(request.param, "random", image_size=SIZE)


def inputs(spec, seed: int, count: int = 3):
    """Images the export never saw, one with a given class and region, one with a given class and the default
    region, one all default; then (``count`` over 3) one with a given region and the default class, the rest all
    default. At the spec's input size."""
    height, width = spec.input_shape[1:]
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(count, *spec.input_shape, generator=generator)
    region = torch.full((count, height, width), -1.0)
    given = torch.zeros(height, width)
    given[height // 8: height * 5 // 8, width // 4: width * 7 // 8] = 1
    given[height * 5 // 16: height * 15 // 32, width * 5 // 16: width * 15 // 32] = 0.5  # weights, not just a mask
    region[0] = given
    if count > 3:
        region[3] = given
    with torch.no_grad():
        predicted = spec.module(image).argmax(1)
    target = torch.tensor([1, int(predicted[1].flatten().mode().values)] + [-1] * (count - 2))
    return image, target, region


def dense64(spec):
    return copy.deepcopy(spec.module).double()


def reference_choice(spec, dense: torch.Tensor, target, region):
    """The class and region the task states, computed here from float64 logits: the class predicted at most
    pixels (the background only if nothing else is), the region resized nearest or the class's pixels."""
    background = spec.categories.index("background") if "background" in spec.categories else \
        spec.categories.index("__background__") if "__background__" in spec.categories else -1
    used, masks = [], []
    for logits, t, r in zip(dense, target, region):
        predicted = logits.argmax(0)
        counts = torch.bincount(predicted.flatten(), minlength=logits.shape[0]).double()
        if background >= 0 and counts.sum() > counts[background]:
            counts[background] = -1
        c = int(t) if t >= 0 else int(counts.argmax())
        mask = (predicted == c).double() if (r < 0).any() else \
            torch.nn.functional.interpolate(r[None, None].double(), size=logits.shape[1:], mode="nearest")[0, 0]
        used.append(c)
        masks.append(mask)
    return torch.tensor(used), torch.stack(masks)


def score64(model, image, used, masks):
    """Each image's score; a batch of several copies of the images (Captum's steps, one after another) scores
    each copy with its image's class and region."""
    dense = logits_of(model(image), "reference")
    copies = image.shape[0] // len(used)
    return (dense[torch.arange(image.shape[0]), used.repeat(copies)] * masks.repeat(copies, 1, 1)).sum((1, 2))


def relative_errors(actual, expected) -> list:
    return sorted(float((a.double() - e).norm() / e.norm()) for a, e in zip(actual, expected))


def test_the_gradient_is_that_of_the_class_logits_summed_over_the_region(spec):
    image, target, region = inputs(spec, seed=1)
    result = salrt.load(spec).explain(image, target, region)
    model = dense64(spec)
    with torch.no_grad():
        used, masks = reference_choice(spec, logits_of(model(image.double()), "reference"), target, region)
    x = image.double().requires_grad_(True)
    scores = score64(model, x, used, masks)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert result.used_target.tolist() == used.tolist()
    assert torch.equal(result.used_region.double(), masks)
    assert torch.allclose(result.score.double(), scores.detach(), rtol=1e-4, atol=1e-4 * float(scores.abs().max()))
    errors = relative_errors(result.grad, grad)
    assert errors[1] < 1e-4 and errors[-1] < 1e-2, errors  # the median at the floor; one may flip a ReLU
    assert all(float(s.std()) > 0 for s in result.saliency)


def test_integrated_gradients_are_captums_of_the_region_score(spec):
    from captum.attr import IntegratedGradients
    image, target, region = inputs(spec, seed=2)
    method = Method("integrated_gradients", steps=8)
    result = salrt.load(spec, method=method).explain(image, target, region)
    model = dense64(spec)
    with torch.no_grad():
        used, masks = reference_choice(spec, logits_of(model(image.double()), "reference"), target, region)
    expected, delta = IntegratedGradients(lambda x: score64(model, x, used, masks)).attribute(
        image.double(), n_steps=8, method="gausslegendre", return_convergence_delta=True)
    errors = relative_errors(result.attribution, expected)
    assert errors[1] < 1e-3 and errors[-1] < 5e-2, errors
    assert torch.allclose(result.delta.double(), delta, atol=1e-3 * float(result.score.abs().max()))


def test_gradcam_is_pytorch_grad_cams_semantic_segmentation_target(spec):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    image, target, region = inputs(spec, seed=3)
    explainer = salrt.load(spec, method=Method("gradcam"))
    result = explainer.explain(image, target, region)
    layer = explainer.manifest["method"]["layer"]
    model = dense64(spec).requires_grad_(True)
    masks = result.used_region.double().numpy()
    targets = [SemanticSegmentationTarget(int(c), m) for c, m in zip(result.used_target, masks)]
    with GradCAM(model=model, target_layers=[user_root(model).get_submodule(layer)]) as cam:
        expected = cam(input_tensor=image.double(), targets=targets)
    errors = sorted(float(np.abs(a.numpy() - e).max()) for a, e in zip(result.saliency, expected))
    assert errors[1] < 1e-4 and errors[-1] < 1e-2, errors


def test_every_format_explains_a_region_on_unseen_inputs(tmp_path, tmp_path_factory):
    """SegFormer: its logits at a quarter of the input size, so the graph resizes the region (ONNX Resize)."""
    spec = segformer_spec(tmp_path_factory)
    directory = salrt.export(spec, tmp_path / "seg", formats="torchscript,onnx", method=Method("gradcam"))
    manifest = salrt.load(directory, backend="onnxruntime").manifest
    assert manifest["task"] == {"name": "segmentation", "background": 0}
    assert [io["name"] for io in manifest["inputs"]] == ["image", "target", "region"]
    assert manifest["outputs"][0]["shape"] == ["N", 3, SIZE // 4, SIZE // 4]
    image, target, region = inputs(spec, seed=4)
    eager = salrt.load(spec, method=Method("gradcam")).explain(image, target, region)
    for backend in ("torchscript", "onnxruntime"):
        result = salrt.load(directory, backend=backend).explain(image, target, region)
        assert result.used_target.tolist() == eager.used_target.tolist(), backend
        assert torch.equal(result.used_region, eager.used_region), backend
        assert (result.saliency - eager.saliency).abs().max() < 1e-3, backend
        assert torch.allclose(result.logits, eager.logits, atol=1e-4), backend


CLASSES = ["__background__", "cat", "dog", "bird"]


class Painted(torch.nn.Module):
    """Logits that paint known classes: background everywhere, class 2 on a 4x4 square, class 1 on a 2x2 one,
    class 3 nowhere (scaled by the image, so that they have a gradient)."""

    def forward(self, x):
        n = x.shape[0]
        logits = torch.zeros(n, 4, 32, 32) + x.mean((1, 2, 3)).reshape(-1, 1, 1, 1)
        logits[:, 0] += 1
        logits[:, 2, :4, :4] += 2
        logits[:, 1, 10:12, 10:12] += 2
        return logits * x[:, :1, :32, :32].exp()


def test_the_default_class_is_the_most_predicted_one_and_not_the_background():
    explainer = salrt.load(Painted(), categories=CLASSES, channels=3, image_size=32,
                           task="segmentation")
    assert explainer.manifest["task"]["background"] == 0
    result = explainer.explain(torch.zeros(1, 3, 32, 32))
    assert result.used_target.tolist() == [2] and int(result.used_region.sum()) == 16
    assert salrt.load(Painted(), categories=["a", "b", "c", "d"], image_size=32).explain(
        torch.zeros(1, 3, 32, 32)).used_target.tolist() == [0]  # no class named background: the most predicted


@pytest.mark.parametrize("call, message", [
    (lambda e: e.explain(torch.zeros(1, 3, 32, 32), region=torch.ones(16, 16)), "region must be [32, 32]"),
    (lambda e: e.explain(torch.zeros(1, 3, 32, 32), 1, region=torch.zeros(32, 32)), "the region is empty"),
    (lambda e: e.explain(torch.zeros(1, 3, 32, 32), target=5), "target 5 is out of range"),
    (lambda e: e.explain(torch.zeros(1, 3, 32, 32), region=[[float("nan")] * 32] * 32), "NaN"),
])
def test_bad_regions_and_classes_are_one_clear_error(call, message):
    explainer = salrt.load(Painted(), categories=CLASSES, image_size=32)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        call(explainer)


def test_a_class_predicted_nowhere_with_the_default_region_is_refused():
    explainer = salrt.load(Painted(), categories=CLASSES, image_size=32)
    region = torch.zeros(32, 32)
    region[20:24, 20:24] = 1
    assert float(explainer.explain(torch.ones(1, 3, 32, 32), 1, region).score) > 0
    with pytest.raises(InputError, match=r"image 1: the model predicts class 3 \(bird\) nowhere"):
        explainer.explain(torch.zeros(2, 3, 32, 32), torch.tensor([1, 3]))


def test_a_classifier_is_not_a_segmentation_model_and_a_region_needs_one(lite0):
    with pytest.raises(InputError, match=r"returned a tensor of shape \[1, 1000\]; segmentation takes"):
        salrt.load(lite0, task="segmentation")
    with pytest.raises(InputError, match="region: for a segmentation model"):
        salrt.load(lite0).explain(torch.zeros(1, 3, 224, 224), region=torch.ones(224, 224))
    with pytest.raises(InputError, match="unknown task 'tracking'"):
        salrt.load(TinyUNet(), task="tracking")


def test_load_refuses_an_unknown_task_in_one_line(tmp_path):
    import json
    from salrt.errors import ArtifactError
    directory = salrt.export(Painted(), tmp_path / "painted", categories=CLASSES, image_size=32)
    manifest = json.loads((directory / "manifest.json").read_text())
    for task in ({"name": "tracking"}, {"name": "segmentation", "background": "sky"}, "segmentation"):
        (directory / "manifest.json").write_text(json.dumps({**manifest, "task": task}))
        with pytest.raises(ArtifactError, match="manifest.json is corrupt or from a newer salrt: task"):
            salrt.load(directory)


def test_the_cli_explains_a_named_class_over_a_mask_and_outlines_it(tmp_path, photo_files):
    from PIL import Image
    from test_cli import assert_one_line_error, salrt_cli
    mask = np.zeros((300, 400), np.uint8)
    mask[100:200, 150:300] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    photo = next(iter(photo_files.values()))
    common = ["lraspp_mobilenet_v3_large", "--weights", "random", "--image-size", str(SIZE)]
    done = salrt_cli("explain", *common, photo, "--target", "Car", "--region", tmp_path / "mask.png",
                     "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    overlay = np.asarray(Image.open(tmp_path / "out" / f"{photo.stem}_overlay.png"))
    assert ((overlay == (0, 255, 255)).all(-1)).sum() > SIZE  # the region's border
    assert_one_line_error(salrt_cli("explain", *common, photo, "--target", "cra", "--out", tmp_path / "bad"),
                          "has no class 'cra'; did you mean 'cat', 'car'?")
    assert_one_line_error(salrt_cli("export", "resnet18", "--weights", "random", "--task", "segmentation",
                                    "--out", tmp_path / "no"), "segmentation takes a segmentation model's logits")


def test_the_readme_states_the_contract_that_io_py_describes():
    from pathlib import Path
    from salrt.cli import contract_table
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert contract_table() in readme, "README.md's contract table differs from salrt.graph.io; paste:\n" + \
        contract_table()


def test_a_dataset_takes_a_mask_per_image_and_records_an_image_without_one(tmp_path, photo_files):
    import pandas as pd
    from PIL import Image
    from test_cli import salrt_cli
    first, second = sorted(photo_files.values())[:2]
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros(Image.open(first).size[::-1], np.uint8)
    mask[: mask.shape[0] // 2] = 1
    Image.fromarray(mask).save(masks / f"{first.stem}.png")
    done = salrt_cli("explain", "lraspp_mobilenet_v3_large", "--weights", "random", "--image-size", str(SIZE),
                     first.parent, "--region-dir", masks, "--target", "car", "--out", tmp_path / "out")
    assert done.returncode == 2, done.stderr  # an image failed: recorded, the others explained
    rows = pd.read_parquet(tmp_path / "out" / "results.parquet").set_index("path")
    assert rows.loc[first.name, "error"] is None and rows.loc[first.name, "class_name"] == "car"
    assert f"no region mask at {masks / second.stem}.png" in rows.loc[second.name, "error"]
    overlay = np.asarray(Image.open(tmp_path / "out" / f"{first.name}_overlay.png"))
    assert overlay.shape[:2] == (SIZE, 2 * SIZE + 4)  # the map, then the predicted classes
    for panel in (overlay[:, :SIZE], overlay[:, SIZE + 4:]):  # the region, outlined on both
        border = (panel == (0, 255, 255)).all(-1)
        assert border[SIZE // 2 - 4: SIZE // 2 + 4].any(0).all() and not border[SIZE // 2 + 4:].any()  # the band's edge
    assert len(np.unique(overlay[:, SIZE + 4:].reshape(-1, 3), axis=0)) >= 3  # classes' colours and the outline


def test_evaluate_refuses_a_segmentation_model_in_one_line(photo_files, tmp_path):
    from salrt.evaluate import evaluate
    with pytest.raises(InputError, match="salrt evaluate scores classifiers; lraspp_mobilenet_v3_large is a "
                                         "segmentation model"):
        evaluate("lraspp_mobilenet_v3_large", list(photo_files.values())[:1], weights="random", out_dir=tmp_path)
