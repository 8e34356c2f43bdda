"""An artifact is code: a deployer pins the digest of what they reviewed, and any other directory is refused
before any of its files is loaded, in Python, `salrt serve` and the C++ runtime."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import salrt
from salrt.artifact import digest
from salrt.errors import ArtifactError, InputError, SalrtError

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


# hostile values a field of a manifest may be replaced with: wrong types, empty, huge, negative, paths out
HOSTILE = [None, True, 0, -1, 7, 2**62, 1.5, -1e300, "", "x", "N", "../../etc/passwd", "/etc/passwd", "model.pt",
           [], [None], [-1, -1], [10**9, 10**9], ["N", 1, 48, 64], {}, {"name": None}, {"file": 1},
           [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
DELETED = object()
PYTHON_MUTATIONS, CPP_MUTATIONS = 120, 25  # per backend; C++: each a process of its own


def manifest_paths(value, prefix=()) -> list[tuple]:
    """Every field of a manifest: dict keys and list items (of long lists, the first two), nested."""
    children = list(value.items()) if isinstance(value, dict) else \
        list(enumerate(value[:2])) if isinstance(value, list) else []
    return [path for key, child in children for path in [prefix + (key,)] + manifest_paths(child, prefix + (key,))]


def mutated(manifest: dict, path: tuple, value) -> dict:
    copy = json.loads(json.dumps(manifest))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


def artifact_with(gray_artifact, directory, manifest: dict):
    """``gray_artifact``'s files (hard links) beside ``manifest``."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()
    for name in ("model.onnx", "model.pt"):
        os.link(gray_artifact / name, directory / name)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def manifest_fields(gray_artifact):
    manifest = json.loads((gray_artifact / "manifest.json").read_text())
    return manifest, manifest_paths(manifest)


def mutations(manifest_fields):
    from hypothesis import strategies as st
    _, paths = manifest_fields
    return st.tuples(st.sampled_from(paths), st.sampled_from([DELETED, *HOSTILE]))


MUTATION_IMAGES = torch.rand(2, *GRAY_SHAPE, generator=torch.Generator().manual_seed(3)) * 2 - 1


def try_mutations(gray_artifact, tmp_path, manifest_fields, examples: int, explained_or_refused) -> int:
    """Runs ``explained_or_refused(directory, mutation)`` (True: refused as it must be; False: explained, checked
    by it) on ``examples`` mutated copies of ``gray_artifact``, as Hypothesis draws them; returns how many were
    refused."""
    from hypothesis import HealthCheck, given, settings
    manifest, _ = manifest_fields
    tried, refused = [], []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutations(manifest_fields))
    def check(mutation):
        path, value = mutation
        directory = artifact_with(gray_artifact, tmp_path / "mutated", mutated(manifest, path, value))
        tried.append(mutation)
        refused.extend([mutation] if explained_or_refused(directory, mutation) else [])
    check()
    assert len(tried) >= examples and 0 < len(refused) < len(tried)
    return len(refused)


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_every_mutation_of_a_manifest_explains_correctly_or_is_a_salrt_error(gray_artifact, tmp_path, backend,
                                                                             manifest_fields):
    """Property: a field dropped, retyped or made hostile either changes nothing the explanation computes, or
    is refused as a SalrtError naming it; never a TypeError, a KeyError, a crash or a wrong map."""
    expected = salrt.load(gray_artifact, backend=backend).explain(MUTATION_IMAGES, torch.tensor([1, -1]))

    def explained_or_refused(directory, mutation) -> bool:
        try:
            result = salrt.load(directory, backend=backend).explain(MUTATION_IMAGES, torch.tensor([1, -1]))
            result.top(3)
        except SalrtError:
            return True
        for name in ("logits", "used_target", "saliency", "grad"):
            assert torch.equal(getattr(result, name), getattr(expected, name)), (mutation, name)
        assert [str(c) for c in result.categories] == result.categories, mutation
        return False
    refused = try_mutations(gray_artifact, tmp_path, manifest_fields, PYTHON_MUTATIONS, explained_or_refused)
    print(f"{backend}: {PYTHON_MUTATIONS} mutations tried, {refused} refused, the rest explained as before")


def test_every_mutation_of_a_manifest_is_explained_or_refused_by_the_cpp_runtime(binary, gray_artifact,  # noqa: F811
                                                                                 tmp_path, manifest_fields):
    """The same property for salrt_explain: it explains as before, or exits 1 with one error line; never a
    signal (a crash) or an uncaught exception's abort. Fewer examples: each is a process."""
    inp = save_input(tmp_path / "in.pt", MUTATION_IMAGES, torch.tensor([1, -1]))
    run(binary, gray_artifact, inp, tmp_path / "expected.pt", "--backend", "torchscript")
    expected = torch.load(tmp_path / "expected.pt")

    def explained_or_refused(directory, mutation) -> bool:
        done = run(binary, directory, inp, tmp_path / "out.pt", "--backend", "torchscript", check=False)
        if done.returncode == 1 and len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "):
            return True
        assert done.returncode == 0, (mutation, done.returncode, done.stderr)
        assert all(torch.equal(a, b) for a, b in zip(torch.load(tmp_path / "out.pt"), expected)), mutation
        return False
    refused = try_mutations(gray_artifact, tmp_path, manifest_fields, CPP_MUTATIONS, explained_or_refused)
    print(f"C++: {CPP_MUTATIONS} mutations tried, {refused} refused, the rest explained as before")


class AnotherProgram(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def corrupt_payloads(gray_artifact, tmp_path) -> dict:
    """Copies of ``gray_artifact`` whose manifest states the sha256 of a damaged or foreign file (a broken
    export, or a hostile artifact): {case: (directory, backend)}."""
    def truncated(path):
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])

    def not_a_zip(path):
        path.write_bytes(b"PK\x03\x04 this is no zip archive" * 100)

    def another_program(path):
        torch.jit.script(AnotherProgram()).save(str(path))

    cases = {"truncated model.onnx": ("onnx", "model.onnx", truncated),
             "model_n1.pt2 not a zip": ("aoti_n1", "model_n1.pt2", not_a_zip),
             "truncated model.pt": ("torchscript", "model.pt", truncated),
             "model.pt of another program": ("torchscript", "model.pt", another_program)}
    made = {}
    for case, (fmt, name, damage) in cases.items():
        copy = shutil.copytree(gray_artifact, tmp_path / case.replace(" ", "-"))
        damage(copy / name)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["files"][fmt].update(sha256=salrt.artifact.sha256(copy / name), bytes=(copy / name).stat().st_size)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        made[case] = (copy, "onnxruntime" if fmt == "onnx" else fmt)
    return made


def test_a_corrupt_or_foreign_payload_is_one_clear_error_in_both_runtimes(gray_artifact, binary,  # noqa: F811
                                                                         tmp_path):
    inp = save_input(tmp_path / "in.pt", MUTATION_IMAGES)
    for case, (directory, backend) in corrupt_payloads(gray_artifact, tmp_path).items():
        with pytest.raises(ArtifactError) as refused:
            salrt.load(directory, backend=backend).explain(MUTATION_IMAGES)
        assert len(str(refused.value).splitlines()) == 1 and str(directory) in str(refused.value), \
            (case, str(refused.value))
        if backend != "onnxruntime":  # the C++ runtime runs TorchScript and AOTInductor
            done = run(binary, directory, inp, tmp_path / "out.pt", "--backend", backend, check=False)
            assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, (case, done.stderr)
            assert done.stderr.startswith("error: ") and str(directory) in done.stderr, (case, done.stderr)
