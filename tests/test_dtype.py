"""--dtype: reduced precision inside the graph, float32 at its edges, measured against float64 autograd on
inputs the export never saw; the formats that cannot run a dtype refuse it with an error naming those that can."""
import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import salrt
from salrt import bench
from salrt.cli import main as cli
from salrt.evaluate import spearman
from salrt.graph import build_saliency_graph
from salrt.graph.precision import DTYPES, SCHEMES, SUPPORT, apply_precision, support_table
from salrt.models import load_model

from conftest import reference, relative_l2

SIZE = 64
# bf16_backward on resnet18 at 64px, random weights (measured: grad 7.4e-3..8.6e-3 from float64, map Spearman
# 0.9999); the thresholds leave room for other inputs, and a bf16 forward fails them (grad 0.16..0.20).
GRAD_TOL, SPEARMAN_MIN = 3e-2, 0.995


class TinyNet(torch.nn.Module):
    """Conv + BN + ReLU + max-pool + linear: every op kind of a CNN's graph, and it compiles in seconds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def resnet18():
    return load_model("resnet18", "random", image_size=SIZE)


@pytest.fixture(scope="module")
def unseen():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4242))


@pytest.fixture(scope="module")
def bf16_artifact(tmp_path_factory, resnet18):
    out = tmp_path_factory.mktemp("bf16") / "resnet18"
    return salrt.export(resnet18, out, formats="torchscript", dtype="bf16")


def assert_faithful(explanation, module, images):
    _, used, ref_saliency, ref_grad = reference(module, images, torch.full((len(images),), -1))
    assert all(t.dtype == torch.float32 for t in (explanation.logits, explanation.saliency, explanation.grad))
    assert torch.equal(explanation.target, used)
    for grad, saliency, expected_grad, expected_map in zip(explanation.grad, explanation.saliency, ref_grad,
                                                           ref_saliency):
        assert grad.abs().amax() > 0
        assert relative_l2(grad, expected_grad) < GRAD_TOL
        assert spearman(saliency, expected_map) > SPEARMAN_MIN


def test_bf16_torchscript_artifact_is_faithful_to_float64(bf16_artifact, resnet18, unseen):
    manifest = json.loads((bf16_artifact / "manifest.json").read_text())
    assert manifest["dtype"] == "bf16"
    assert {io["dtype"] for io in manifest["outputs"] if io["name"] != "used_target"} == {"float32"}
    explainer = salrt.load(bf16_artifact, backend="torchscript")
    assert_faithful(explainer.explain(unseen), resnet18.module, unseen)


def test_bf16_eager_computes_what_the_artifact_computes(bf16_artifact, unseen):
    eager = salrt.load("resnet18", weights="random", image_size=SIZE, dtype="bf16").explain(unseen)
    exported = salrt.load(bf16_artifact, backend="torchscript").explain(unseen)
    assert eager.backend == "eager"
    assert relative_l2(eager.grad, exported.grad) < 1e-6


def test_bf16_graph_holds_bf16_ops_and_a_float32_forward(resnet18, unseen):
    """The shipped scheme rounds the backward only: the logits (hence every ReLU mask) are float32's."""
    fp32 = build_saliency_graph(resnet18.module, resnet18.input_shape)
    bf16 = build_saliency_graph(resnet18.module, resnet18.input_shape, dtype="bf16")
    casts = [n for n in bf16.graph.nodes if n.kwargs.get("dtype") == torch.bfloat16]
    assert len(casts) > 10
    target = torch.full((3,), -1)
    with torch.no_grad():
        assert torch.equal(fp32(unseen, target)[0], bf16(unseen, target)[0])


def test_a_bf16_forward_moves_relu_masks_and_the_map(resnet18, unseen):
    """Why bf16 ships the backward-only scheme: rounding the forward too is measured far from float64 (the
    emulated numerics: a float32 op on bf16-rounded inputs, as the benchmark runs them)."""
    graph = apply_precision(build_saliency_graph(resnet18.module, resnet18.input_shape), SCHEMES["bf16_all"],
                            emulate=True)
    with torch.no_grad():
        grad = graph(unseen, torch.full((3,), -1))[3]
    ref_grad = reference(resnet18.module, unseen, torch.full((3,), -1))[3]
    assert min(relative_l2(g, r) for g, r in zip(grad, ref_grad)) > 5 * 8.6e-3


