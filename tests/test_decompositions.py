"""Each backward-as-forward rewrite against PyTorch's own backward, on shapes beyond ResNet's."""
import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from salrt.graph.decompositions import backward_as_forward_ops


def _input_grad(fn, x, cotangent):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x), x, cotangent)
    return grad


def check(fn, shape):
    """The rewritten graph must hold no backward op and give PyTorch's input gradient."""
    out_shape = fn(torch.zeros(shape, dtype=torch.float64)).shape
    traced = make_fx(lambda x, c: _input_grad(fn, x, c), decomposition_table=backward_as_forward_ops())(
        torch.randn(shape, dtype=torch.float64), torch.randn(out_shape, dtype=torch.float64))
    targets = {str(n.target) for n in traced.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "backward" in t], targets
    # Fresh inputs, not the tracing ones: nothing may be baked into the graph.
    x, cotangent = torch.randn(shape, dtype=torch.float64), torch.randn(out_shape, dtype=torch.float64)
    expected = _input_grad(fn, x, cotangent)
    assert expected.abs().amax() > 0
    torch.testing.assert_close(traced(x, cotangent), expected)


@pytest.mark.parametrize("stride,padding,dilation,groups,size", [
    (1, 0, 1, 1, 9), (2, 1, 1, 1, 10), (2, 1, 1, 1, 11), (3, 2, 2, 1, 13), (2, 3, 1, 4, 15), (1, 1, 1, 8, 7),
    (2, 0, 1, 8, 8),
])
def test_convolution(stride, padding, dilation, groups, size):
    weight = torch.randn(8, 8 // groups, 3, 3, dtype=torch.float64)
    check(lambda x: F.conv2d(x, weight, None, stride, padding, dilation, groups), (2, 8, size, size + 2))


@pytest.mark.parametrize("padding,stride", [("valid", 1), ("valid", 2), ("same", 1)])
def test_convolution_with_padding_by_name(padding, stride):
    """conv2d(padding="valid") reaches convolution_backward with one padding value for both dimensions (Hugging
    Face's EfficientNet)."""
    weight = torch.randn(6, 3, 3, 5, dtype=torch.float64)
    check(lambda x: F.conv2d(x, weight, None, stride, padding), (2, 3, 9, 11))


def test_convolution_rectangular_kernel():
    weight = torch.randn(4, 3, 1, 5, dtype=torch.float64)
    check(lambda x: F.conv2d(x, weight, stride=(1, 2), padding=(0, 2)), (2, 3, 9, 12))


def test_transposed_convolution():
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    check(lambda x: F.conv_transpose2d(x, weight, stride=2, padding=1, output_padding=1), (2, 3, 5, 6))


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,size", [
    (3, 2, 1, False, 12), (2, 2, 0, True, 11), (3, 1, 1, False, 7), (3, 2, 0, True, 14)])
def test_max_pool(kernel, stride, padding, ceil_mode, size):
    check(lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode), (2, 3, size, size + 1))


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_avg_pool(kernel, stride, padding):
    check(lambda x: F.avg_pool2d(x, kernel, stride, padding), (2, 4, 9, 10))


@pytest.mark.parametrize("output_size,size", [(1, 7), (7, 7), (2, 8), (3, 7), (7, 4), ((2, 5), 9)])
def test_adaptive_avg_pool(output_size, size):
    check(lambda x: F.adaptive_avg_pool2d(x, output_size), (2, 3, size, size))


def test_eval_batch_norm():
    stats = [torch.randn(5, dtype=torch.float64) for _ in range(4)]
    stats[1] = stats[1].abs() + 0.1
    check(lambda x: F.batch_norm(x, stats[0], stats[1], stats[2], stats[3], training=False), (2, 5, 4, 6))


@pytest.mark.parametrize("pad", [(0, 1, 0, 1), (1, 1, 2, 0), (2, 2, 2, 2)])
def test_constant_pad(pad):
    check(lambda x: F.pad(x, pad), (2, 3, 5, 6))


@pytest.mark.parametrize("activation", [F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, torch.sigmoid,
                                        F.gelu, torch.tanh])
def test_pointwise(activation):
    check(activation, (2, 3, 4, 5))


@pytest.mark.parametrize("groups", [1, 2, 6])  # PoolFormer's GroupNorm1 is one group over the whole map
def test_group_norm(groups):
    weight, bias = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    check(lambda x: F.group_norm(x, groups, weight, bias), (2, 6, 5, 4))


