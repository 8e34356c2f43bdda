"""The C++ runtime (cpp/): salrt_explain and salrt::Explainer against the Python runtime.

The module fixture runs `make cpp`, which builds build/cpp/salrt_explain when it is missing or older than its
sources; a failed build fails these tests (it never skips them).
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import salrt
from salrt.errors import SalrtError
from salrt.formats import CPP_BACKENDS

from conftest import GRAY_SHAPE, relative_l2

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "build" / "cpp" / "salrt_explain"
BACKENDS = ("aoti", "aoti_n1", "torchscript")


@pytest.fixture(scope="module")
def binary() -> Path:
    """`make cpp`: the one build recipe (a no-op when the binary is up to date; `make test` ran it already)."""
    done = subprocess.run(["make", "-s", "cpp"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"building the C++ runtime failed (make cpp):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}",
                    pytrace=False)
    assert BINARY.is_file(), f"make cpp did not produce {BINARY}"
    return BINARY


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cpp") / "resnet18"
    return salrt.export("resnet18", out, formats=["torchscript", "aoti", "aoti_n1"], weights="random", image_size=64)


def run(binary: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def save_input(path: Path, image: torch.Tensor, target=None) -> Path:
    batch = {"image": image}
    if target is not None:
        batch["target"] = target
    torch.save(batch, path)
    return path


def fresh_batch(n: int = 3, seed: int = 20240601) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)  # not an input the export traced or checked with
    return torch.randn(n, 3, 64, 64, generator=generator) * 1.5 + 0.1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", [[-1, 7, -1], None])
def test_matches_python(binary, artifact, tmp_path, backend, target):
    image = fresh_batch()
    targets = None if target is None else torch.tensor(target)
    inp = save_input(tmp_path / "in.pt", image, targets)
    out = tmp_path / "out.pt"
    done = run(binary, artifact, inp, out, "--backend", backend, "--threads", "2")
    assert f"wrote {out}" in done.stdout

    logits, used_target, saliency, grad = torch.load(out)  # plain torch.load: a tuple of 4 tensors
    expected = salrt.load(artifact, backend=backend).explain(image, target=targets)
    assert used_target.dtype == torch.int64 and torch.equal(used_target, expected.target)
    if target is not None:
        assert used_target[1] == 7
    for name, actual, reference in (("logits", logits, expected.logits), ("grad", grad, expected.grad),
                                    ("saliency", saliency, expected.saliency)):
        assert actual.dtype == torch.float32 and actual.shape == reference.shape, name
        assert relative_l2(actual, reference) <= 1e-5, name
    assert grad.abs().amax() > 0, "gradient is all zeros"


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_integrated_gradients_in_parts_with_delta(binary, ig_artifact, tmp_path, backend):
    """The artifact holds 2 images per call: the batch of 3 runs in parts, and `delta` comes fifth."""
    image = fresh_batch()
    run(binary, ig_artifact, save_input(tmp_path / "in.pt", image), tmp_path / "out.pt", "--backend", backend)
    logits, used_target, saliency, attribution, delta = torch.load(tmp_path / "out.pt")
    expected = salrt.load(ig_artifact, backend=backend).explain(image)
    assert torch.equal(used_target, expected.target)
    for actual, reference in ((logits, expected.logits), (attribution, expected.attribution),
                              (saliency, expected.saliency)):
        assert relative_l2(actual, reference) <= 1e-5
    assert attribution.abs().amax() > 0 and delta.shape == (3,)
    assert torch.allclose(delta, expected.delta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["torchscript", "aoti_n1"])
def test_runs_gradcam_with_its_cam_output(binary, gradcam_artifact, tmp_path, backend):
    image = fresh_batch()
    run(binary, gradcam_artifact, save_input(tmp_path / "in.pt", image, torch.tensor([-1, 7, -1])),
        tmp_path / "out.pt", "--backend", backend)
    logits, used_target, saliency, attribution, cam = torch.load(tmp_path / "out.pt")
    expected = salrt.load(gradcam_artifact, backend=backend).explain(image, [-1, 7, -1])
    assert torch.equal(used_target, expected.target) and used_target[1] == 7
    for actual, reference in ((logits, expected.logits), (saliency, expected.saliency), (cam, expected.outputs["cam"])):
        assert relative_l2(actual, reference) <= 1e-5
    assert cam.shape == (3, 2, 2) and saliency.amax() == 1


@pytest.mark.parametrize("backend", ["torchscript", "aoti_n1"])
def test_follows_the_manifest_of_a_grayscale_non_square_model(binary, gray_artifact, tmp_path, backend):
    """Channels, size and outputs come from manifest.json: a [N, 1, 48, 64] model runs, aoti_n1 image by image."""
    image = torch.randn(3, *GRAY_SHAPE, generator=torch.Generator().manual_seed(3))
    run(binary, gray_artifact, save_input(tmp_path / "in.pt", image), tmp_path / "out.pt", "--backend", backend)
    logits, used_target, saliency, grad = torch.load(tmp_path / "out.pt")
    expected = salrt.load(gray_artifact, backend=backend).explain(image)
    assert grad.shape == (3, *GRAY_SHAPE) and saliency.shape == (3, 48, 64) and logits.shape == (3, 5)
    assert torch.equal(used_target, expected.target) and grad.abs().amax() > 0
    for actual, reference in ((logits, expected.logits), (grad, expected.grad), (saliency, expected.saliency)):
        assert relative_l2(actual, reference) <= 1e-5
    done = run(binary, gray_artifact, save_input(tmp_path / "bad.pt", torch.zeros(1, 3, 48, 64)), tmp_path / "o.pt",
               "--backend", backend, check=False)
    assert done.returncode == 1 and "takes a float32 [N, 1, 48, 64] tensor, got float32 [1, 3, 48, 64]" in done.stderr


def test_refuses_a_package_compiled_for_cuda(binary, gray_artifact, tmp_path):
    for_cuda = shutil.copytree(gray_artifact, tmp_path / "for-cuda")
    manifest = json.loads((for_cuda / "manifest.json").read_text())
    manifest["files"]["aoti_n1"]["device"] = "cuda"
    (for_cuda / "manifest.json").write_text(json.dumps(manifest))
    image = save_input(tmp_path / "in.pt", torch.zeros(1, *GRAY_SHAPE))
    assert_error(run(binary, for_cuda, image, tmp_path / "out.pt", "--backend", "aoti_n1", check=False),
                 f"{for_cuda / 'model_n1.pt2'} is compiled for cuda, not cpu")
    assert "compiled for cuda, not cpu" in python_error(lambda: salrt.load(for_cuda, backend="aoti_n1"))


def test_explains_a_region_and_a_box_as_python(binary, tmp_path):
    """A task's inputs travel in the input file by name, and what was explained comes back among the outputs;
    a left-out input takes its default (the predicted region, the top detection), bad ones are Python's errors."""
    from test_detection import CLASSES as DETECTOR_CLASSES, TinyDetector
    from test_segmentation import CLASSES, Painted
    painted = salrt.export(Painted(), tmp_path / "painted", formats="torchscript", categories=CLASSES, image_size=32)
    torch.manual_seed(0)
    detector = salrt.export(TinyDetector(), tmp_path / "detector", formats="torchscript", categories=DETECTOR_CLASSES,
                            image_size=64)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    region = torch.full((2, 32, 32), -1.0)
    region[0, 4:20, 2:30] = 1
    boxes = torch.tensor([[4.0, 4, 40, 30], [-1, -1, -1, -1]])
    cases = [(painted, image, [1, -1], {"region": region}), (painted, image, [2, 2], {"region": region[0]}),
             (detector, fresh_batch(2), [-1, -1], {"box": boxes}), (detector, fresh_batch(2), [-1, 2], {}),
             (detector, fresh_batch(2), [-1, -1], {"query": torch.tensor([3, 1])})]
    for artifact, images, target, task_inputs in cases:
        torch.save({"image": images, "target": torch.tensor(target), **task_inputs}, tmp_path / "in.pt")
        done = run(binary, artifact, tmp_path / "in.pt", tmp_path / "out.pt", "--backend", "torchscript")
        assert "score" in done.stdout
        explainer = salrt.load(artifact, backend="torchscript")
        expected = explainer.explain(images, target, **task_inputs)
        for name, actual in zip([io["name"] for io in explainer.outputs], torch.load(tmp_path / "out.pt")):
            assert torch.allclose(actual, expected.outputs[name].to(actual.dtype), atol=1e-6), name
        assert expected.saliency.amax() == 1
    painted_explainer = salrt.load(painted, backend="torchscript")
    bad = {"a region of the wrong size": (painted, {"region": torch.ones(5, 5)}, "region must be [32, 32] or [2, 32, 32]"),
           "an empty region": (painted, {"region": torch.zeros(32, 32)}, python_error(
               lambda: painted_explainer.explain(image, 1, region=torch.zeros(32, 32)))),
           "a class predicted nowhere": (painted, {"target": torch.tensor([3, 3])}, python_error(
               lambda: painted_explainer.explain(image, 3))),
           "a box for a segmentation model": (painted, {"box": boxes}, "takes no box (its inputs: image, target, region)"),
           "a box outside the image": (detector, {"box": torch.tensor([0.0, 0, 80, 10])},
                                       "box [0, 0, 80, 10] is not a box inside the model's 64x64 input"),
           "a query out of range": (detector, {"query": torch.tensor(6)}, "query must be a query's index below 6"),
           "a float query": (detector, {"query": torch.tensor([1.0, 2.0])}, "query must be [] or [2]")}
    for case, (artifact, extra, message) in bad.items():
        torch.save({"image": image if artifact == painted else fresh_batch(2), **extra}, tmp_path / "bad.pt")
        assert_error(run(binary, artifact, tmp_path / "bad.pt", tmp_path / "none.pt", "--backend", "torchscript",
                         check=False), message)
        assert not (tmp_path / "none.pt").exists(), case


