"""Devices: every command refuses a CUDA device this machine lacks with the same clear line; graphs follow
their input's device; a package compiled for one device is refused on another; the CUDA paths themselves
(CUDA graphs, packages compiled for CUDA, TorchScript and eager on a GPU) run where a GPU is present."""
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

import salrt
from salrt.cli import main
from salrt.devices import checked_device, cpu_description
from salrt.errors import ArtifactError, InputError
from salrt.graph import build_saliency_graph
from conftest import GRAY_SHAPE, gray_classifier, relative_l2

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
REFUSAL = "--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False)"


@no_cuda
@pytest.mark.parametrize("command", ["export", "explain", "bench", "evaluate", "serve"])
def test_every_command_refuses_cuda_without_a_gpu_in_one_line(command, tmp_path, gray_artifact, photo_files):
    out = tmp_path / "out"
    arguments = {
        "export": ["resnet18", "--weights", "random", "--format", "aoti", "--out", str(out)],
        "explain": [str(gray_artifact), str(photo_files["chelsea"]), "--out", str(out)],
        "bench": ["resnet18", "--quick", "--cache", str(out)],
        "evaluate": [str(gray_artifact), str(photo_files["chelsea"]), "--out", str(out)],
        "serve": [str(gray_artifact)],
    }[command]
    result = CliRunner().invoke(main, [command, *arguments, "--device", "cuda"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [f"error: {REFUSAL}"]
    assert not out.exists(), "nothing is written before the device is refused"


@pytest.mark.parametrize("device, message", [("tpu", "Expected one of cpu"), ("mps", "unsupported"),
                                             ("cuda:x", "Invalid device string"),
                                             ("", "Device string must not be empty")])
def test_unknown_devices_are_clear_errors(device, message):
    with pytest.raises(InputError, match=f"--device {device}: .*{message}"):
        checked_device(device)


def test_cpu_description_names_the_vector_isa_and_bf16_support():
    described = cpu_description()
    assert torch.backends.cpu.get_cpu_capability() in described and "bf16: " in described


class _MakesTensors(torch.nn.Module):
    """Creates a full-size tensor from its input's shape (as EdgeNeXt's position encoding does)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        ramp = torch.ones(x.shape[0], 1, x.shape[2], x.shape[3]).cumsum(2)
        return self.head(self.conv(x * ramp).relu().mean((2, 3)))


def test_tensors_the_graph_creates_follow_the_input_device():
    graph = build_saliency_graph(_MakesTensors().eval(), (3, 16, 16))
    fixed = [node.format_node() for node in graph.graph.nodes if isinstance(node.kwargs.get("device"), torch.device)]
    assert not fixed, f"factory calls pinned to a device: {fixed}"
    image, target = torch.randn(2, 3, 16, 16), torch.tensor([1, -1])
    on_cpu = graph(image, target)
    on_meta = graph.to("meta")(image.to("meta"), target.to("meta"))  # a device other than the traced one
    assert [o.device.type for o in on_meta] == ["meta"] * len(on_cpu)
    assert [o.shape for o in on_meta] == [o.shape for o in on_cpu]


def _compiled_for(artifact, fmt: str, device: str, directory):
    """A copy of ``artifact`` whose manifest says its ``fmt`` package was compiled for ``device``."""
    copy = shutil.copytree(artifact, directory / f"{fmt}-for-{device}")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][fmt]["device"] = device
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_package_compiled_for_cuda_is_refused_on_the_cpu_and_skipped_by_auto(gray_artifact, tmp_path):
    assert json.loads((gray_artifact / "manifest.json").read_text())["files"]["aoti_n1"]["device"] == "cpu"
    for_cuda = _compiled_for(gray_artifact, "aoti_n1", "cuda", tmp_path)
    with pytest.raises(ArtifactError, match=r"model_n1.pt2 is compiled for cuda, not cpu: load it with "
                                            r"device='cuda', or export it again with --device cpu"):
        salrt.load(for_cuda, backend="aoti_n1")
    assert salrt.load(gray_artifact).backend_for(1) == "aoti_n1"
    assert salrt.load(for_cuda).backend_for(1) == "onnxruntime", "auto takes only files that run on the device"


def test_onnxruntime_on_cuda_without_onnxruntime_gpu_names_the_extra(gray_artifact):
    import onnxruntime
    from salrt.formats import onnx
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(ArtifactError, match=r"needs onnxruntime-gpu: pip install 'salrt\[gpu\]'"):
        onnx.load(gray_artifact / "model.onnx", torch.device("cuda"))


def test_cuda_graphs_are_refused_off_cuda_and_for_host_copying_backends(gray_artifact):
    from salrt.runtime import _graphed
    with pytest.raises(InputError, match="cuda_graphs: for a CUDA device only, not cpu"):
        salrt.load(gray_artifact, backend="torchscript", cuda_graphs=True)
    with pytest.raises(InputError, match="backend onnxruntime cannot be captured in a CUDA graph"):
        _graphed({"onnxruntime": lambda: None}, torch.device("cuda"))


# ---- on a GPU (benchmarks/gpu_check.sh runs these on a lent machine) ----

@needs_cuda
@pytest.mark.parametrize("backend", ["eager", "torchscript"])
def test_cuda_backends_match_the_cpu_and_cuda_graphs_match_them(backend, tmp_path):
    artifact = salrt.export(gray_classifier(), tmp_path / "gray", formats=("torchscript",), image_size=GRAY_SHAPE[1:])
    source = gray_classifier() if backend == "eager" else artifact
    images = torch.randn(3, *GRAY_SHAPE, generator=torch.Generator().manual_seed(3))
    target = [1, -1, 4]
    on_cpu = salrt.load(source, backend=backend).explain(images, target=target)
    on_cuda = salrt.load(source, backend=backend, device="cuda").explain(images, target=target)
    graphed = salrt.load(source, backend=backend, device="cuda", cuda_graphs=True)
    for batch in (images, images[:1], images):  # a second batch size, then a replay of the first
        replayed = graphed.explain(batch, target=target[:batch.shape[0]])
        assert replayed.grad.device.type == "cuda"
        assert relative_l2(replayed.grad.cpu(), on_cpu.grad[:batch.shape[0]]) < 1e-4
    assert relative_l2(on_cuda.grad.cpu(), on_cpu.grad) < 1e-4 and on_cuda.grad.abs().sum() > 0
    assert torch.equal(on_cuda.used_target.cpu(), on_cpu.used_target)


@needs_cuda
def test_a_package_compiled_for_cuda_runs_there_and_is_refused_on_the_cpu(tmp_path):
    artifact = salrt.export(gray_classifier(), tmp_path / "gray", formats=("aoti", "torchscript"),
                            image_size=GRAY_SHAPE[1:], device="cuda")
    assert json.loads((artifact / "manifest.json").read_text())["files"]["aoti"]["device"] == "cuda"
    images = torch.randn(2, *GRAY_SHAPE)
    compiled = salrt.load(artifact, backend="aoti", device="cuda").explain(images)
    scripted = salrt.load(artifact, backend="torchscript").explain(images)
    assert relative_l2(compiled.grad.cpu(), scripted.grad) < 1e-4
    with pytest.raises(ArtifactError, match="compiled for cuda, not cpu"):
        salrt.load(artifact, backend="aoti")


def test_tf32_is_a_cuda_mode_recorded_in_the_manifest_and_refused_on_the_cpu(tmp_path):
    from salrt.graph.precision import numerics
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with numerics("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(InputError, match="--dtype tf32 does not run on cpu with eager"):
        salrt.load(gray_classifier(), dtype="tf32", image_size=GRAY_SHAPE[1:])
    with pytest.raises(InputError, match="--dtype tf32 is not supported for format onnx"):
        salrt.export(gray_classifier(), tmp_path / "onnx", formats="onnx", dtype="tf32")
    artifact = salrt.export(gray_classifier(), tmp_path / "tf32", formats="torchscript", dtype="tf32",
                            image_size=GRAY_SHAPE[1:])
    assert json.loads((artifact / "manifest.json").read_text())["dtype"] == "tf32"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--dtype tf32 does not run on cpu with torchscript"):
            salrt.load(artifact)


@needs_cuda
@pytest.mark.parametrize("dtype, bound", [("tf32", 1e-2), ("bf16", 5e-2), ("fp16", 5e-2)])
def test_reduced_precision_on_cuda_stays_near_float64(dtype, bound, tmp_path):
    model = gray_classifier()
    images = torch.randn(3, *GRAY_SHAPE, generator=torch.Generator().manual_seed(8))
    _, _, expected = salrt.graph.input_gradient(gray_classifier().double(), images.double(), torch.tensor([1, -1, 4]))
    artifact = salrt.export(model, tmp_path / dtype, formats="torchscript", dtype=dtype, image_size=GRAY_SHAPE[1:])
    for source in (artifact, model):
        explained = salrt.load(source, device="cuda", dtype=dtype, image_size=GRAY_SHAPE[1:]) if source is model \
            else salrt.load(source, device="cuda")
        grad = explained.explain(images, target=[1, -1, 4]).grad.cpu()
        assert relative_l2(grad, expected) < bound and grad.abs().sum() > 0
