"""The gradient family (salrt.graph.methods) against Captum in float64, eagerly and in every exported format."""
import copy

import pytest
import torch

import salrt
from salrt.errors import InputError
from salrt.graph import Method, method_outputs

from conftest import relative_l2
from references import MEAN, SIZE, SMALL, STD, captum_reference, tiny_vit

def assert_close_to(reference, attribution, tol=1e-4):
    """Per image; float32 vs float64 sits at ~1e-6, and one image may flip a ReLU (then ~1e-3..1e-2)."""
    errors = sorted(relative_l2(a, r) for a, r in zip(attribution, reference))
    assert errors[:-1] == [] or errors[-2] < tol, errors
    assert errors[-1] < 2e-2, errors
    assert all(r.abs().amax() > 0 for r in reference), "an attribution is all zeros"


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(2024)
    return torch.randn(3, 3, SIZE, SIZE, generator=generator), torch.tensor([-1, 7, -1])


@pytest.fixture(scope="module")
def resnet18():
    return salrt.models.load_model("resnet18", "random").module.eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_each_method_matches_captum_in_float64(name, resnet18, inputs):
    method = SMALL[name]
    image, target = inputs
    model64 = copy.deepcopy(resnet18).double()
    logits, used, saliency, attribution, *delta = method_outputs(method, SIZE, MEAN, STD)(model64, image.double(), target)
    reference, reference_delta = captum_reference(method, resnet18, image, used)
    assert used[1] == 7 and torch.equal(used[[0, 2]], logits[[0, 2]].argmax(1))
    assert relative_l2(attribution, reference) < 1e-10
    if reference_delta is not None:
        assert torch.allclose(delta[0], reference_delta, rtol=1e-6, atol=1e-9)
    expected_map = reference.abs().amax(1)
    low, high = expected_map.amin((1, 2), keepdim=True), expected_map.amax((1, 2), keepdim=True)
    assert relative_l2(saliency, (expected_map - low) / (high - low)) < 1e-6


def test_integrated_gradients_completeness_improves_with_steps(resnet18, inputs):
    image, target = inputs
    model64 = copy.deepcopy(resnet18).double()
    deltas = []
    for steps in (4, 16, 64):
        method = Method("integrated_gradients", steps=steps, ig_method="riemann_trapezoid", baseline="black")
        logits, used, _, attribution, delta = method_outputs(method, SIZE, MEAN, STD)(model64, image.double(), target)
        gap = attribution.sum((1, 2, 3)) - delta  # F(x) - F(baseline)
        deltas.append(float((delta.abs() / gap.abs()).max()))
    assert deltas[0] > deltas[1] > deltas[2] and deltas[2] < 0.1, deltas  # measured: 1.39, 0.50, 0.057


def test_zero_noise_is_the_vanilla_gradient_and_seeds_decide_the_noise(resnet18, inputs):
    image, target = inputs
    model64, image64 = copy.deepcopy(resnet18).double(), image.double()
    vanilla = method_outputs(Method(), SIZE)(model64, image64, target)[2:]
    smooth = method_outputs(Method("smoothgrad", samples=3, noise=0.0), SIZE)(model64, image64, target)[2:]
    assert torch.equal(smooth[0], vanilla[0])  # the map, exactly (float64)
    assert torch.allclose(smooth[1], vanilla[1], rtol=1e-12, atol=0)  # (g + g + g) / 3 rounds
    runs = {seed: method_outputs(Method("smoothgrad", samples=3, seed=seed), SIZE)(resnet18, image, target)[3]
            for seed in (0, 0, 1)}
    again = method_outputs(Method("smoothgrad", samples=3, seed=0), SIZE)(resnet18, image, target)[3]
    assert torch.equal(runs[0], again) and not torch.allclose(runs[0], runs[1])


# name -> (model, methods exported for it): every method once on a CNN, and a transformer's longest graph;
# benchmarks/verify_methods.py runs the whole matrix (4 architectures x 6 methods x 4 backends, docs/methods-verified.json)
ARCHS = {
    "resnet18": (lambda: salrt.models.load_model("resnet18", "random").module, list(SMALL)),
    "tiny_vit": (tiny_vit, ["integrated_gradients"]),
}
CASES = [(arch, name) for arch, (_, names) in ARCHS.items() for name in names]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = ARCHS[arch][0]().eval()
        return cache[arch]
    return get


