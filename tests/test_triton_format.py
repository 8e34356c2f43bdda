"""`salrt export --format triton`: a Triton model repository (onnxruntime backend) and a KServe manifest.

This machine has no Triton ONNX Runtime backend (nvidia-pytriton's wheel ships only the Python backend), so
the repository is not served here: its config is parsed with Triton's own protobuf and checked against the
ONNX graph, and its model.onnx is run in onnxruntime.
"""
import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch
import yaml
from click.testing import CliRunner

import salrt
from salrt.artifact import sha256
from salrt.cli import main as cli
from salrt.errors import InputError
from salrt.formats import AUTO_ROUTES, BACKENDS, FORMATS, MEASURED_BACKENDS, QUICK_BACKENDS
from salrt.formats import triton as triton_format
from salrt.formats.triton_config import model_config_pb2

from triton_helpers import read_config

# ONNX element types as Triton names them (Triton's model configuration docs, "Datatypes")
TRITON_TYPE = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


@pytest.fixture(scope="module")
def with_onnx(tmp_path_factory):
    """onnx and triton through the CLI, triton named first, with non-default batching."""
    out = tmp_path_factory.mktemp("triton") / "resnet18"
    result = CliRunner().invoke(cli, ["export", "resnet18", "--weights", "random", "--format", "triton,onnx",
                                      "--out", str(out), "--triton-max-batch", "8",
                                      "--triton-max-queue-delay-ms", "0.5", "--triton-instances", "2"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def triton_only(tmp_path_factory):
    """triton alone through the Python API, on the CPU, batching left at its defaults."""
    return salrt.export("resnet18", tmp_path_factory.mktemp("triton") / "cpu", formats=["triton"],
                        weights="random", image_size=64, triton={"instance_kind": "cpu"})


def repository(artifact, model="resnet18"):
    return artifact / "triton" / model


def declared(tensors):
    """(name, data type, dims, reshape or None) of config.pbtxt's inputs or outputs."""
    data_type = model_config_pb2().DataType.Name
    return [(t.name, data_type(t.data_type), list(t.dims), list(t.reshape.shape) if t.HasField("reshape") else None)
            for t in tensors]


def triton_view(values):
    """What Triton must declare for ONNX graph inputs or outputs under its batching convention: the symbolic
    batch dimension left implicit, and a per-row scalar ([N]) as dims [1] reshaped to []."""
    expected = []
    for value in values:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param, f"{value.name}: the first dimension must be the symbolic batch"
        per_row = [d.dim_value for d in dims[1:]]
        assert all(per_row), f"{value.name}: only the batch may be symbolic"
        expected.append((value.name, TRITON_TYPE[value.type.tensor_type.elem_type], per_row or [1],
                         None if per_row else []))
    return expected


@pytest.mark.parametrize("artifact", ["with_onnx", "triton_only"])
def test_config_declares_the_onnx_graphs_tensors(artifact, request):
    artifact = request.getfixturevalue(artifact)
    config = read_config(repository(artifact) / "config.pbtxt")
    graph = onnx.load(str(repository(artifact) / "1" / "model.onnx"), load_external_data=False).graph
    assert config.name == "resnet18" and config.platform == "onnxruntime_onnx"
    assert declared(config.input) == triton_view(graph.input)
    assert declared(config.output) == triton_view(graph.output)


def test_batching_and_instances_follow_the_options(with_onnx, triton_only):
    kind = model_config_pb2().ModelInstanceGroup.Kind.Name
    chosen, defaults = (read_config(repository(a) / "config.pbtxt") for a in (with_onnx, triton_only))
    assert chosen.max_batch_size == 8 and chosen.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, kind(g.kind)) for g in chosen.instance_group] == [(2, "KIND_GPU")]
    assert defaults.max_batch_size == 16 and defaults.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.count, kind(g.kind)) for g in defaults.instance_group] == [(1, "KIND_CPU")]
    entry = json.loads((with_onnx / "manifest.json").read_text())["files"]["triton"]
    assert {k: entry[k] for k in triton_format.REPOSITORY_DEFAULTS} == \
        {"max_batch": 8, "max_queue_delay_ms": 0.5, "instance_kind": "gpu", "instances": 2}