def test_layer_norm():
    weight, bias = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    check(lambda x: F.layer_norm(x, (6,), weight, bias), (2, 4, 5, 6))


@pytest.mark.parametrize("kernel,padding,dilation,groups", [(1, 0, 1, 1), (3, 1, 1, 1), (3, 1, 1, 6), (5, 2, 1, 3),
                                                            (3, 2, 2, 2), (7, 3, 1, 6)])
def test_stride_one_input_gradients_become_direct_convolutions(kernel, padding, dilation, groups):
    from salrt.graph.passes import direct_input_gradient_convolutions
    model = torch.nn.Sequential(torch.nn.Conv2d(6, 12, kernel, padding=padding, dilation=dilation, groups=groups),
                                torch.nn.ReLU(), torch.nn.Conv2d(12, 4, 1)).double().requires_grad_(False)
    traced = make_fx(lambda x, c: _input_grad(model, x, c), decomposition_table=backward_as_forward_ops())(
        torch.randn(2, 6, 9, 11, dtype=torch.float64), torch.randn(2, 4, 9, 11, dtype=torch.float64))
    direct = direct_input_gradient_convolutions(traced)
    convs = [n for n in direct.graph.nodes if n.target is torch.ops.aten.convolution.default]
    assert convs and not any(n.args[6] for n in convs), "a transposed convolution is left"
    x, cotangent = torch.randn(2, 6, 9, 11, dtype=torch.float64), torch.randn(2, 4, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(direct(x, cotangent), _input_grad(model, x, cotangent))


@pytest.mark.parametrize("kernel,stride,padding,size", [
    ((7, 7), 2, (3, 3), (16, 16)),    # ResNet's stem
    ((3, 3), 2, (1, 1), (15, 15)),    # MobileNet's and EfficientNet's (odd input)
    ((3, 3), 2, (0, 0), (17, 13)),    # Inception's: no padding, rectangular input
    ((4, 4), 4, (0, 0), (16, 12)),    # Swin's patch embedding
    ((5, 3), 3, (2, 1), (14, 11)),    # rectangular kernel, stride 3
])
def test_strided_input_gradients_to_few_channels_become_phase_convolutions(kernel, stride, padding, size):
    from salrt.graph.passes import direct_input_gradient_convolutions, polyphase_narrow_transposed_convolutions
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, kernel, stride=stride, padding=padding), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 2, 1)).double().requires_grad_(False)
    shape = (2, 3, *size)
    out_shape = model(torch.zeros(shape, dtype=torch.float64)).shape
    traced = make_fx(lambda x, c: _input_grad(model, x, c), decomposition_table=backward_as_forward_ops())(
        torch.randn(shape, dtype=torch.float64), torch.randn(out_shape, dtype=torch.float64))
    phased = polyphase_narrow_transposed_convolutions(direct_input_gradient_convolutions(traced))  # build's order
    convs = [n for n in phased.graph.nodes if n.target is torch.ops.aten.convolution.default]
    assert not any(n.args[6] for n in convs), "a transposed convolution is left"
    assert any(n.target is torch.ops.aten.pixel_shuffle.default for n in phased.graph.nodes)
    x, cotangent = torch.randn(shape, dtype=torch.float64), torch.randn(out_shape, dtype=torch.float64)
    expected = _input_grad(model, x, cotangent)
    assert expected.abs().amax() > 0
    torch.testing.assert_close(phased(x, cotangent), expected)


def test_adaptive_pool_to_another_size_in_a_symbolic_batch_graph():
    """AlexNet's AdaptiveAvgPool2d((6, 6)) upsamples its 2x2 map at 96 px: the pooling matrices must be built
    from the fixed spatial sizes while the batch stays symbolic (aten.zeros takes no symbolic sizes)."""
    import copy
    from salrt.graph import build_saliency_graph, input_gradient
    from salrt.models import load_model
    model = load_model("alexnet", "random").module.eval()
    graph = build_saliency_graph(model, 96)
    image = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(96))
    target = torch.tensor([-1, 2, -1])
    _, _, expected = input_gradient(copy.deepcopy(model).double(), image.double(), target)
    grad = graph(image, target)[3]
    assert expected.abs().amax() > 0
    # per image: the median at the float32 floor, one image may flip a ReLU (LAB-NOTES)
    errors = sorted(float((g.double() - e).norm() / e.norm()) for g, e in zip(grad, expected))
    assert errors[1] < 1e-4 and errors[-1] < 3e-2, errors


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,count_include_pad,divisor,size", [
    (2, 2, 0, True, True, None, (9, 11)),      # ResNet-D's downsample on an odd map
    (3, 1, 1, False, False, None, (7, 8)),     # PoolFormer's token mixer
    (3, 2, 1, True, False, None, (10, 13)),
    (3, 2, 1, True, True, None, (10, 13)),     # a ceil_mode window clipped to the padded input
    ((3, 2), (2, 1), (1, 0), True, False, None, (9, 6)),
    (2, 2, 0, False, True, 3, (8, 9)),         # divisor_override
    (40, 40, 0, True, True, None, (7, 7)),     # Hugging Face EfficientNet's head: a kernel wider than the map
    ((9, 3), (9, 2), (1, 1), True, False, None, (5, 6)),
])
def test_avg_pool_ceil_mode_and_padding_excluded(kernel, stride, padding, ceil_mode, count_include_pad, divisor,
                                                 size):
    check(lambda x: F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor),
          (2, 4, *size))


