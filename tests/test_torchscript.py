"""The TorchScript artifact against float64 autograd, on inputs the export never saw."""
import subprocess
import sys

import pytest
import torch

import salrt
from salrt.models import load_model

from conftest import assert_matches_reference, relative_l2


@pytest.mark.parametrize("name,inputs", [("resnet18", "random_inputs"), ("resnet18", "photo_batch"),
                                         ("resnet50", "photo_batch")])
def test_random_weights_match_float64_autograd(name, inputs, exported, request):
    explainer = salrt.load(exported(name), backend="torchscript")
    image, target = request.getfixturevalue(inputs)
    module = load_model(name, "random").module
    for n in (1, 3):
        result = explainer.explain(image[:n], target=target[:n])
        assert_matches_reference((result.logits, result.target, result.saliency, result.grad), module,
                                 image[:n], target[:n])


def test_pretrained_lite0_on_photos_matches_float64_autograd(exported, lite0, photos):
    explainer = salrt.load(exported("efficientnet_lite0", "default"))
    assert explainer.backend == "torchscript"
    batch = explainer.preprocess(list(photos.values()))
    target = torch.tensor([-1, 967, -1])  # 967: espresso, explicit
    result = explainer.explain(batch, target=target)
    assert_matches_reference((result.logits, result.target, result.saliency, result.grad), lite0.module,
                             batch, target)


def test_matches_captum_saliency(exported, lite0, photos):
    from captum.attr import Saliency
    explainer = salrt.load(exported("efficientnet_lite0", "default"))
    batch = explainer.preprocess([photos["chelsea"], photos["coffee"]])
    result = explainer.explain(batch)
    captum_map = Saliency(lite0.module).attribute(batch.clone(), target=result.target, abs=True).amax(1)
    ours = result.grad.abs().amax(1)
    # Two float32 paths (eager with BN vs the folded graph), each up to ~1e-2 from float64.
    assert float((ours - captum_map).norm() / captum_map.norm()) < 2e-2


def test_loads_in_a_process_with_only_torch(exported, random_inputs, tmp_path):
    artifact = exported("resnet18")
    image, target = random_inputs
    torch.save({"image": image, "target": target}, tmp_path / "inputs.pt")
    script = f"""
import sys, torch
model = torch.jit.load({str(artifact / 'model.pt')!r})
inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
with torch.inference_mode():
    logits, used, saliency, grad = model(inputs["image"], inputs["target"])
torch.save(grad, {str(tmp_path / 'grad.pt')!r})
assert "salrt" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    expected = salrt.load(artifact).explain(image, target=target).grad
    torch.testing.assert_close(torch.load(tmp_path / "grad.pt"), expected)


def test_dynamic_batch_and_targets_are_per_image(exported, random_inputs):
    explainer = salrt.load(exported("resnet18"))
    image, _ = random_inputs
    together = explainer.explain(image, target=[5, -1, 9])
    for i, t in enumerate([5, -1, 9]):
        alone = explainer.explain(image[i:i + 1], target=t)
        torch.testing.assert_close(alone.grad[0], together.grad[i], rtol=1e-4, atol=1e-6)
    assert together.target[0] == 5 and together.target[2] == 9
    assert together.target[1] == together.logits[1].argmax()


def test_eager_backend_agrees_with_torchscript(exported, random_inputs):
    image, target = random_inputs
    eager = salrt.load("resnet18", backend="eager", weights="random").explain(image, target=target)
    scripted = salrt.load(exported("resnet18")).explain(image, target=target)
    assert torch.equal(eager.target, scripted.target)
    # per image (LAB-NOTES): rounding differs between the paths, so one image may flip a ReLU (measured: 2e-3
    # on the first of these three since the traces run in the inputs' fake mode); the others sit at the floor
    for name in ("grad", "saliency"):
        errors = sorted(relative_l2(a, b) for a, b in zip(getattr(eager, name), getattr(scripted, name)))
        assert errors[1] < 1e-4 and errors[-1] < 1e-2, (name, errors)