def test_bf16_aoti_package(tmp_path, unseen):
    model = TinyNet().eval()
    out = salrt.export(model, tmp_path / "tiny", formats="aoti", dtype="bf16", image_size=SIZE)
    explanation = salrt.load(out, backend="aoti").explain(unseen)
    assert_faithful(explanation, model, unseen)


def test_fp16_onnx_runs_in_onnxruntime_on_the_cpu(tmp_path, unseen):
    model = TinyNet().eval()
    out = salrt.export(model, tmp_path / "tiny16", formats="onnx", dtype="fp16", image_size=SIZE)
    assert salrt.load(out).manifest["dtype"] == "fp16"
    assert_faithful(salrt.load(out, backend="onnxruntime").explain(unseen), model, unseen)


@pytest.mark.parametrize("dtype, formats, message", [
    ("bf16", "torchscript,onnx", "not supported for format onnx .*formats that run bf16: torchscript, aoti, aoti_n1"),
    ("fp16", "aoti", "fp16 does not run on cpu with aoti .*; aoti runs fp16 on cuda"),
    ("int8", "torchscript", "unknown dtype 'int8'; choose from fp32, bf16, fp16"),
])
def test_export_refuses_a_dtype_a_format_cannot_run(tmp_path, dtype, formats, message):
    with pytest.raises(salrt.InputError, match=message):
        salrt.export(TinyNet().eval(), tmp_path / "x", formats=formats, dtype=dtype, image_size=SIZE)
    assert not (tmp_path / "x").exists()


def test_fp16_on_the_cpu_is_refused(tmp_path):
    with pytest.raises(salrt.InputError, match="fp16 does not run on cpu with eager .*eager runs fp16 on cuda"):
        salrt.load("resnet18", weights="random", dtype="fp16")


def test_old_manifest_without_dtype_is_float32(tmp_path, unseen):
    out = salrt.export(TinyNet().eval(), tmp_path / "old", formats="torchscript", image_size=SIZE)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest.pop("dtype") == "fp32"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert salrt.load(out, dtype="fp32").explain(unseen).grad.dtype == torch.float32
    with pytest.raises(salrt.InputError, match="computes in fp32, not bf16"):
        salrt.load(out, dtype="bf16")


def test_cli_export_and_info_show_the_dtype(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(cli, ["export", "resnet18", "--weights", "random", "--dtype", "bf16", "--format", "onnx",
                                  "--out", str(tmp_path / "r")])
    assert refused.exit_code == 1 and "error: --dtype bf16 is not supported for format onnx" in refused.output
    written = runner.invoke(cli, ["export", "resnet18", "--weights", "random", "--dtype", "bf16", "--image-size",
                                  str(SIZE), "--out", str(tmp_path / "r")])
    assert written.exit_code == 0, written.output
    info = runner.invoke(cli, ["info", str(tmp_path / "r")])
    assert re.search(r"^dtype +bf16$", info.output, re.M)


def test_bench_has_a_dtype_column(tmp_path):
    report = bench.benchmark("squeezenet1_1", batches=(1,), backends=("eager",), rounds=1, warmup=0,
                             cache=tmp_path, progress=lambda message: None, dtypes=("fp32", "bf16"))
    rows = {(r["backend"], r["dtype"]) for r in report["results"]}
    assert rows == {("naive", "fp32"), ("forward", "fp32"), ("eager", "fp32"), ("eager", "bf16")}
    assert re.search(r"^eager +bf16 +1 ", bench.table(report), re.M)


def test_readme_dtype_table_is_the_support_definition():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- dtype:start -->")[1].split("<!-- dtype:end -->")[0]
    assert support_table() in block
    assert set(SUPPORT) == set(DTYPES)
