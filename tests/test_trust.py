"""An artifact is code: a deployer pins the digest of what they reviewed, and any other directory is refused
before any of its files is loaded, in Python, `salrt serve` and the C++ runtime."""
import shutil
import subprocess
import sys

import pytest
import torch

import salrt
from salrt.artifact import digest
from salrt.errors import ArtifactError, InputError

from conftest import GRAY_SHAPE
from test_cpp import binary, run, save_input  # noqa: F401  (binary: the `make cpp` fixture)


def files_of(artifact):
    return sorted(p.relative_to(artifact) for p in artifact.rglob("*") if p.is_file())


def tampered(artifact, tmp_path, name, offset=-1):
    """A copy of ``artifact`` with one byte of ``name`` changed."""
    copy = shutil.copytree(artifact, tmp_path / f"copy-{str(name).replace('/', '_')}")
    data = bytearray((copy / name).read_bytes())
    data[offset] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    return copy


def test_info_prints_the_digest_that_load_accepts(gray_artifact):
    pinned = digest(gray_artifact)
    assert pinned.startswith("sha256:") and len(pinned) == len("sha256:") + 64 and digest(gray_artifact) == pinned
    shown = subprocess.run([sys.executable, "-m", "salrt.cli", "info", str(gray_artifact)], capture_output=True,
                           text=True, check=True).stdout
    assert f"digest           {pinned}" in shown
    result = salrt.load(gray_artifact, backend="onnxruntime", digest=pinned).explain(torch.zeros(1, *GRAY_SHAPE))
    assert result.saliency.shape == (1, *GRAY_SHAPE[1:])


def test_one_changed_byte_in_any_file_is_refused_before_anything_loads(gray_artifact, tmp_path, monkeypatch):
    pinned = digest(gray_artifact)
    names = files_of(gray_artifact)
    assert {"manifest.json", "model.onnx", "model.pt", "model_n1.pt2"} <= {str(n) for n in names}

    def loaded(*args, **kwargs):
        raise AssertionError("a file of a refused artifact was loaded")
    monkeypatch.setattr(salrt.runtime, "_load_artifact", loaded)
    for name in names:
        copy = tampered(gray_artifact, tmp_path, name, offset=len((gray_artifact / name).read_bytes()) // 2)
        with pytest.raises(ArtifactError, match="does not have the digest it was pinned to"):
            salrt.load(copy, backend="onnxruntime", digest=pinned)
    added = shutil.copytree(gray_artifact, tmp_path / "added")
    (added / "extra.so").write_bytes(b"\x7fELF")
    with pytest.raises(ArtifactError, match="a file was changed, added or removed"):
        salrt.load(added, digest=pinned)


def test_a_model_source_takes_no_digest():
    with pytest.raises(InputError, match="digest: for an artifact directory only"):
        salrt.load("resnet18", weights="random", digest="sha256:00")


def test_serve_refuses_another_digest_before_triton_starts(gray_artifact, tmp_path):
    from salrt.server import ServeOptions, TritonServer
    copy = tampered(gray_artifact, tmp_path, "manifest.json", offset=-2)
    with pytest.raises(ArtifactError, match="pinned to"):
        TritonServer(copy, ServeOptions(backend="onnxruntime", digest=digest(gray_artifact)))


@pytest.mark.parametrize("backend", ["torchscript", "aoti_n1"])
def test_cpp_computes_the_same_digest_and_refuses_another(binary, gray_artifact, tmp_path, backend):  # noqa: F811
    inp = save_input(tmp_path / "in.pt", torch.zeros(1, *GRAY_SHAPE))
    pinned = digest(gray_artifact)
    run(binary, gray_artifact, inp, tmp_path / "out.pt", "--backend", backend, "--digest", pinned)
    changed = "model.pt" if backend == "torchscript" else "model.onnx"  # refused even where it is not the one loaded
    copy = tampered(gray_artifact, tmp_path, changed)
    done = run(binary, copy, inp, tmp_path / "out2.pt", "--backend", backend, "--digest", pinned, check=False)
    assert done.returncode == 1 and "does not have the digest it was pinned to" in done.stderr, done.stderr


def test_a_bare_hex_digest_is_the_same_digest(gray_artifact, binary, tmp_path):  # noqa: F811
    """`salrt info` prints ``sha256:<hex>``; the hex alone was refused as another digest, naming itself."""
    hex_only = digest(gray_artifact).removeprefix("sha256:")
    salrt.load(gray_artifact, backend="onnxruntime", digest=hex_only.upper())
    inp = save_input(tmp_path / "in.pt", torch.zeros(1, *GRAY_SHAPE))
    run(binary, gray_artifact, inp, tmp_path / "out.pt", "--backend", "torchscript", "--digest", hex_only)
    with pytest.raises(ArtifactError, match="pinned to"):
        salrt.load(gray_artifact, digest=hex_only[:-1] + ("0" if hex_only[-1] != "0" else "1"))


def test_a_manifest_naming_a_file_outside_its_directory_is_refused(gray_artifact, binary, tmp_path):  # noqa: F811
    """An artifact is code (model.pt2 holds a shared library): a manifest pointing a runtime at a file elsewhere,
    even one whose sha256 it states correctly, is refused by Python and C++ before anything loads."""
    import json
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(gray_artifact / "model.pt", outside / "model.pt")
    inp = save_input(tmp_path / "in.pt", torch.zeros(1, *GRAY_SHAPE))
    hostile = {"absolute": (str(outside / "model.pt"), "is not a path inside the artifact directory"),
               "parent": ("../elsewhere/model.pt", "is not a path inside the artifact directory"),
               "symlink": ("linked.pt", "leads outside"),
               "number": (7, "must hold \"file\" and \"sha256\" strings|lacks \"file\" or \"sha256\"")}
    for case, (file, message) in hostile.items():
        copy = shutil.copytree(gray_artifact, tmp_path / case)
        (copy / "linked.pt").symlink_to(outside / "model.pt")
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["files"]["torchscript"]["file"] = file
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match=message):
            salrt.load(copy, backend="torchscript")
        done = run(binary, copy, inp, tmp_path / "out.pt", "--backend", "torchscript", check=False)
        assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, (case, done.stderr)
        assert any(part in done.stderr for part in message.split("|")), (case, done.stderr)