def test_repository_model_is_a_hard_link_of_the_artifacts(with_onnx):
    ours, theirs = with_onnx / "model.onnx", repository(with_onnx) / "1" / "model.onnx"
    assert os.stat(ours).st_ino == os.stat(theirs).st_ino and os.stat(ours).st_nlink == 2
    assert ours.read_bytes() == theirs.read_bytes()
    manifest = json.loads((with_onnx / "manifest.json").read_text())
    assert list(manifest["files"]) == ["onnx", "triton"] and manifest["files"]["triton"]["model_onnx"] == "linked"


def test_link_falls_back_to_a_copy(tmp_path, monkeypatch):
    source = tmp_path / "model.onnx"
    source.write_bytes(b"graph")

    def no_hard_links(*args):
        raise PermissionError("hard links not supported")
    monkeypatch.setattr(triton_format.os, "link", no_hard_links)
    assert triton_format._link_or_copy(source, tmp_path / "copy.onnx") == "copied"
    assert (tmp_path / "copy.onnx").read_bytes() == b"graph" and os.stat(source).st_nlink == 1


@pytest.mark.parametrize("artifact", ["with_onnx", "triton_only"])
def test_manifest_records_every_repository_file_with_its_sha256(artifact, request):
    artifact = request.getfixturevalue(artifact)
    entry = json.loads((artifact / "manifest.json").read_text())["files"]["triton"]
    on_disk = {p.relative_to(artifact).as_posix(): p for p in (artifact / "triton").rglob("*") if p.is_file()}
    assert entry["file"] == "triton"
    assert sorted(entry["files"]) == sorted(on_disk) == ["triton/kserve.yaml", "triton/resnet18/1/model.onnx",
                                                         "triton/resnet18/config.pbtxt"]
    for name, path in on_disk.items():
        assert entry["files"][name] == {"sha256": sha256(path), "bytes": path.stat().st_size}


def test_triton_without_onnx_writes_the_graph_into_the_repository(triton_only):
    assert sorted(p.name for p in triton_only.iterdir()) == ["manifest.json", "triton"]
    model = repository(triton_only) / "1" / "model.onnx"
    assert os.stat(model).st_nlink == 1
    onnx.checker.check_model(str(model))
    entry = json.loads((triton_only / "manifest.json").read_text())["files"]["triton"]
    assert entry["model_onnx"] == "written" and entry["opset"] == 20