@pytest.mark.parametrize("arch,name", CASES, ids=[f"{a}-{n}" for a, n in CASES])
def test_exported_methods_match_captum_on_unseen_inputs(arch, name, models, inputs, tmp_path):
    model, method = models(arch), SMALL[name]
    directory = salrt.export(model, tmp_path / "artifact", formats="torchscript,onnx", image_size=SIZE, method=method)
    image, target = inputs
    for backend in ("torchscript", "onnxruntime"):
        explainer = salrt.load(directory, backend=backend)
        assert explainer.manifest["method"] == method.parameters()
        result = explainer.explain(image, target)
        reference, reference_delta = captum_reference(method, model, image, result.target)
        assert_close_to(reference, result.attribution)
        if name == "integrated_gradients":
            assert [o["name"] for o in explainer.outputs] == ["logits", "used_target", "saliency", "grad", "delta"]
            assert relative_l2(result.delta, reference_delta) < 1e-2 or \
                (result.delta - reference_delta).abs().max() < 1e-3 * reference.abs().sum((1, 2, 3)).max()


def test_aoti_runs_a_sampling_method(resnet18, inputs, tmp_path):
    method = Method("smoothgrad", samples=3, seed=5, chunk=2)
    directory = salrt.export("resnet18", tmp_path / "artifact", formats="aoti", weights="random", image_size=SIZE,
                             method=method)
    image, target = inputs
    result = salrt.load(directory, backend="aoti").explain(image, target)
    assert_close_to(captum_reference(method, resnet18, image, result.target)[0], result.attribution)


@pytest.mark.parametrize("backend", ["aoti", "aoti_n1"])
def test_aoti_runs_integrated_gradients_in_parts(backend, ig_artifact, resnet18, inputs):
    """A batch of 3 runs as 2 + 1 images (aoti) or 1 + 1 + 1 (aoti_n1); `delta` comes out of the package too."""
    method = Method.of(salrt.load(ig_artifact).manifest)
    image, target = inputs
    result = salrt.load(ig_artifact, backend=backend).explain(image, target)
    reference, reference_delta = captum_reference(method, resnet18, image, result.target)
    assert_close_to(reference, result.attribution, tol=1e-3)  # 98 float32 steps: Captum's own lands 3e-5..4e-4
    assert result.delta.shape == (3,) and result.delta.abs().amax() > 0
    assert (result.delta - reference_delta).abs().max() < 1e-3 * reference.abs().sum((1, 2, 3)).max()


def test_runtime_splits_batches_of_sampling_methods(ig_artifact, inputs):
    explainer = salrt.load(ig_artifact, backend="torchscript")
    assert explainer.manifest["images_per_call"] == 2  # a batch of 3 runs as 2 + 1
    image, target = inputs
    together = explainer.explain(image, target)
    alone = [explainer.explain(image[i:i + 1], target[i:i + 1]) for i in range(3)]
    assert torch.allclose(together.attribution, torch.cat([a.attribution for a in alone]), atol=1e-6)
    assert torch.allclose(together.delta, torch.cat([a.delta for a in alone]), atol=1e-6)


def test_method_by_name_eagerly_and_mismatches_are_refused(tmp_path, inputs):
    image, target = torch.randn(3, 3, 224, 224), inputs[1]
    method = Method("integrated_gradients", steps=4)
    eager = salrt.load("resnet18", weights="random", method=method).explain(image, target)
    assert eager.delta is not None and eager.delta.shape == (3,)
    directory = salrt.export("resnet18", tmp_path / "artifact", formats="torchscript", weights="random",
                             image_size=SIZE, method=method)
    with pytest.raises(InputError, match="computes"):
        salrt.load(directory, method=Method("smoothgrad"))
    assert salrt.load(directory, method=method).manifest["method"]["steps"] == 4
    with pytest.raises(InputError, match="^steps must be at least 2"):  # the Python API names the field
        salrt.load("resnet18", weights="random", method=Method("integrated_gradients", steps=1))


def test_the_cli_names_bad_method_parameters_by_their_options():
    from click.testing import CliRunner
    from salrt.cli import main
    done = CliRunner().invoke(main, ["export", "resnet18", "--method", "integrated_gradients", "--steps", "1",
                                     "--ig-method", "gausslegendre", "--chunk", "-1"])
    assert done.exit_code == 1
    assert done.output.strip() == "error: --steps must be at least 2, got 1; --chunk must be at least 0, got -1"


def test_the_readme_table_of_methods_is_the_registry():
    """One definition: adding a method to salrt.graph.methods.REGISTRY must update the README's table."""
    from pathlib import Path
    from salrt.cli import methods_table
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert methods_table() in readme, "README.md's method table differs from the registry; paste:\n" + methods_table()
