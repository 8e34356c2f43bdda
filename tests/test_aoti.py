"""The AOTInductor artifact (model.pt2): same contract and correctness checks as the other formats."""
import subprocess
import sys

import pytest
import torch

import salrt
from salrt.models import load_model

from conftest import assert_matches_reference, relative_l2, without_format

FORMATS = ("aoti", "aoti_n1", "onnx", "torchscript")


@pytest.fixture(scope="module")
def artifact(exported):
    return exported("resnet18", formats=FORMATS)


@pytest.mark.parametrize("backend", ["aoti", "aoti_n1"])
def test_aoti_matches_float64_autograd(artifact, photo_batch, backend):
    explainer = salrt.load(artifact, backend=backend)
    module = load_model("resnet18", "random").module
    image, target = photo_batch
    for n in (1, 3):
        result = explainer.explain(image[:n], target=target[:n])
        assert_matches_reference((result.logits, result.target, result.saliency, result.grad), module,
                                 image[:n], target[:n])
        scripted = salrt.load(artifact, backend="torchscript").explain(image[:n], target=target[:n])
        assert relative_l2(result.grad, scripted.grad) < 1e-2


def test_single_image_package_is_specialized_and_runs_batches_image_by_image(artifact, random_inputs):
    import json
    entry = json.loads((artifact / "manifest.json").read_text())["files"]["aoti_n1"]
    assert entry["file"] == "model_n1.pt2" and entry["batch"] == 1
    image, target = random_inputs
    one_by_one = salrt.load(artifact, backend="aoti_n1").explain(image, target=target)
    dynamic = salrt.load(artifact, backend="aoti").explain(image, target=target)
    assert torch.equal(one_by_one.target, dynamic.target)
    assert relative_l2(one_by_one.grad, dynamic.grad) < 1e-2
    assert one_by_one.grad.shape == image.shape
    # Why the loader feeds it one image at a time: the package checks no shapes, and given two images it
    # silently explains the first one only.
    with torch.no_grad():
        raw = torch._inductor.aoti_load_package(str(artifact / "model_n1.pt2"))(image[:2], target[:2])
    assert raw[3].shape[0] == 1


def test_loads_with_torch_alone(artifact, random_inputs, tmp_path):
    image, target = random_inputs
    torch.save({"image": image, "target": target}, tmp_path / "inputs.pt")
    script = f"""
import sys, torch
compiled = torch._inductor.aoti_load_package({str(artifact / 'model.pt2')!r})
inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
logits, used, saliency, grad = compiled(inputs["image"], inputs["target"])
torch.save(saliency, {str(tmp_path / 'saliency.pt')!r})
assert "salrt" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    expected = salrt.load(artifact, backend="aoti").explain(image, target=target).saliency
    torch.testing.assert_close(torch.load(tmp_path / "saliency.pt"), expected)


def test_auto_routes_each_batch_size_to_its_backend(artifact, random_inputs, tmp_path):
    image = torch.cat([random_inputs[0]] * 2)[:4]
    everything = salrt.load(artifact)
    assert everything.backend == "aoti_n1" and everything.explain(image).backend == "aoti_n1"
    auto = salrt.load(without_format(artifact, "aoti_n1", tmp_path))
    assert auto.backend == "auto" and auto.backends == ("onnxruntime", "aoti")
    for n, backend in ((1, "onnxruntime"), (3, "onnxruntime"), (4, "aoti")):
        assert auto.backend_for(n) == backend
        result = auto.explain(image[:n])
        assert result.backend == backend
        expected = salrt.load(artifact, backend=backend).explain(image[:n])
        assert expected.backend == backend
        torch.testing.assert_close(result.grad, expected.grad)
    assert "onnxruntime from N=1, aoti from N=4" in repr(auto)


@pytest.mark.parametrize("backend", ["auto", "eager", "torchscript", "onnxruntime", "aoti", "aoti_n1"])
def test_non_finite_images_are_refused_by_every_backend(artifact, random_inputs, backend):
    from salrt.errors import InputError
    explainer = salrt.load(artifact, backend=backend)
    for bad in (float("nan"), float("inf"), -float("inf")):
        image = random_inputs[0].clone()
        image[1, 2, 5, 7] = bad
        with pytest.raises(InputError, match="image 1 of the batch hold NaN or Inf values"):
            explainer.explain(image)


def test_onnx_and_aoti_store_each_weight_once(artifact):
    """The direct input-gradient convolutions reuse the forward weights (as transpose/flip ops) instead of
    storing flipped copies: before, model.onnx and model.pt2 held 1.8x the model's weight bytes."""
    import json
    weight_bytes = sum(t.numel() * t.element_size() for t in load_model("resnet18", "random").module.state_dict().values())
    files = json.loads((artifact / "manifest.json").read_text())["files"]
    assert files["onnx"]["bytes"] < 1.03 * weight_bytes
    assert files["aoti"]["bytes"] < 1.1 * weight_bytes


@pytest.mark.parametrize("backend", ["aoti", "aoti_n1", "onnxruntime", "torchscript"])
def test_strided_inputs_give_the_same_answer(artifact, random_inputs, backend):
    """AOTInductor packages read dense NCHW memory without checking strides: the Explainer passes it so."""
    image, target = random_inputs
    explainer = salrt.load(artifact, backend=backend)
    expected = explainer.explain(image, target=target)
    for strided in (image.contiguous(memory_format=torch.channels_last), image.transpose(2, 3).contiguous().transpose(2, 3)):
        assert not strided.is_contiguous()
        result = explainer.explain(strided, target=target)
        assert torch.equal(result.target, expected.target)
        torch.testing.assert_close(result.grad, expected.grad)
