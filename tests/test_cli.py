"""The salrt command line, run as users run it: real processes, real files."""
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import salrt
from salrt.errors import ArtifactError, ExportError, InputError

from conftest import png_header


def salrt_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "salrt.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def assert_one_line_error(result, match):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.stderr


def test_export_then_explain_writes_pngs(tmp_path, photo_files):
    out = tmp_path / "r18"
    result = salrt_cli("export", "resnet18", "--weights", "random", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.pt"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "resnet18" and manifest["weights"] == "random"
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "used_target", "saliency", "grad"]

    maps = tmp_path / "maps"
    result = salrt_cli("explain", out, photo_files["chelsea"], photo_files["coffee"], "--out", maps)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 2 and "chelsea.jpg:" in result.stdout
    for stem in ("chelsea", "coffee"):
        for kind in ("saliency", "overlay"):
            with Image.open(maps / f"{stem}_{kind}.png") as image:
                assert image.format == "PNG" and image.size == (224, 224) and image.mode == "RGB"

    info = salrt_cli("info", out)
    assert info.returncode == 0 and "resnet18" in info.stdout and "sha256" in info.stdout


def test_explain_with_a_model_name_and_target(tmp_path, photo_files):
    result = salrt_cli("explain", "efficientnet_lite0", photo_files["coffee"], "--target", "967", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("coffee.jpg: espresso")
    assert (tmp_path / "coffee_overlay.png").is_file()


def test_unknown_model(tmp_path):
    result = salrt_cli("export", "resnet51", "--out", tmp_path / "x")
    assert_one_line_error(result, "unknown model 'resnet51'")
    assert not (tmp_path / "x").exists()


def test_unknown_format(tmp_path):
    assert_one_line_error(salrt_cli("export", "resnet18", "--format", "tflite", "--out", tmp_path / "x"),
                          "unknown format tflite")


def test_missing_and_corrupt_images(tmp_path, exported, photo_files):
    artifact = exported("resnet18")
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is text, not a JPEG")
    maps = tmp_path / "maps"
    assert_one_line_error(salrt_cli("explain", artifact, tmp_path / "nope.jpg", "--out", maps), "no such file")
    assert_one_line_error(salrt_cli("explain", artifact, photo_files["chelsea"], fake, "--out", maps),
                          "not a readable image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo_files["chelsea"].read_bytes()[:2000])
    assert_one_line_error(salrt_cli("explain", artifact, truncated, "--out", maps), "not a readable image")
    assert not maps.exists(), "nothing may be written when an input is bad"


def test_unwritable_output(tmp_path, exported, photo_files):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(salrt_cli("export", "resnet18", "--weights", "random", "--out", blocker / "sub"),
                          "cannot write")
    assert_one_line_error(salrt_cli("explain", exported("resnet18"), photo_files["chelsea"], "--out", blocker / "m"),
                          "cannot write")
    assert_one_line_error(salrt_cli("export", "resnet18", "--weights", "random", "--out", blocker),
                          "not a salrt artifact directory")


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import dataclasses

    from salrt.formats import FORMATS

    def broken(graph, path, description):
        path.write_bytes(b"half")
        raise RuntimeError("disk full")
    monkeypatch.setitem(FORMATS, "torchscript", dataclasses.replace(FORMATS["torchscript"], write=broken))
    with pytest.raises(ExportError, match="cannot export resnet18 to torchscript: RuntimeError: disk full"):
        salrt.export("resnet18", tmp_path / "out", weights="random")
    assert list(tmp_path.iterdir()) == []


def test_tampered_and_foreign_artifacts(tmp_path, exported):
    import shutil
    artifact = tmp_path / "copy"
    shutil.copytree(exported("resnet18"), artifact)
    with open(artifact / "model.pt", "r+b") as file:
        file.truncate(1000)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        salrt.load(artifact)
    assert_one_line_error(salrt_cli("explain", artifact, "x.jpg"), "no such file")  # inputs are checked first
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["format_version"] = 99
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format 99.*export it again"):
        salrt.load(artifact)
    (artifact / "manifest.json").write_text("[]")
    with pytest.raises(ArtifactError, match="is corrupt: not a JSON object"):
        salrt.load(artifact)
    with pytest.raises(InputError, match="neither an artifact directory nor a known model"):
        salrt.load(tmp_path / "nothing-here")


def test_wrong_tensor_shape_and_targets(exported):
    explainer = salrt.load(exported("resnet18"))
    with pytest.raises(InputError, match=r"float32 \[N, 3, 224, 224\] tensor, got float32 \[2, 3, 100, 100\]"):
        explainer.explain(torch.zeros(2, 3, 100, 100))
    with pytest.raises(InputError, match="float64"):
        explainer.explain(torch.zeros(1, 3, 224, 224, dtype=torch.float64))
    with pytest.raises(InputError, match="target 1000 is out of range"):
        explainer.explain(torch.zeros(1, 3, 224, 224), target=1000)
    for bad in (2.7, True, [1.0, 2.0], {"cat": 1}):
        with pytest.raises(InputError, match="target must be an integer class index"):
            explainer.explain(torch.zeros(2, 3, 224, 224), target=bad)
    with pytest.raises(InputError, match="resnet18 has no class 'cat'; did you mean 'crate'"):
        explainer.explain(torch.zeros(2, 3, 224, 224), target="cat")
    named = explainer.explain(torch.zeros(2, 3, 224, 224), target=["Egyptian cat", "tabby"])  # names, any case
    assert named.used_target.tolist() == [285, 281]
    with pytest.raises(InputError, match="3 targets for 2 images"):
        explainer.explain(torch.zeros(2, 3, 224, 224), target=[1, 2, 3])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_without_gpu_is_a_clear_error(exported):
    with pytest.raises(InputError, match="no CUDA device"):
        salrt.load(exported("resnet18"), device="cuda")


def test_unsupported_op_names_the_model_and_op(tmp_path, monkeypatch):
    from salrt.graph import decompositions
    monkeypatch.setattr(decompositions, "_CUSTOM", {k: v for k, v in decompositions._CUSTOM.items()
                                                    if "max_pool2d" not in str(k)})
    with pytest.raises(ExportError, match=r"cannot build the saliency graph of resnet18: .*max_pool2d_with_indices_backward"):
        salrt.export("resnet18", tmp_path / "out", weights="random")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("width,height", [(20000, 20000), (12000, 9000)])  # above and below PIL's own refusal
def test_decompression_bomb_is_refused_before_decoding(tmp_path, exported, width, height):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(width, height))
    maps = tmp_path / "maps"
    assert_one_line_error(salrt_cli("explain", exported("resnet18"), bomb, "--out", maps),
                          f"over the limit of 89; to allow it, set SALRT_MAX_IMAGE_PIXELS={width * height}")
    assert not maps.exists()
    with pytest.raises(InputError, match="megapixels, over the limit"):
        salrt.load(exported("resnet18")).explain(bomb.read_bytes())


def test_raised_pixel_limit_lets_a_large_image_through_to_the_decoder(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from salrt.images import open_image
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)  # raising it is global: undo after
    bomb = tmp_path / "large.png"
    bomb.write_bytes(png_header(20000, 20000))
    monkeypatch.setenv("SALRT_MAX_IMAGE_PIXELS", str(20000 * 20000))
    with pytest.raises(InputError, match="not a readable image"):  # decoded now: no pixel data in this file
        open_image(bomb)
    for bad in ("lots", "0", "-5"):
        monkeypatch.setenv("SALRT_MAX_IMAGE_PIXELS", bad)
        with pytest.raises(InputError, match="SALRT_MAX_IMAGE_PIXELS must be a positive whole number"):
            open_image(bomb)


def test_model_name_means_the_model_and_a_path_the_artifact(tmp_path, exported, photo_files, monkeypatch):
    import shutil
    shutil.copytree(exported("resnet18"), tmp_path / "resnet18")
    monkeypatch.chdir(tmp_path)
    by_name = salrt.load("resnet18", weights="random")
    assert by_name.backend == "eager" and "files" not in by_name.manifest
    for path in ("resnet18/", "./resnet18", tmp_path / "resnet18"):
        explainer = salrt.load(path)
        assert explainer.backend == "torchscript" and explainer.manifest["files"]["torchscript"]["file"] == "model.pt"
    result = salrt_cli("explain", "resnet18", photo_files["coffee"], "--weights", "random", "--out", "maps",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "note: 'resnet18' is a model name, so it runs eagerly; for the artifact directory, write 'resnet18/'" \
        in result.stderr


def test_explainer_describes_itself_like_an_inference_session(exported, random_inputs):
    explainer = salrt.load(exported("resnet18"))
    assert [io["name"] for io in explainer.inputs] == ["image", "target"]
    assert [io["name"] for io in explainer.outputs] == ["logits", "used_target", "saliency", "grad"]
    assert explainer.manifest["model"] == "resnet18" and explainer.backends == ("torchscript",)
    assert explainer.explain(random_inputs[0][:1]).backend == "torchscript"
    assert "torchscript" in repr(explainer)


def test_custom_module_exports_and_runs_but_has_no_eager_backend(tmp_path, random_inputs):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                 torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 1000))
    artifact = salrt.export(module, tmp_path / "custom", image_size=32)
    image = random_inputs[0][:2, :, :32, :32]
    result = salrt.load(artifact).explain(image, target=[3, -1])
    from conftest import assert_matches_reference
    assert_matches_reference((result.logits, result.target, result.saliency, result.grad), module.eval(), image,
                             torch.tensor([3, -1]))
    with pytest.raises(ArtifactError, match="exported from a custom module \\(Sequential\\); the eager backend"):
        salrt.load(artifact, backend="eager")
