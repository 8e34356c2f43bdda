"""Explainer.explain called from many threads at once gives what the same calls give one by one."""
import concurrent.futures

import pytest
import torch

import salrt

from conftest import without_format

THREADS, CALLS = 8, 25


@pytest.fixture(scope="module")
def artifact(exported):
    return exported("resnet18", formats=("torchscript", "onnx", "aoti", "aoti_n1"), image_size=64)


def _calls():
    """(images, targets) for THREADS x CALLS calls: batch sizes 1..6 (so auto uses both its backends),
    explicit and argmax targets mixed, inputs the export never saw."""
    generator = torch.Generator().manual_seed(7)
    calls = []
    for i in range(THREADS * CALLS):
        n = 1 + i % 6
        target = torch.randint(-1, 1000, (n,), generator=generator)
        calls.append((torch.randn(n, 3, 64, 64, generator=generator), target))
    return calls


@pytest.mark.parametrize("backend", ["auto", "eager", "torchscript", "onnxruntime", "aoti", "aoti_n1"])
def test_concurrent_calls_match_serial_calls(artifact, backend, tmp_path):
    if backend == "auto":  # without the single-image package, auto routes between two backends
        artifact = without_format(artifact, "aoti_n1", tmp_path)
    calls = _calls()
    serial_explainer = salrt.load(artifact, backend=backend)
    serial = [serial_explainer.explain(image, target=target) for image, target in calls]
    shared = salrt.load(artifact, backend=backend)  # fresh: auto's two backends load lazily, under contention
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        concurrent_results = list(pool.map(lambda call: shared.explain(call[0], target=call[1]), calls))
    for expected, got in zip(serial, concurrent_results):
        assert got.backend == expected.backend
        for name in ("target", "logits", "saliency", "grad"):  # bit for bit: same kernels, same thread split
            assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert any(r.grad.abs().amax() > 0 for r in serial)
    if backend == "auto":
        assert {r.backend for r in concurrent_results} == {"onnxruntime", "aoti"}
