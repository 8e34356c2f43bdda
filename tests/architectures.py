"""Architectures from timm, Hugging Face and torchvision, exported and judged per image against float64 autograd:
shared by tests/test_architectures.py (small sizes, CI) and benchmarks/verify_architectures.py (the sweep)."""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

import salrt
from salrt.graph import input_gradient

FLOOR = 1e-4   # median relative L2 bound: float32 paths sit near 1e-6 from float64 where no decision flips
FLIP = 3e-2    # an image where a ReLU or max decision flips lands at ~1e-3..1e-2 (LAB-NOTES): allowed on a minority
EAGER_FACTOR = 3  # a path's median may be this many times eager float32's (rounding differs, flips differ)
IMAGES = 5     # per check: an odd count, so the median is one image's error and at most 2 of 5 may flip
FORMATS = ("onnx", "torchscript")
BACKENDS = {"onnx": "onnxruntime", "torchscript": "torchscript"}


def randomized_statistics(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Batch norms with random running statistics and affine parameters: a freshly built net's (0, 1) statistics
    make every BN an identity, which would hide a wrong BN rewrite. Zero weight matrices (timm's MLP-Mixer head)
    get small random values: a zero head makes every input gradient zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._NormBase) and layer.running_mean is not None:
                shape = layer.running_mean.shape
                layer.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                if layer.weight is not None:
                    layer.weight.copy_(1 + 0.2 * torch.randn(shape, generator=generator))
                    layer.bias.copy_(0.1 * torch.randn(shape, generator=generator))
        for parameter in module.parameters():
            if parameter.dim() >= 2 and not parameter.any():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))
    return module.eval().requires_grad_(False)


def timm_model(name: str, **kwargs) -> torch.nn.Module:
    import timm
    torch.manual_seed(0)
    return randomized_statistics(timm.create_model(name, pretrained=False, **kwargs))


class Logits(torch.nn.Module):
    """A Hugging Face image classifier as a module returning its logits (it returns an ImageClassifierOutput)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def hf_model(config) -> torch.nn.Module:
    """A ``transformers`` image classifier with random weights from its config, wrapped to return logits."""
    from transformers import AutoModelForImageClassification
    config.num_labels = max(config.num_labels, 10)  # configs default to 2 labels; the checks explain class 7
    torch.manual_seed(0)
    return randomized_statistics(Logits(AutoModelForImageClassification.from_config(config)))


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def unseen_inputs(size: int, count: int = IMAGES, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Images the export never saw (it traces fake tensors), explicit targets next to argmax ones (-1)."""
    image = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return image, torch.tensor([-1, 3, -1, 7] * count)[:count]


def judge(errors: list[float], eager: list[float] = ()) -> str:
    """"verified" when the median image is at the floor and none is further off than a flip. A wrong rewrite
    is wrong on every image; a flip depends on the path's rounding (eager float32 flips on some images too:
    timm's resnet26d at 64 px flips on 1 of 8, its TorchScript graph on 2 of 5). Deep ReLU networks flip on
    most images (ResNet-50-deep ones: eager float32 lands 4e-4..4e-3 from float64), so the floor is also
    EAGER_FACTOR times eager float32's own median error on the same images (``eager``)."""
    floor = max(FLOOR, EAGER_FACTOR * statistics.median(eager)) if eager else FLOOR
    if statistics.median(errors) > floor or max(errors) > FLIP:
        return "error above the floor"
    return "verified"


def verify(module: torch.nn.Module, size: int, formats=FORMATS, count: int = IMAGES) -> dict:
    """Export ``module`` at ``size`` to ``formats`` and compare each backend's gradients with float64 autograd,
    per image: export seconds, per-backend per-image relative L2, the status."""
    image, target = unseen_inputs(size, count)
    _, expected_target, expected = input_gradient(copy.deepcopy(module).double(), image.double(), target)
    if not expected.flatten(1).abs().amax(1).gt(0).all():
        raise AssertionError("the float64 reference gradient is zero for an image: nothing to compare")
    _, _, eager = input_gradient(module, image, target)  # eager float32: how far rounding alone lands
    eager_errors = [relative_l2(g, e) for g, e in zip(eager, expected)]
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        artifact = salrt.export(module, Path(directory) / "a", formats=list(formats), image_size=size)
        seconds = time.perf_counter() - started
        errors = {}
        for fmt in formats:
            result = salrt.load(artifact, backend=BACKENDS[fmt]).explain(image, target=target)
            if not torch.equal(result.target, expected_target):
                raise AssertionError(f"{fmt}: explained {result.target.tolist()}, not {expected_target.tolist()}")
            errors[fmt] = [relative_l2(g, e) for g, e in zip(result.grad, expected)]
    statuses = {judge(e, eager_errors) for e in errors.values()}
    return {"export_s": seconds, "errors": errors, "eager_errors": eager_errors,
            "status": "verified" if statuses == {"verified"} else "error above the floor"}