@pytest.mark.parametrize("options,size", [
    (dict(mode="bilinear", scale_factor=2), (5, 7)),                       # MobileViT's fusion
    (dict(mode="bilinear", size=(9, 4), align_corners=True), (6, 7)),
    (dict(mode="bilinear", scale_factor=1.7), (5, 6)),                      # the scale, not the sizes, sets the grid
    (dict(mode="nearest", scale_factor=2), (4, 5)),
    (dict(mode="nearest", size=(7, 3)), (5, 6)),
    (dict(mode="nearest-exact", size=(9, 5)), (4, 7)),
    (dict(mode="bicubic", size=(11, 5)), (6, 8)),
    (dict(mode="bicubic", scale_factor=2, align_corners=True), (4, 5)),
    (dict(mode="bilinear", size=(5, 4), antialias=True), (11, 9)),          # downsampling with antialias
    (dict(mode="bicubic", size=(4, 6), antialias=True), (9, 13)),
])
def test_upsample(options, size):
    check(lambda x: F.interpolate(x, **options), (2, 3, *size))


@pytest.mark.parametrize("shape,options", [
    ((2, 3, 5, 7), dict(scale_factor=2)),
    ((2, 3, 5, 7), dict(scale_factor=1.7)),
    ((2, 3, 5, 7), dict(scale_factor=(1.5, 2.5), recompute_scale_factor=True)),
    ((2, 3, 5, 7), dict(size=(9, 4))),
    ((2, 3, 5, 7), dict(size=11, mode="nearest-exact")),
    ((2, 3, 6), dict(scale_factor=3)),
    ((1, 2, 3, 4, 5), dict(scale_factor=2, mode="nearest-exact")),
    ((2, 3, 5, 7), dict(size=(9, 11), mode="bicubic")),                       # CrossViT's branch scaling
    ((2, 3, 5, 7), dict(scale_factor=1.7, mode="bilinear", align_corners=True)),
    ((2, 3, 9, 11), dict(size=(4, 5), mode="bilinear", antialias=True)),
    ((2, 3, 9, 11), dict(size=(4, 5), mode="bicubic", antialias=True)),
    ((2, 3, 6), dict(scale_factor=2.5, mode="linear")),
    ((1, 2, 3, 4, 5), dict(size=(5, 6, 7), mode="trilinear")),
])
def test_interpolate_through_default_overloads_is_f_interpolate(shape, options):
    """What tracing calls for F.interpolate (some .vec kernels specialize a symbolic batch)."""
    from salrt._torch import interpolate, resampling_op
    x = torch.randn(shape)
    full = {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None,
            "recompute_scale_factor": None, "antialias": False, "input": x, **options}
    assert resampling_op(full) is not None
    assert torch.equal(interpolate(x, **options), F.interpolate(x, **options))


def test_what_interpolate_does_not_map_runs_as_f_interpolate():
    from salrt._torch import resampling_op
    base = {"input": torch.zeros(1, 2, 4, 4), "size": 2, "scale_factor": None, "align_corners": None,
            "recompute_scale_factor": None, "antialias": False}
    assert resampling_op({**base, "mode": "area"}) is None
    assert resampling_op({**base, "mode": "trilinear"}) is None                 # the wrong rank: F's own error
    assert resampling_op({**base, "mode": "nearest", "align_corners": True}) is None


@pytest.mark.parametrize("resample", [torch.nn.Upsample(scale_factor=2, mode="nearest"),        # timm's HRNet
                                      torch.nn.Upsample(size=(40, 36), mode="bicubic")])    # timm's CrossViT
