"""ONNX artifacts: plain onnxruntime against float64 autograd and against the TorchScript artifact."""
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import salrt
from salrt.errors import SalrtError
from salrt.models import load_model

from conftest import assert_matches_reference, relative_l2

# (model, weights, input size): heavy models run at a reduced size their architecture allows.
MODELS = [
    ("resnet18", "random", None),
    ("mobilenet_v3_small", "random", None),   # hardswish, squeeze-excitation
    ("efficientnet_lite0", "default", None),  # pretrained; ReLU6, TF-style asymmetric padding
    pytest.param("resnet50", "random", None, marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", "random", 160, marks=pytest.mark.slow),  # SiLU, sigmoid gating
    pytest.param("convnext_tiny", "random", 128, marks=pytest.mark.slow),    # LayerNorm, GELU, 7x7 depthwise
    pytest.param("vgg11_bn", "random", 128, marks=pytest.mark.slow),
]
FORMATS = ("torchscript", "onnx")


@pytest.mark.parametrize("name,weights,size", MODELS)
def test_onnx_matches_float64_autograd_and_torchscript(name, weights, size, exported, photos):
    artifact = exported(name, weights, FORMATS, size)
    onnx.checker.check_model(str(artifact / "model.onnx"), full_check=True)
    runtime = salrt.load(artifact, backend="onnxruntime")
    scripted = salrt.load(artifact, backend="torchscript")
    module = load_model(name, weights).module
    batch = runtime.preprocess(list(photos.values()))
    target = torch.tensor([-1, 504, -1])  # mixed: argmax, explicit (coffee mug), argmax
    for n in (1, 3):
        result = runtime.explain(batch[:n], target=target[:n])
        outputs = (result.logits, result.target, result.saliency, result.grad)
        assert_matches_reference(outputs, module, batch[:n], target[:n])
        other = scripted.explain(batch[:n], target=target[:n])
        assert torch.equal(result.target, other.target)
        assert relative_l2(result.grad, other.grad) < 1e-2


def test_graph_io_and_metadata(exported):
    model = onnx.load(str(exported("resnet18", formats=FORMATS) / "model.onnx"))
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["image", "target"]
    assert [o.name for o in model.graph.output] == ["logits", "used_target", "saliency", "grad"]
    assert [d.dim_param or d.dim_value for d in inputs["image"].type.tensor_type.shape.dim] == ["N", 3, 224, 224]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["model"] == "resnet18" and json.loads(metadata["input_size"]) == [224, 224]
    assert not any(n.op_type.endswith("Grad") for n in model.graph.node)
    assert len(model.graph.initializer) > 0 and not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_plain_onnxruntime_reproduces_salrt_explain(exported, photo_files, tmp_path):
    """What a service without torch or salrt does: onnxruntime + numpy, nothing else."""
    artifact = exported("resnet18", formats=FORMATS)
    explainer = salrt.load(artifact, backend="torchscript")
    batch = explainer.preprocess([photo_files["chelsea"], photo_files["coffee"]])
    np.save(tmp_path / "batch.npy", batch.numpy())
    script = f"""
import sys
import numpy as np, onnxruntime as ort
session = ort.InferenceSession({str(artifact / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
image = np.load({str(tmp_path / 'batch.npy')!r})
logits, used_target, saliency, grad = session.run(None, {{"image": image, "target": np.full(len(image), -1)}})
np.save({str(tmp_path / 'saliency.npy')!r}, saliency)
assert "torch" not in sys.modules and "salrt" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    plain = torch.from_numpy(np.load(tmp_path / "saliency.npy"))
    assert relative_l2(plain, explainer.explain(batch).saliency) < 1e-2


def test_tampered_onnx_is_refused(exported, tmp_path):
    artifact = tmp_path / "copy"
    shutil.copytree(exported("resnet18", formats=FORMATS), artifact)
    data = (artifact / "model.onnx").read_bytes()
    (artifact / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(SalrtError, match="sha256 mismatch"):
        salrt.load(artifact, backend="onnxruntime")
    salrt.load(artifact, backend="torchscript")  # the other format is intact and still loads


def test_auto_backend_and_cli_backend(exported, photo_files, tmp_path):
    artifact = exported("resnet18", formats=FORMATS)
    assert salrt.load(artifact).backend == "onnxruntime"  # auto: the fastest on CPU at N=1
    result = subprocess.run([sys.executable, "-m", "salrt.cli", "explain", str(artifact), str(photo_files["coffee"]),
                             "--backend", "onnxruntime", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "coffee_overlay.png").is_file()