def python_error(call) -> str:
    with pytest.raises(SalrtError) as err:
        call()
    return str(err.value)


def assert_error(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message in lines[0], (message, lines[0])


def test_artifact_errors_match_python(binary, artifact, tmp_path):
    inp = save_input(tmp_path / "in.pt", fresh_batch(1))
    out = tmp_path / "out.pt"

    missing = tmp_path / "no-such-dir"
    assert_error(run(binary, missing, inp, out, check=False),
                 f"{missing} is not a salrt artifact directory (no manifest.json)")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(run(binary, empty, inp, out, check=False), python_error(lambda: salrt.load(str(empty))))

    manifest = json.loads((artifact / "manifest.json").read_text())
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    (tampered / "model.pt2").write_bytes((artifact / "model.pt2").read_bytes()[:100_000])
    message = python_error(lambda: salrt.load(str(tampered), backend="aoti"))
    assert "sha256 mismatch" in message
    assert_error(run(binary, tampered, inp, out, check=False), message)
    message = python_error(lambda: salrt.load(str(tampered), backend="torchscript"))
    assert message == f"{tampered / 'model.pt'} is missing"
    assert_error(run(binary, tampered, inp, out, "--backend", "torchscript", check=False), message)

    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2, "salrt_version": "9.0"}))
    message = python_error(lambda: salrt.load(str(newer), backend="aoti"))
    assert "in artifact format 2" in message
    assert_error(run(binary, newer, inp, out, check=False), message)

    only_ts = tmp_path / "only-torchscript"
    only_ts.mkdir()
    (only_ts / "manifest.json").write_text(json.dumps({**manifest, "files": {"torchscript": manifest["files"]["torchscript"]}}))
    message = python_error(lambda: salrt.load(str(only_ts), backend="aoti"))
    assert_error(run(binary, only_ts, inp, out, check=False), message)

    python_message = python_error(lambda: salrt.load(str(artifact), backend="onnx"))
    assert python_message.startswith("unknown backend 'onnx'")
    assert_error(run(binary, artifact, inp, out, "--backend", "onnx", check=False),
                 f"unknown backend 'onnx'; choose from {', '.join(CPP_BACKENDS)}")  # cpp/generate_header.py
    assert not out.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_errors_match_python(binary, artifact, tmp_path, backend):
    explainer = salrt.load(artifact, backend=backend)
    out = tmp_path / "out.pt"
    nan = fresh_batch()
    nan[0, 1, 2, 3] = float("nan")
    nan[2, 0, 0, 0] = float("inf")
    one_nan = fresh_batch(2)
    one_nan[1, 2, 5, 5] = float("nan")
    cases = {
        "dtype and shape": (torch.randn(2, 3, 224, 224, dtype=torch.float64), None),
        "size": (torch.randn(2, 3, 32, 32), None),
        "NaN and Inf": (nan, None),
        "one NaN": (one_nan, None),
        "out of range": (fresh_batch(), torch.tensor([1000, -1, 3])),
        "target count": (fresh_batch(2), torch.tensor([1, 2, 3])),
    }
    for case, (image, target) in cases.items():
        message = python_error(lambda: explainer.explain(image, target=target))
        inp = save_input(tmp_path / "in.pt", image, target)
        assert_error(run(binary, artifact, inp, out, "--backend", backend, check=False), message)
        assert not out.exists(), case
    assert "takes a float32 [N, 3, 64, 64] tensor, got float64 [2, 3, 224, 224]" in \
        python_error(lambda: explainer.explain(cases["dtype and shape"][0]))
    assert "images 0, 2 of the batch hold NaN or Inf values" in python_error(lambda: explainer.explain(nan))