def test_resampling_keeps_the_batch_symbolic(tmp_path, resample):
    """Traced through aten's .vec kernels, these graphs were fixed to the tracing example's batch of 2 and the
    ONNX export refused them."""
    import salrt
    from conftest import reference, relative_l2
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                resample, torch.nn.Conv2d(4, 4, 3),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    explainer = salrt.load(salrt.export(model, tmp_path / "artifact", formats=("onnx",), image_size=32))
    for n in (1, 3):
        image = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        result = explainer.explain(image)
        _, used, _, expected = reference(model, image, torch.full((n,), -1))
        assert torch.equal(result.target, used) and result.grad.abs().amax() > 0
        assert max(relative_l2(g, e) for g, e in zip(result.grad, expected)) < 1e-4


def test_matrix_products_never_expand_a_weight_over_a_batch():
    """torchvision's attention projects transposed tokens, which ``matmul`` writes as bmm with the weight
    expanded over the tokens: onnxruntime materialized 18 GB of such copies for ViT-B/16 at N=1."""
    import torchvision
    import salrt
    from salrt.graph import Method, build_saliency_graph
    from salrt.graph.passes import _expanded_matrix
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=5)
    with pytest.raises(salrt.errors.InputError, match="gradient is zero at every spatial map"):
        Method("gradcam").resolved(vit, (3, 32, 32))  # torchvision's ViT head starts at zeros
    torch.nn.init.normal_(vit.heads.head.weight, std=0.1)
    spec = salrt.models.as_spec(vit, image_size=32)
    for method in ("saliency", "integrated_gradients", "gradcam"):
        graph = build_saliency_graph(spec.module, spec.input_shape,
                                     Method(method, steps=4).resolved(spec.module, spec.input_shape))
        bmms = [n for n in graph.graph.nodes if n.target is torch.ops.aten.bmm.default]
        assert not [n for n in bmms if _expanded_matrix(n.args[1]) is not None], method
        assert any(n.target is torch.ops.aten.mm.default for n in graph.graph.nodes)
        x = torch.randn(3, 3, 32, 32)
        expected = salrt.load(spec, method=Method(method, steps=4)).explain(x, torch.tensor([0, -1, 4]))
        logits, _, saliency, *_ = graph(x, torch.tensor([0, -1, 4]))
        torch.testing.assert_close(logits, expected.logits)
        torch.testing.assert_close(saliency, expected.saliency, atol=1e-4, rtol=0)


class _DeformableSampling(torch.nn.Module):
    """Deformable attention's core: sampling points offset by the features themselves, so the image's gradient
    flows through both the sampled map and the grid (Deformable DETR's and RT-DETR's ``grid_sample``)."""

    def __init__(self, mode: str, padding_mode: str, align_corners: bool):
        super().__init__()
        self.options = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        self.features, self.offsets = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 3, padding=1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        features = self.features(x).tanh()
        base = F.affine_grid(torch.eye(2, 3).expand(x.shape[0], 2, 3) * 1.1, list(features.shape), align_corners=False)
        grid = base + 0.3 * self.offsets(features).permute(0, 2, 3, 1).tanh()
        return self.head(F.grid_sample(features, grid, **self.options).mean((2, 3)))


@pytest.mark.parametrize("mode, padding_mode, align_corners", [("bilinear", "zeros", False),
                                                               ("bilinear", "border", True),
                                                               ("nearest", "reflection", False)])
def test_grid_sample_exports_with_the_gradients_of_its_map_and_grid(tmp_path, mode, padding_mode, align_corners):
    """Autograd's grid_sampler_2d_backward has no forward-op form; traced as PyTorch's decomposition (gathers),
    its gradients are scatter-adds: ONNX and TorchScript against float64 autograd, at batch sizes never traced."""
    import salrt
    from conftest import reference, relative_l2
    torch.manual_seed(0)
    model = _DeformableSampling(mode, padding_mode, align_corners).eval()
    directory = salrt.export(model, tmp_path / "artifact", formats="onnx,torchscript", image_size=32)
    for backend in ("onnxruntime", "torchscript"):
        explainer = salrt.load(directory, backend=backend)
        for n in (1, 3):
            image = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
            result = explainer.explain(image)
            _, used, _, expected = reference(model, image, torch.full((n,), -1))
            assert torch.equal(result.target, used) and result.grad.abs().amax() > 0
            assert max(relative_l2(g, e) for g, e in zip(result.grad, expected)) < 1e-4, (backend, n)
