import copy

import numpy as np
import pytest
import torch

from salrt.graph import input_gradient
from salrt.models import load_model


def reference(module: torch.nn.Module, image: torch.Tensor, target: torch.Tensor):
    """Independent reference: plain autograd on a float64 copy of the model."""
    model64 = copy.deepcopy(module).double()
    logits, used, grad = input_gradient(model64, image.double(), target)
    channel_max = grad.abs().amax(1)
    low = channel_max.amin((1, 2), keepdim=True)
    high = channel_max.amax((1, 2), keepdim=True)
    return logits, used, (channel_max - low) / (high - low), grad


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def assert_matches_reference(outputs, module, image, target, grad_tol=1e-2):
    """Outputs vs float64 autograd (float32 paths differ from it by up to ~1e-2 where a ReLU flips)."""
    ref_logits, ref_used, ref_saliency, ref_grad = reference(module, image, target)
    logits, used, saliency, grad = outputs
    assert torch.equal(used.cpu(), ref_used)
    assert relative_l2(logits, ref_logits) < 1e-4
    assert grad.abs().amax() > 0, "gradient is all zeros"
    assert relative_l2(grad, ref_grad) < grad_tol
    assert relative_l2(saliency, ref_saliency) < 5 * grad_tol
    flat = saliency.flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(len(flat))) and torch.allclose(flat.amax(1), torch.ones(len(flat)))


@pytest.fixture(scope="session")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def photos():
    from skimage import data
    return {name: getattr(data, name)() for name in ("chelsea", "coffee", "astronaut")}


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory, photos):
    from PIL import Image
    directory = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, array in photos.items():
        paths[name] = directory / f"{name}.jpg"
        Image.fromarray(array).save(paths[name])
    return paths


@pytest.fixture(scope="session")
def photo_batch(photos):
    """Three real photos preprocessed for torchvision's ResNets, with mixed explicit and argmax targets."""
    import salrt
    batch = salrt.load("resnet18", weights="random").preprocess(list(photos.values()))
    return batch, torch.tensor([-1, 504, -1])


@pytest.fixture(scope="session")
def random_inputs():
    """Inputs the graph never saw while being built (it is traced on fake tensors)."""
    generator = torch.Generator().manual_seed(1234)
    image = torch.randn(3, 3, 224, 224, generator=generator)
    return image, torch.tensor([-1, 7, -1])


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Artifact directories exported once per session, by model name."""
    import salrt
    cache = {}

    def get(name: str, weights: str = "random", formats=("torchscript",), image_size=None):
        key = (name, weights, tuple(formats), image_size)
        if key not in cache:
            cache[key] = salrt.export(name, tmp_path_factory.mktemp(name) / "artifact", formats=formats,
                                      weights=weights, image_size=image_size)
        return cache[key]
    return get


def without_format(artifact, fmt: str, directory):
    """A copy of ``artifact`` whose manifest no longer lists ``fmt`` (the other files are untouched)."""
    import json
    import shutil
    copy = shutil.copytree(artifact, directory / f"without-{fmt}")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][fmt]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with no pixel data: a decompression bomb's
    first bytes, which is all a decoder reads before allocating."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


IG_IN_PARTS = dict(name="integrated_gradients", steps=98, baseline="black")


@pytest.fixture(scope="session")
def ig_artifact(tmp_path_factory):
    """ResNet-18 (random weights) at 64 px exported with integrated_gradients to every format the C++ runtime
    runs. 98 steps at 64 px fill a call with 2 images (manifest "images_per_call"), so a batch of 3 runs in two
    uneven parts."""
    import salrt
    directory = salrt.export("resnet18", tmp_path_factory.mktemp("ig") / "artifact", weights="random",
                             formats=("torchscript", "aoti", "aoti_n1"), image_size=64,
                             method=salrt.Method(**IG_IN_PARTS))
    assert salrt.load(directory).manifest["images_per_call"] == 2
    return directory


@pytest.fixture(scope="session")
def gradcam_artifact(tmp_path_factory):
    """ResNet-18 (random weights, randomized batch-norm statistics) at 64 px exported with Grad-CAM to every
    format the C++ runtime and the server run: its extra output ``cam`` is [N, 2, 2] (layer4's grid)."""
    import salrt
    from architectures import randomized_statistics
    model = randomized_statistics(salrt.models.load_model("resnet18", "random").module)
    directory = tmp_path_factory.mktemp("gradcam")
    torch.save(model, directory / "model.pt")  # the model it holds, for references
    return salrt.export(model, directory / "artifact", formats=("torchscript", "onnx", "aoti_n1"), image_size=64,
                        method=salrt.Method("gradcam"))


GRAY_CLASSES = ["normal", "nodule", "effusion", "fracture", "other"]
GRAY_SHAPE = (1, 48, 64)  # one channel, not square


def gray_classifier() -> torch.nn.Module:
    """A 5-class grayscale classifier of the user's own (conv, batch norm with randomized statistics, ReLU,
    max-pool, linear head), in eval mode."""
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="session")
def gray_artifact(tmp_path_factory):
    """gray_classifier exported with its class names and preprocessing, at 48x64, to every format the C++
    runtime and the server run (aoti_n1: the single-image flag comes from the manifest)."""
    import salrt
    return salrt.export(gray_classifier(), tmp_path_factory.mktemp("gray") / "xray",
                        formats=("onnx", "torchscript", "aoti_n1"), image_size=GRAY_SHAPE[1:],
                        categories=GRAY_CLASSES, preprocessing={"mean": (0.5,), "std": (0.25,)})
