"""Architectures from timm, Hugging Face and torchvision, exported and judged per image against float64 autograd:
shared by tests/test_architectures.py (small sizes, CI) and benchmarks/verify_architectures.py (the sweep).
Classifiers (``verify``), segmentation models (``verify_segmentation``) and set-prediction detectors
(``verify_detection``): one export-and-judge path (``judged_exports``), each task's float64 reference from its
test file (test_segmentation.py, test_detection.py)."""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

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


def redrawn(module: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Every parameter of two or more dimensions (matrices, convolutions, tokens, positions) redrawn from
    N(0, std): a detector's default init makes its queries all but identical (YOLOS starts its detection tokens
    at zero), so the top query would be a tie float32 and float64 break differently."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0, std)
    return module


def hf_saved(model: torch.nn.Module, processor, directory: Path, size: Optional[int] = None):
    """A ``transformers`` model and its image processor saved to ``directory`` and read back as a user's
    ``hf:`` directory (``salrt.models.load_model``), at ``size`` (default: the processor's)."""
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return salrt.models.load_model(f"hf:{directory}", image_size=size)


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


def input_gradients(score: Callable, image: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W]: the gradient of each image's scalar ``score(x)`` [N] (images scored independently)."""
    x = image.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(x).sum(), x)
    return grad


def judged_exports(model, inputs: tuple, options: dict, expected: torch.Tensor, eager: torch.Tensor,
                   chosen: dict, formats=FORMATS, **export_options) -> dict:
    """The check every task shares: export ``model`` to ``formats`` (timed), explain ``inputs`` (``options``:
    region=, box=) with each backend, require its choices (``chosen``: output name -> the reference's, e.g.
    used_target, used_query) and judge each image's ``grad`` against ``expected`` (float64 autograd), with eager
    float32's gradients ``eager`` setting how far rounding alone lands."""
    if not expected.flatten(1).abs().amax(1).gt(0).all():
        raise AssertionError("the float64 reference gradient is zero for an image: nothing to compare")
    eager_errors = [relative_l2(g, e) for g, e in zip(eager, expected)]
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        artifact = salrt.export(model, Path(directory) / "a", formats=list(formats), **export_options)
        seconds = time.perf_counter() - started
        errors = {}
        for fmt in formats:
            result = salrt.load(artifact, backend=BACKENDS[fmt]).explain(*inputs, **options)
            for name, reference in chosen.items():
                if not torch.equal(result.outputs[name].long(), reference.long()):
                    raise AssertionError(f"{fmt}: {name} {result.outputs[name].tolist()}, the reference's "
                                         f"{reference.tolist()}")
            errors[fmt] = [relative_l2(g, e) for g, e in zip(result.grad, expected)]
    statuses = {judge(e, eager_errors) for e in errors.values()}
    return {"export_s": seconds, "errors": errors, "eager_errors": eager_errors,
            "status": "verified" if statuses == {"verified"} else "error above the floor"}


def verify(module: torch.nn.Module, size: int, formats=FORMATS, count: int = IMAGES) -> dict:
    """Export ``module`` at ``size`` to ``formats`` and compare each backend's gradients with float64 autograd,
    per image: export seconds, per-backend per-image relative L2, the status."""
    image, target = unseen_inputs(size, count)
    _, expected_target, expected = input_gradient(copy.deepcopy(module).double(), image.double(), target)
    _, _, eager = input_gradient(module, image, target)  # eager float32: how far rounding alone lands
    return judged_exports(module, (image, target), {}, expected, eager, {"used_target": expected_target}, formats,
                          image_size=size)


def verify_segmentation(spec, formats=FORMATS, count: int = IMAGES) -> dict:
    """A segmentation spec: each image's gradient of its class's logits summed over its region (given, or the
    class's predicted pixels; the class given or the most predicted one), the class and region chosen from
    float64 logits by test_segmentation.py's rule; the exports must explain the same classes."""
    from salrt.models import logits_of
    from test_segmentation import inputs, reference_choice, score64
    image, target, region = inputs(spec, seed=7, count=count)
    model = copy.deepcopy(spec.module).double()
    with torch.no_grad():
        used, masks = reference_choice(spec, logits_of(model(image.double()), "reference"), target, region)
    expected = input_gradients(lambda x: score64(model, x, used, masks), image.double())
    eager = input_gradients(lambda x: score64(spec.module, x, used, masks.float()), image)
    return judged_exports(spec, (image, target, region), {}, expected, eager, {"used_target": used}, formats)


def verify_detection(spec, formats=FORMATS, count: int = IMAGES) -> dict:
    """A set-prediction detector: each image's gradient of one query's class logit, the query and class chosen
    from float64 outputs by test_detection.py's rule (a drawn box's overlap, the class, the top detection); the
    exports must explain the same queries and classes."""
    from test_detection import inputs, packed64, reference_choice
    image, target, box, _ = inputs(spec, seed=7, count=count)
    model, packed = packed64(spec, image)
    query, used, _ = reference_choice(spec, packed.detach(), target, box)
    rows = torch.arange(count)
    expected = input_gradients(lambda x: model(x)[rows, query, used], image.double())
    eager = input_gradients(lambda x: spec.module(x)[rows, query, used], image)
    return judged_exports(spec, (image, target), {"box": box}, expected, eager,
                          {"used_target": used, "used_query": query}, formats)
