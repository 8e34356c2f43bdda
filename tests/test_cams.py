"""The CAM family and guided backprop (salrt.graph.methods, salrt.graph.layers) against pytorch-grad-cam 1.5.7
and Captum in float64, on inputs the export never saw: eagerly on six architectures, exported in every format."""
import pytest
import torch

import salrt
from salrt.errors import InputError
from salrt.graph import Method, method_outputs
from salrt.graph.layers import resolve
from salrt.graph.methods import first_component_projection

from architectures import hf_model, randomized_statistics, timm_model
from cam_references import (PGC, guided_backprop, layer_gradcam, nhwc_to_nchw, per_image_errors, pytorch_grad_cam,
                            tokens_to_grid)

CAMS = list(PGC)
FLOOR, FLIP = 1e-4, 3e-2  # float32 vs float64 per image: at the floor, one image of a batch may flip a ReLU
# XGrad-CAM divides by each channel's sum of activations: a channel summing to nearly zero (after a batch norm)
# amplifies float32 rounding (EfficientNet-Lite0 at _bn1: 1e-4 from float64, where float64 is 1e-7 from pytorch-grad-cam)
FLOORS = {"xgradcam": 1e-3}


def vit():
    return timm_model("vit_tiny_patch16_224", img_size=64, depth=2)


def swin():
    return timm_model("swin_tiny_patch4_window7_224", img_size=64, window_size=2, embed_dim=24, depths=(1, 1, 1, 1),
                      num_heads=(1, 1, 1, 1))


def hf_vit():
    import transformers
    return hf_model(transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, image_size=64, patch_size=16))


# name: (build the model, its input size, the layer salrt picks, the reshape a pytorch-grad-cam user writes)
MODELS = {
    "resnet18": (lambda: randomized_statistics(salrt.models.load_model("resnet18", "random").module), 64, "layer4",
                 None),
    "convnext": (lambda: timm_model("convnext_atto"), 96, "stages", None),
    "vit": (vit, 64, "blocks.1.norm1", tokens_to_grid(1, (4, 4))),
    "swin": (swin, 64, "norm", nhwc_to_nchw),
    "hf_vit": (hf_vit, 64, "model.vit.layers.1.layernorm_before", tokens_to_grid(1, (4, 4))),
    "lite0": (lambda: salrt.models.load_model("efficientnet_lite0").module, 224, None, None),  # its shipped weights
}


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            build, size, _, _ = MODELS[name]
            cache[name] = build().eval().requires_grad_(False), size
        return cache[name]
    return get


def unseen(size: int, count: int = 3, seed: int = 11):
    image = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return image, torch.tensor([-1, 3, -1, 7][:count])