def test_kserve_manifest_names_the_model_and_its_gpu(with_onnx, triton_only):
    gpu, cpu = (yaml.safe_load((a / "triton" / "kserve.yaml").read_text()) for a in (with_onnx, triton_only))
    assert gpu["apiVersion"] == "serving.kserve.io/v1beta1" and gpu["kind"] == "InferenceService"
    assert gpu["metadata"]["name"] == "resnet18"
    model = gpu["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://YOUR-BUCKET/PATH/triton"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "resources" not in cpu["spec"]["predictor"]["model"]
    assert "upload this triton/ directory" in (with_onnx / "triton" / "kserve.yaml").read_text().lower()


def test_kubernetes_names():
    assert triton_format._kubernetes_name("efficientnet_lite0") == "efficientnet-lite0"
    assert triton_format._kubernetes_name("_My.Net_") == "my-net"


def test_repository_model_gives_the_onnxruntime_backends_outputs(with_onnx):
    import onnxruntime as ort
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    target = np.array([-1, 5], dtype=np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as salrt's backend: the same reduction order
    session = ort.InferenceSession(str(repository(with_onnx) / "1" / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    logits, used_target, saliency, grad = session.run(None, {"image": image.numpy(), "target": target})
    result = salrt.load(with_onnx, backend="onnxruntime").explain(image, target=target.tolist())
    assert used_target.tolist() == result.target.tolist() and used_target[1] == 5
    for ours, theirs in ((logits, result.logits), (saliency, result.saliency), (grad, result.grad)):
        assert np.array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("options,message", [
    ({"max_batch": 0}, "triton max_batch must be a whole number of at least 1, got 0"),
    ({"instances": 1.5}, "triton instances must be a whole number of at least 1, got 1.5"),
    ({"max_queue_delay_ms": -1}, "triton max_queue_delay_ms must be a number of milliseconds, 0 or more, got -1"),
    ({"instance_kind": "tpu"}, "triton instance_kind must be one of gpu, cpu, got 'tpu'"),
    ({"max_batch_size": 8}, "unknown triton option max_batch_size; choose from max_batch"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        salrt.export("resnet18", tmp_path / "out", formats="onnx,triton", weights="random", triton=options)
    assert list(tmp_path.iterdir()) == []


def test_bad_option_on_the_command_line_is_one_error_line(tmp_path):
    result = CliRunner().invoke(cli, ["export", "resnet18", "--weights", "random", "--format", "triton",
                                      "--out", str(tmp_path / "out"), "--triton-instance-kind", "tpu"])
    assert result.exit_code == 1
    assert result.stderr == "error: triton instance_kind must be one of gpu, cpu, got 'tpu'\n"
    assert list(tmp_path.iterdir()) == []


def test_missing_tritonclient_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # what `import` sees when it is not installed
    with pytest.raises(InputError, match=r"needs tritonclient: pip install 'salrt\[serve\]'"):
        salrt.export("resnet18", tmp_path / "out", formats="triton", weights="random")
    assert list(tmp_path.iterdir()) == []


def test_triton_is_a_format_not_a_backend(with_onnx):
    assert FORMATS["triton"].backend is None and FORMATS["triton"].load is None
    for backends in (BACKENDS, MEASURED_BACKENDS, QUICK_BACKENDS, *(b for routes in AUTO_ROUTES.values()
                                                                    for _, b in routes)):
        assert "triton" not in backends and None not in backends
    assert salrt.load(with_onnx).backends == ("onnxruntime",)
    assert "triton" in CliRunner().invoke(cli, ["export", "--help"]).output


def test_info_lists_each_repository_file(with_onnx):
    result = CliRunner().invoke(cli, ["info", str(with_onnx)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("triton "))
    rows = [line.split() for line in lines[first:first + 3]]  # [format,] file, size, MB, sha256, digest
    assert [row[-5] for row in rows] == ["triton/kserve.yaml", "triton/resnet18/1/model.onnx",
                                         "triton/resnet18/config.pbtxt"]
    assert [len(row) for row in rows] == [6, 5, 5] and all(row[-2] == "sha256" for row in rows)


def test_every_source_kind_gets_one_safe_model_name_in_both_repositories(tmp_path, monkeypatch):
    """A Hugging Face directory's name (``hf:./my-vit/``) was written as nested folders ``triton/hf:./my-vit/``,
    which Triton cannot load; ``salrt serve`` named it otherwise. One rule now, for every source kind."""
    import transformers
    from salrt.formats.triton_config import triton_model_name
    from salrt.server import model_names
    assert [triton_model_name(source) for source in ("timm:resnet18", "hf:./my-vit/", "pkg.mod:attr", "TinyNet", "..")] \
        == ["timm_resnet18", "hf_._my-vit_", "pkg.mod_attr", "TinyNet", "_.."]
    monkeypatch.chdir(tmp_path)
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=32, patch_size=16, num_labels=3)
    transformers.ViTForImageClassification(config).save_pretrained("my-vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained("my-vit")
    artifact = salrt.export("hf:./my-vit/", tmp_path / "artifact", formats=["triton"])
    [model] = [path for path in (artifact / "triton").iterdir() if path.is_dir()]
    assert model.name == "hf_._my-vit_" == read_config(model / "config.pbtxt").name
    assert model_names(salrt.load(artifact).manifest)["tensor"] == model.name
    assert (model / "1" / "model.onnx").is_file()