def test_bad_arguments(binary, artifact, tmp_path):
    done = run(binary, "--help")
    assert done.stdout.startswith("usage: salrt_explain ARTIFACT_DIR INPUT OUTPUT") and "--repeat" in done.stdout
    inp = save_input(tmp_path / "in.pt", fresh_batch(1))
    for args, message in (((), "expected ARTIFACT_DIR INPUT OUTPUT"),
                          ((artifact, inp, tmp_path / "o.pt", "--repeat", "0"), "--repeat takes a positive integer"),
                          ((artifact, inp, tmp_path / "o.pt", "--threads"), "--threads needs a value"),
                          ((artifact, inp, tmp_path / "o.pt", "--fast"), "unknown option --fast"),
                          ((artifact, tmp_path / "none.pt", tmp_path / "o.pt"), "cannot read"),
                          ((artifact, artifact / "manifest.json", tmp_path / "o.pt"), "is not a file torch.save wrote")):
        assert_error(run(binary, *args, check=False), message)
    torch.save({"images": fresh_batch(1)}, tmp_path / "wrong-key.pt")
    assert_error(run(binary, artifact, tmp_path / "wrong-key.pt", tmp_path / "o.pt", check=False),
                 "has no 'image' tensor")


def test_no_libpython(binary):
    linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    assert "libtorch_cpu" in linked and "not found" not in linked, linked
    assert "libpython" not in linked, linked


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeat_prints_latency(binary, artifact, tmp_path, backend):
    inp = save_input(tmp_path / "in.pt", fresh_batch(1), torch.tensor([3]))
    done = run(binary, artifact, inp, tmp_path / "out.pt", "--backend", backend, "--repeat", "5", "--threads", "2")
    match = re.search(r"p50 ([0-9.]+) ms, p99 ([0-9.]+) ms over 5 runs", done.stdout)
    assert match, done.stdout
    assert 0 < float(match[1]) <= float(match[2])
    assert torch.load(tmp_path / "out.pt")[1].tolist() == [3]



@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_callers_get_the_single_callers_results(binary, artifact, tmp_path, backend):
    """explainer.h says an Explainer may be called from several threads at once: 4 threads, 3 calls each."""
    image = fresh_batch(2)
    done = run(binary, artifact, save_input(tmp_path / "in.pt", image, torch.tensor([2, -1])),
               tmp_path / "out.pt", "--backend", backend, "--callers", "4", "--threads", "1")
    assert "4 concurrent callers: 12 calls, every result identical to the first" in done.stdout, done.stdout
    expected = salrt.load(artifact, backend=backend).explain(image, target=[2, -1])
    assert relative_l2(torch.load(tmp_path / "out.pt")[3], expected.grad) <= 1e-5