def assert_at_floor(errors: list, floor: float = FLOOR):
    assert errors[len(errors) // 2] < floor and errors[-1] < FLIP, errors


def check_against_pytorch_grad_cam(name, model, layer, reshape, image, result):
    expected = pytorch_grad_cam(name, model, layer.split(","), image, result.target, reshape)
    assert_at_floor(per_image_errors(result.saliency, expected), FLOORS.get(name, FLOOR))
    assert all(float(s.amax() - s.amin()) > 0.5 for s in result.saliency), "a constant map"


@pytest.mark.parametrize("arch", list(MODELS))
def test_every_cam_matches_pytorch_grad_cam_with_the_layer_chosen_for_the_user(arch, models):
    model, size = models(arch)
    image, target = unseen(size)
    layer = MODELS[arch][2]
    for name in CAMS:
        explainer = salrt.load(model, method=Method(name), image_size=size)
        chosen = explainer.manifest["method"]["layer"]
        assert layer is None or chosen == layer
        result = explainer.explain(image, target)
        assert result.target[1] == 3 and torch.equal(result.target[[0, 2]], result.logits[[0, 2]].argmax(1))
        check_against_pytorch_grad_cam(name, model, chosen, MODELS[arch][3], image, result)
        assert result.outputs["cam"].shape[1:] == tuple(explainer.manifest["method"]["taps"][0]["grid"])


def test_the_cam_output_is_captums_layer_gradcam(models):
    model, size = models("resnet18")
    image, target = unseen(size)
    result = salrt.load(model, method=Method("gradcam"), image_size=size).explain(image, target)
    assert_at_floor(per_image_errors(result.outputs["cam"], layer_gradcam(model, "layer4", image, result.target)))


@pytest.mark.parametrize("arch", ["resnet18", "lite0"])
def test_guided_backprop_is_captums_and_guided_gradcam_its_product_with_gradcam(arch, models):
    model, size = models(arch)
    image, target = unseen(size)
    guided = salrt.load(model, method=Method("guided_backprop"), image_size=size).explain(image, target)
    reference = guided_backprop(model, image, guided.target)
    assert_at_floor(per_image_errors(guided.grad, reference))
    plain = salrt.load(model, method=Method("saliency"), image_size=size).explain(image, target)
    if arch == "resnet18":  # nn.ReLU modules: the guided gradient is another one
        assert min(per_image_errors(guided.grad, plain.grad)) > 0.1
    both = salrt.load(model, method=Method("guided_gradcam"), image_size=size).explain(image, target)
    layer = both.outputs and salrt.load(model, method=Method("gradcam"), image_size=size).manifest["method"]["layer"]
    gradcam = torch.as_tensor(pytorch_grad_cam("gradcam", model, [layer], image, both.target))
    assert_at_floor(per_image_errors(both.grad, reference * gradcam.unsqueeze(1)))


def test_several_layers_are_averaged_as_pytorch_grad_cam_does(models):
    model, size = models("resnet18")
    image, target = unseen(size)
    result = salrt.load(model, method=Method("gradcam", layer="layer4,layer3"), image_size=size).explain(image, target)
    check_against_pytorch_grad_cam("gradcam", model, "layer4,layer3", None, image, result)


@pytest.mark.parametrize("layer,reason", [
    ("layer9", "is not a module of the model"), ("fc", "does not output a spatial map"),
    ("avgpool", "does not output a spatial map"), ("layer4,nope", "'nope' is not a module"),
    ("layer4.1.relu", "returns its input or a view of it")])
def test_a_layer_that_cannot_work_is_one_error_naming_good_ones(layer, reason, models):
    model, size = models("resnet18")
    with pytest.raises(InputError, match=f"{reason}.*layers that work, deepest first: layer4, layer4.1"):
        salrt.load(model, method=Method("gradcam", layer=layer), image_size=size)


def test_a_vits_final_norm_is_refused_for_what_it_is(models):
    model, size = models("vit")
    with pytest.raises(InputError, match="'norm' is not reached by the gradient.*blocks.1.norm1"):
        salrt.load(model, method=Method("gradcam", layer="norm"), image_size=size)
    with pytest.raises(InputError, match="layer: for the CAM family only"):
        Method("saliency", layer="norm").check()


def test_eigencam_power_iterations_agree_with_an_svd():
    generator = torch.Generator().manual_seed(3)
    for channels, grid in ((64, (3, 5)), (8, (6, 6))):  # Gram matrices by positions, then by channels
        activations = torch.randn(4, channels, *grid, generator=generator) + \
            3 * torch.randn(4, channels, 1, 1, generator=generator) * torch.randn(4, 1, *grid, generator=generator)
        found = first_component_projection(activations)
        for a, projection in zip(activations.double(), found):
            x = a.reshape(channels, -1).T
            x = x - x.mean(0)
            expected = (x @ torch.linalg.svd(x, full_matrices=False).Vh[0]).reshape(grid)
            expected = -expected if expected.min().abs() > expected.max().abs() else expected
            assert float((projection.double() - expected).norm() / expected.norm()) < 1e-4


# (model, method, formats): ONNX for every case, TorchScript where a reshape runs in it (Grad-CAM on ResNet-18 in
# every format: test_aoti_and_several_images_per_call)
EXPORTED = [("resnet18", "eigencam", "onnx"), ("convnext", "gradcam_pp", "onnx"), ("vit", "gradcam", "torchscript,onnx"),
            ("swin", "layercam", "onnx"), ("hf_vit", "hirescam", "onnx"), ("resnet18", "guided_gradcam", "onnx")]


@pytest.mark.parametrize("arch,name,formats", EXPORTED, ids=[f"{a}-{n}" for a, n, _ in EXPORTED])
def test_exported_cams_match_the_references_on_unseen_inputs(arch, name, formats, models, tmp_path):
    model, size = models(arch)
    directory = salrt.export(model, tmp_path / "artifact", formats=formats, image_size=size, method=Method(name))
    image, target = unseen(size)
    for fmt in formats.split(","):
        explainer = salrt.load(directory, backend=salrt.formats.FORMATS[fmt].backend)
        layer = explainer.manifest["method"]["layer"]
        result = explainer.explain(image, target)
        assert [o["name"] for o in explainer.outputs] == ["logits", "used_target", "saliency", "grad", "cam"]
        if name == "guided_gradcam":
            gradcam = torch.as_tensor(pytorch_grad_cam("gradcam", model, [layer], image, result.target))
            expected = guided_backprop(model, image, result.target) * gradcam.unsqueeze(1)
            assert_at_floor(per_image_errors(result.grad, expected))
        else:
            check_against_pytorch_grad_cam(name, model, layer, MODELS[arch][3], image, result)


def test_the_manifest_records_the_layer_on_the_users_model_and_its_reshape(gradcam_artifact, models, tmp_path):
    entry = salrt.load(gradcam_artifact).manifest["method"]
    assert entry["layer"] == "layer4" and entry["taps"][0]["reshape"] == "none: [N,D,2,2]"
    outputs = {o["name"]: o["shape"] for o in salrt.load(gradcam_artifact).outputs}
    assert outputs["cam"] == ["N", 2, 2]
    model, size = models("hf_vit")  # salrt wraps a Hugging Face model: the path is still on the user's module
    entry = salrt.load(model, method=Method("gradcam"), image_size=size).manifest["method"]
    assert entry["layer"] == "model.vit.layers.1.layernorm_before" and model.get_submodule(entry["layer"]) is not None
    assert entry["taps"][0]["reshape"] == "[N,1+16,D] -> 1 prefix tokens dropped -> [N,D,4,4]"
    assert salrt.load(gradcam_artifact, method=Method("gradcam")).manifest["method"]["layer"] == "layer4"
    with pytest.raises(InputError, match="computes"):
        salrt.load(gradcam_artifact, method=Method("gradcam", layer="layer3"))


def test_the_backward_stops_at_the_layer(models):
    """Grad-CAM at layer4 differentiates the head only: its graph holds the forward's convolutions, no more."""
    from salrt.graph import build_saliency_graph
    model, size = models("resnet18")

    def convolutions(method):
        graph = build_saliency_graph(model, (3, size, size), Method(method))
        return sum(node.target is torch.ops.aten.convolution.default for node in graph.graph.nodes)
    assert convolutions("gradcam") == 20 and convolutions("saliency") > 35


def test_gradcam_in_every_format_with_several_images_per_call(gradcam_artifact):
    model = torch.load(gradcam_artifact.parent / "model.pt", weights_only=False)
    image, target = unseen(64, count=4)
    reference = salrt.load(gradcam_artifact, backend="torchscript").explain(image, target)
    check_against_pytorch_grad_cam("gradcam", model, "layer4", None, image, reference)
    result = salrt.load(gradcam_artifact, backend="aoti_n1").explain(image, target)
    for name in ("saliency", "cam", "logits"):  # Inductor's kernels round otherwise
        assert per_image_errors(result.outputs[name], reference.outputs[name])[-1] < 1e-4, name
    alone = salrt.load(gradcam_artifact, backend="onnxruntime").explain(image[1:2], target[1:2])
    assert per_image_errors(alone.saliency, reference.saliency[1:2])[-1] < 1e-5


def test_hooks_act_only_in_the_explaining_thread_and_leave_the_model_as_it_was(models):
    from concurrent.futures import ThreadPoolExecutor
    from salrt.graph.methods import instrumented
    model, size = models("resnet18")
    x = torch.randn(1, 3, size, size)

    def plain_gradient():
        with torch.enable_grad():
            image = x.clone().requires_grad_(True)
            model(image)[0, 3].backward()
        return image.grad
    expected = plain_gradient()
    instrument = instrumented(model, Method("guided_gradcam").resolved(model, (3, size, size)))
    with instrument.installed():
        assert len(instrument.run(model, x)) == 3  # logits, layer4's map, the guided run's logits
        assert torch.equal(ThreadPoolExecutor(1).submit(plain_gradient).result(), expected)
    assert not any(module._forward_hooks for module in model.modules())
