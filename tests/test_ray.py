"""salrt on Ray Data: `salrt explain --ray` against a local run of the same images, and salrt.ray.Explain as a
map_batches stage on Ray's own readers. One local Ray instance (2 CPUs), started and stopped here."""
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import ray.data
import torch
from click.testing import CliRunner
from PIL import Image

import salrt
import salrt.ray
from salrt.cli import main
from salrt.dataset.index import COLUMNS
from salrt.dataset.journal import FILE_NAME as JOURNAL
from salrt.errors import InputError

PHOTOS = 20


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def artifact(exported):
    return exported("resnet18", formats=("onnx",), image_size=64)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, photos):
    """PHOTOS crops of the test photos (sizes and places vary) in two folders, a/ and b/, and b/bad.jpg."""
    root = tmp_path_factory.mktemp("ray-photos")
    pictures = list(photos.values())
    for i in range(PHOTOS):
        picture = pictures[i % len(pictures)]
        crop = picture[i * 7:i * 7 + 160 + i * 5, i * 11:i * 11 + 200]
        path = root / ("a" if i % 2 else "b") / f"photo{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(crop).save(path)
    (root / "b" / "bad.jpg").write_text("not a JPEG")
    return root


def explain_cli(*args):
    result = CliRunner().invoke(main, ["explain", *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.output


def files_under(directory: Path) -> dict[str, Path]:
    """The files a run wrote, less the index and a local run's journal (what --resume reads)."""
    return {str(path.relative_to(directory)): path for path in directory.rglob("*")
            if path.is_file() and "results.parquet" not in path.parts and path.name != JOURNAL}


def test_ray_gives_the_index_files_and_maps_of_a_local_run(tmp_path, tree, artifact, local_ray):
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        code, output = explain_cli(f"{artifact}/", tree, "--out", tmp_path / name, "--save", "png,npy,index",
                                   "--html", *extra)
        assert code == 2, output  # the bad file
        assert f"explained {PHOTOS} of {PHOTOS + 1}; 1 failed, see results.parquet" in output
        runs[name] = tmp_path / name
    local, remote = (pd.read_parquet(runs[name] / "results.parquet") for name in ("local", "ray"))
    assert (runs["ray"] / "results.parquet").is_dir()  # Ray Data's write_parquet: one file per block
    assert list(remote.columns) == list(COLUMNS) and len(remote) == PHOTOS + 1
    assert list(remote.path) == list(local.path)  # in input order
    assert remote.error.notna().sum() == 1 and "b/bad.jpg" in set(remote.path[remote.error.notna()])
    assert (remote.class_index.fillna(-1) == local.class_index.fillna(-1)).all()
    assert np.allclose(remote.probability.fillna(-1), local.probability.fillna(-1), atol=1e-6)
    assert [list(files) for files in remote.files] == [list(files) for files in local.files]

    local_files, ray_files = files_under(runs["local"]), files_under(runs["ray"])
    assert sorted(ray_files) == sorted(local_files)
    maps = [name for name in local_files if name.endswith("_saliency.npy")]
    assert len(maps) == PHOTOS
    for name in maps:
        ours, theirs = np.load(local_files[name]), np.load(ray_files[name])
        assert ours.max() > 0 and np.abs(ours.astype(np.float32) - theirs.astype(np.float32)).max() <= 1e-6, name
    assert "photo3.jpg" in (runs["ray"] / "index.html").read_text()


def test_a_second_ray_run_replaces_the_index_rather_than_adding_to_it(tmp_path, tree, artifact, local_ray):
    for _ in range(2):
        code, output = explain_cli(f"{artifact}/", tree / "a", "--out", tmp_path, "--save", "npy,index", "--ray",
                                   "--ray-concurrency", "1")
        assert code == 0, output
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == PHOTOS // 2


def actor_processes() -> list[int]:
    """The processes of salrt's Ray Data actors (Ray titles them ray::MapWorker(MapBatches(Explain)))."""
    found = []
    for process in Path("/proc").iterdir():
        try:
            if process.name.isdigit() and b"MapBatches(Explain)" in (process / "cmdline").read_bytes():
                found.append(int(process.name))
        except OSError:  # ended while listed
            pass
    return found


def test_an_actor_killed_mid_job_is_restarted_and_no_row_is_lost_or_doubled(tmp_path, tree, artifact, local_ray):
    out, killed = tmp_path / "ray", []

    def kill_an_actor_midway():
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            actors = actor_processes()
            if actors and len(list(out.rglob("*_saliency.npy"))) >= 4:
                os.kill(actors[0], signal.SIGKILL)
                killed.append(actors[0])
            time.sleep(0.005)
    killer = threading.Thread(target=kill_an_actor_midway)
    killer.start()
    code, output = explain_cli(f"{artifact}/", tree, "--out", out, "--save", "npy,index", "--ray",
                               "--ray-concurrency", "1", "--batch-size", "2")
    killer.join()
    assert killed, "no actor was killed: the job ended first"
    assert code == 2, output  # the bad file, and nothing else
    code, output = explain_cli(f"{artifact}/", tree, "--out", tmp_path / "local", "--save", "npy,index")
    remote, local = (pd.read_parquet(directory / "results.parquet") for directory in (out, tmp_path / "local"))
    assert list(remote.path) == list(local.path) and remote.path.is_unique
    assert (remote.class_index.fillna(-1) == local.class_index.fillna(-1)).all()
    assert sorted(files_under(out)) == sorted(files_under(tmp_path / "local"))


def test_the_stage_on_rays_readers_matches_the_explainer(tree, artifact, local_ray):
    explainer = salrt.load(artifact)
    good = sorted(str(path) for path in tree.rglob("photo*.jpg"))
    stage = {"fn_constructor_kwargs": {"source": str(artifact), "root": str(tree)}, "batch_size": 4,
             "compute": ray.data.ActorPoolStrategy(size=1)}
    decoded = ray.data.read_images(good, include_paths=True, mode="RGB").map_batches(salrt.ray.Explain, **stage)
    encoded = ray.data.read_binary_files(good, include_paths=True).map_batches(salrt.ray.Explain, **stage)
    for rows in (decoded.take_all(), encoded.take_all()):
        rows = sorted(rows, key=lambda row: row["path"])
        assert [row["path"] for row in rows] == [str(Path(p).relative_to(tree)) for p in good]
        expected = explainer.explain(good)
        assert [row["class_index"] for row in rows] == expected.target.tolist()
        maps = np.stack([row["saliency"] for row in rows]).astype(np.float32)
        assert maps.shape == (len(good), 64, 64) and (maps.reshape(len(good), -1).max(1) > 0).all()
        assert np.abs(maps - expected.saliency.to(torch.float16).float().numpy()).max() <= 1e-6
        assert all(row["error"] is None and row["backend"] == "onnxruntime" for row in rows)


def test_the_stage_takes_a_target_per_row_and_records_bad_bytes(artifact):
    stage = salrt.ray.Explain(str(artifact))  # a stage is a plain class: callable without Ray
    good = (artifact.parent / "probe.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(good)
    rows = stage({"bytes": np.array([good.read_bytes(), b"garbage", good.read_bytes()], dtype=object),
                  "path": np.array(["x/one.png", "x/two.png", "x/three.png"]), "target": np.array([3, 0, -1])})
    assert rows["class_index"][0] == 3 and rows["error"][0] is None
    assert rows["error"][1].startswith("x/two.png: not a readable image") and np.isnan(rows["saliency"][1]).all()
    assert rows["class_index"][2] == int(salrt.load(artifact).explain(good).target[0])


def test_what_cannot_work_on_ray_is_refused_before_anything_runs(tmp_path, tree, artifact):
    for extra, message in ((["--resume"], "--resume is for runs on this machine"),
                           (["--index-format", "csv"], "--index-format csv is for runs on this machine")):
        code, output = explain_cli(f"{artifact}/", tree, "--out", tmp_path / "out", "--ray", *extra)
        assert code == 1 and message in output, output
    code, output = explain_cli(f"{artifact}/", tree, "--out", tmp_path / "out", "--ray-num-gpus", "1")
    assert code == 1 and "--ray-concurrency and --ray-num-gpus go with --ray" in output
    code, output = explain_cli(f"{artifact}/", "--ray", tree, "--out", tmp_path / "out")  # the images as the address
    assert code == 2 and "put --ray after the images" in output, output
    code, output = explain_cli(tmp_path / "no-such-artifact", tree, "--out", tmp_path / "out", "--ray")
    assert code == 1 and "is neither an artifact directory nor a known model name" in output
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="needs a column of images"):
        salrt.ray.Explain(str(artifact))({"pixels": np.zeros(2)})
    for column in ("relative", "output_base"):
        with pytest.raises(InputError, match="would write outside out"):
            salrt.ray.Explain(str(artifact))({"path": np.array(["a.jpg"]), column: np.array(["../../etc/x"])})
    with pytest.raises(InputError, match="give out"):
        salrt.ray.Explain(str(artifact), save=["png"])


def test_an_error_in_the_actors_reaches_the_user_as_salrts_own(tmp_path, tree, artifact, local_ray):
    """The artifact holds ONNX only: each actor's salrt.load refuses torchscript, and the run says so in one
    line rather than as Ray's traceback."""
    code, output = explain_cli(f"{artifact}/", tree / "a", "--out", tmp_path, "--ray", "--backend", "torchscript")
    assert code == 1 and output.startswith("error: ") and "torchscript" in output, output


def test_gpus_the_cluster_lacks_are_refused_rather_than_waited_for(tmp_path, tree, artifact, local_ray):
    for extra in (["--ray-num-gpus", "1", "--ray-concurrency", "2"], ["--device", "cuda"]):
        code, output = explain_cli(f"{artifact}/", tree / "a", "--out", tmp_path, "--ray", *extra)
        assert code == 1 and "the Ray cluster has 0 GPUs and each actor asks for 1" in output, output
