"""`salrt explain` on whole datasets: directories, globs and lists in; mirrored maps, arrays, an index and a
gallery out; bad files recorded, killed runs resumed. Real processes and files; the gallery in a real browser."""
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import salrt
from salrt.dataset import gallery
from salrt.dataset.index import COLUMNS, require_pyarrow
from salrt.dataset.journal import FILE_NAME as JOURNAL
from salrt.dataset.outputs import TEMPORARY_PREFIX
from salrt.errors import InputError
from salrt.explain import Options, explain_files

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def salrt_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "salrt.cli", *map(str, args)], capture_output=True, text=True,
                          input=stdin)


@pytest.fixture(scope="module")
def artifact(exported):
    return exported("resnet18", formats=("onnx",), image_size=64)


@pytest.fixture
def tree(tmp_path, photos):
    """photos/a/cat.jpg, a/cat.png and b/cat.jpg (one name three times), b/c/astronaut.jpg, b/bad.jpg (text),
    notes.txt (not an image)."""
    root = tmp_path / "photos"
    for name, photo in (("a/cat.jpg", "chelsea"), ("a/cat.png", "chelsea"), ("b/cat.jpg", "coffee"),
                        ("b/c/astronaut.jpg", "astronaut")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photos[photo]).save(root / name)
    (root / "b" / "bad.jpg").write_text("not a JPEG")
    (root / "notes.txt").write_text("not an image either")
    return root


def read_index(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_a_directory_mirrors_its_tree_and_records_a_bad_file(tmp_path, tree, artifact):
    out = tmp_path / "maps"
    result = salrt_cli("explain", artifact, tree, "--out", out, "--save", "png,npy,grad,index", "--batch-size", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].endswith("explained 4 of 5; 1 failed, see results.parquet")
    rows = read_index(out / "results.parquet")
    assert list(rows[0]) == list(COLUMNS)
    assert [row["path"] for row in rows] == ["a/cat.jpg", "a/cat.png", "b/bad.jpg", "b/c/astronaut.jpg", "b/cat.jpg"]
    bad = rows[2]
    assert "b/bad.jpg: not a readable image" in bad["error"] and bad["files"] == [] and bad["class_index"] is None

    explainer = salrt.load(artifact)
    for row in (r for r in rows if r["error"] is None):
        source = tree / row["path"]
        expected = explainer.explain(explainer.preprocess(source))  # the pipeline must preprocess as this does
        assert row["files"] == [f"{row['path']}_{kind}" for kind in
                                ("saliency.png", "overlay.png", "saliency.npy", "grad.npy")]
        assert all((out / name).is_file() for name in row["files"])
        with Image.open(source) as image:
            assert (row["width"], row["height"]) == image.size
        assert row["class_index"] == int(expected.target[0]) and row["backend"] == "onnxruntime"
        assert row["class_name"] == explainer.categories[row["class_index"]]
        assert [(t["index"], t["name"]) for t in row["top5"]] == [(i, n) for i, n, _ in expected.top(5)[0]]
        assert row["probability"] == pytest.approx(expected.top(1)[0][0][2], rel=1e-5)
        saliency = np.load(out / f"{row['path']}_saliency.npy")
        assert saliency.dtype == np.float16 and saliency.shape == (64, 64)
        np.testing.assert_allclose(saliency, expected.saliency[0].numpy(), atol=1e-3)
        grad = np.load(out / f"{row['path']}_grad.npy")
        assert grad.dtype == np.float32 and grad.shape == (3, 64, 64)
        np.testing.assert_allclose(grad, expected.grad[0].numpy(), rtol=1e-4, atol=1e-7)
    assert not list(out.rglob(f"{TEMPORARY_PREFIX}*"))


def test_files_named_one_by_one_keep_flat_names_unless_two_would_collide(tmp_path, tree, artifact):
    out = tmp_path / "maps"
    result = salrt_cli("explain", artifact, tree / "a/cat.jpg", tree / "b/cat.jpg", "--out", out)
    assert result.returncode == 1 and result.stderr.startswith(
        f"error: {tree / 'a/cat.jpg'} and {tree / 'b/cat.jpg'} would both write cat_saliency.png"), result.stderr
    for refused, message in (([tree / "a/cat.jpg", tree / "a/cat.png"], "would both write cat_saliency.png"),
                             ([tree / "a/cat.jpg", tree / "a/../a/cat.jpg"], "is given twice"),
                             ([tree, tree / "a/cat.jpg"], "is given twice"),
                             ([f"{tree}/*.gif"], "the pattern matches no image files"),
                             ([tree / "a/nope.jpg"], "a/nope.jpg: no such file")):
        with pytest.raises(InputError, match=message):
            explain_files(str(artifact), refused, out)
    assert not out.exists(), "a refused run writes nothing"

    result = salrt_cli("explain", artifact, tree / "a/cat.jpg", tree / "b/c/astronaut.jpg", "--out", out,
                       "--save", "png,npy")
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["cat.jpg", "astronaut.jpg"]
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL, "astronaut_overlay.png", "astronaut_saliency.npy",
                                                     "astronaut_saliency.png", "cat_overlay.png",
                                                     "cat_saliency.npy", "cat_saliency.png"]


def test_globs_and_lists_from_stdin_with_a_csv_index(tmp_path, tree, artifact):
    out = tmp_path / "globbed"
    result = salrt_cli("explain", artifact, f"{tree}/**/*.jpg", "--out", out, "--save", "index",
                       "--index-format", "csv")
    assert result.returncode == 2, result.stderr
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert [line.split(",")[0] for line in lines[1:]] == ["a/cat.jpg", "b/bad.jpg", "b/c/astronaut.jpg", "b/cat.jpg"]

    listed = f"{tree / 'b/cat.jpg'}\n\n{tree / 'a/cat.png'}\n"  # blank lines are skipped
    result = salrt_cli("explain", artifact, "--list", "-", "--out", tmp_path / "listed", stdin=listed)
    assert result.returncode == 0, result.stderr
    assert [row["path"] for row in read_index(tmp_path / "listed" / "results.parquet")] == ["b/cat.jpg", "a/cat.png"]
    assert (tmp_path / "listed" / "b" / "cat.jpg_overlay.png").is_file()


def test_on_error_fail_refuses_a_directory_with_a_bad_file_before_writing(tmp_path, tree, artifact):
    out = tmp_path / "maps"
    with pytest.raises(InputError, match="b/bad.jpg: not a readable image"):
        explain_files(str(artifact), [tree], out, Options(on_error="fail", batch_size=2, workers=1))
    assert not out.exists()


def probabilities(row: dict) -> list[float]:
    return [] if row["error"] else [row["probability"]] + [top["probability"] for top in row["top5"]]


@pytest.fixture
def crops(tmp_path, photos) -> Path:
    """48 distinct crops of the three photos in two folders, and part0/broken.jpg (a truncated JPEG)."""
    dataset = tmp_path / "many"
    generator = np.random.default_rng(0)
    for i in range(48):
        photo = list(photos.values())[i % 3]
        top, left = generator.integers(0, 150, size=2)
        (dataset / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top:top + 120, left:left + 160]).save(dataset / f"part{i % 2}" / f"{i:02}.jpg")
    (dataset / "part0" / "broken.jpg").write_bytes((dataset / "part0" / "00.jpg").read_bytes()[:300])
    return dataset


def test_resume_after_sigkill_ends_with_the_index_of_an_uninterrupted_run(tmp_path, photos, crops, artifact):
    dataset = crops
    command = [sys.executable, "-m", "salrt.cli", "explain", str(artifact), str(dataset), "--batch-size", "2",
               "--workers", "1"]

    killed = tmp_path / "killed"
    run = subprocess.Popen(command + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while run.poll() is None and len(list(killed.rglob("*_overlay.png"))) < 10:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "results.parquet").exists()
    for png in killed.rglob("*.png"):  # whatever the kill left is whole: temporary files aside, every PNG reads
        if not png.name.startswith(TEMPORARY_PREFIX):
            with Image.open(png) as image:
                image.load()
    with sqlite3.connect(killed / JOURNAL) as journal:
        done = journal.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    assert 0 < done < 49

    resumed = subprocess.run(command + ["--out", str(killed), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 2, resumed.stderr
    summary = resumed.stderr.splitlines()[-1]
    assert summary.startswith("explained 48 of 49 (") and "by an earlier run); 1 failed" in summary, summary
    assert int(summary.split("(")[1].split()[0]) >= done - 1  # every committed row but the failed one was kept
    assert not list(killed.rglob(f"{TEMPORARY_PREFIX}*"))

    whole = subprocess.run(command + ["--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert whole.returncode == 2, whole.stderr
    resumed_rows, whole_rows = read_index(killed / "results.parquet"), read_index(tmp_path / "whole" / "results.parquet")
    assert [row["path"] for row in resumed_rows] == [row["path"] for row in whole_rows]
    for a, b in zip(resumed_rows, whole_rows):
        # batches of the resumed run hold other images: float results agree to rounding, everything else exactly
        assert probabilities(a) == pytest.approx(probabilities(b), rel=1e-4, abs=1e-7)
        assert {k: v for k, v in a.items() if k not in ("probability", "top5")} == \
            {k: v for k, v in b.items() if k not in ("probability", "top5")}
    assert sorted(p.relative_to(killed) for p in killed.rglob("*")) == \
        sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*"))

    # a resumed run re-explains an input that changed since, and keeps the others
    Image.fromarray(photos["coffee"][:100, :100]).save(dataset / "part1" / "01.jpg")
    again = subprocess.run(command + ["--out", str(killed), "--resume"], capture_output=True, text=True)
    assert "explained 48 of 49 (47 by an earlier run); 1 failed" in again.stderr.splitlines()[-1], again.stderr
    changed = next(row for row in read_index(killed / "results.parquet") if row["path"] == "part1/01.jpg")
    assert (changed["width"], changed["height"]) == (100, 100)


def chromium(*args, timeout=60) -> subprocess.CompletedProcess:
    """Debian's chromium, headless, with a profile of its own (`make test` installs it)."""
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make browser` (part of `make test`) installs it"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)


def shown_files(dom: str) -> list[str]:
    return [part.split("<")[0] for part in dom.split('<div class="file">')[1:]]


def test_html_gallery_in_a_headless_browser(tmp_path, tree, artifact):
    out = tmp_path / "maps"
    result = salrt_cli("explain", artifact, tree, "--out", out, "--html")
    assert result.returncode == 2, result.stderr
    page = (out / "index.html").as_uri()
    dom = chromium("--dump-dom", page).stdout
    assert '<span id="count">5 of 5 images</span>' in dom
    assert dom.count('loading="lazy"') == 4 and "(failed)" in dom
    assert shown_files(dom) == ["a/cat.jpg", "a/cat.png", "b/bad.jpg", "b/c/astronaut.jpg", "b/cat.jpg"]
    screenshot = tmp_path / "gallery.png"
    chromium("--window-size=1000,700", f"--screenshot={screenshot}", page)
    with Image.open(screenshot) as image:  # the overlays were drawn: the page is not a blank sheet
        assert image.size == (1000, 700) and np.asarray(image.convert("L")).std() > 20

    # 10,000 rows (the overlays repeat): the filter and the order, each from the URL, and the time to open it
    rows = read_index(out / "results.parquet")
    good = [row for row in rows if row["error"] is None]
    classes = ["tabby", "tiger cat", "espresso", "astronaut's suit"]
    many = [{**good[i % len(good)], "path": f"img/{i:05}.jpg", "class_name": classes[i % 4],
             "probability": ((i * 7919) % 10000) / 10000} for i in range(10_000)]
    gallery.write_gallery(many, out, title="ten thousand")
    started = time.perf_counter()
    dom = chromium("--dump-dom", page + "#class=tiger+cat&sort=probability-desc").stdout
    opened = time.perf_counter() - started
    assert '<span id="count">2500 of 10000 images</span>' in dom
    files = shown_files(dom)
    assert len(files) == 2500 and all(int(name[4:9]) % 4 == 1 for name in files)
    probabilities = [float(p) for p in
                     [part.split("</div>")[0].rsplit(" ", 1)[1] for part in dom.split('<div class="class">')[1:]]]
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > probabilities[-1]
    assert opened < 20, f"the 10,000-row page took {opened:.1f} s to open and lay out"


def test_index_refuses_to_start_without_pyarrow(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(InputError, match=r"results.parquet needs pyarrow \(a dependency of salrt\): pip install pyarrow==21.0.0"):
        require_pyarrow()


def test_options_that_cannot_work_are_refused_before_anything_runs(tmp_path, tree, artifact):
    from salrt.explain import parse_save
    assert parse_save("png, npy,png") == ("png", "npy")
    with pytest.raises(InputError, match="--save takes a comma-separated choice of png, npy, grad, index"):
        parse_save("png,jpeg")
    out = tmp_path / "maps"
    for options, message in ((Options(html=True, save=("npy",)), "--html shows the overlays: add png to --save"),
                             (Options(server="localhost:1", save=("grad",)), "--save grad needs the attribution"),
                             (Options(batch_size=0), "--batch-size must be at least 1"),
                             (Options(server="localhost:1", jpeg_draft=True), "with --server the server decodes")):
        with pytest.raises(InputError, match=message):
            explain_files(str(artifact), [tree], out, options)
    assert not out.exists()


def test_jpeg_draft_decodes_reduced_but_records_the_files_size_and_keeps_the_map(tmp_path, photos, artifact):
    """--jpeg-draft: a 2400x1800 JPEG is decoded at 1/8 (300x225 still holds twice the short side of 73 px the
    64 px model resizes to); a PNG in full. The index keeps the file's size; the map stays close to the exact one."""
    from salrt.images import decode_reduced, needed_size
    big = Image.fromarray(photos["astronaut"]).resize((2400, 1800), Image.BICUBIC)
    root = tmp_path / "big"
    root.mkdir()
    big.save(root / "photo.jpg", quality=92)
    big.save(root / "photo.png")
    preprocessing = salrt.load(artifact).preprocessing
    with open(root / "photo.jpg", "rb") as file:
        reduced, size = decode_reduced(file, "photo.jpg", at_least=needed_size(preprocessing))
    assert size == (2400, 1800) and reduced.size == (300, 225)
    with open(root / "photo.png", "rb") as file:
        assert decode_reduced(file, "photo.png", at_least=needed_size(preprocessing))[0].size == (2400, 1800)

    maps, rows = {}, {}
    for draft in (False, True):
        out = tmp_path / f"draft-{draft}"
        explain_files(str(artifact), [root], out, Options(save=("npy", "index"), jpeg_draft=draft))
        rows[draft] = read_index(out / "results.parquet")
        maps[draft] = {name: np.load(out / f"{name}_saliency.npy").astype(np.float32) for name in ("photo.jpg", "photo.png")}
    assert [(row["width"], row["height"]) for row in rows[True]] == [(2400, 1800)] * 2  # the file's, not the draft's
    assert np.array_equal(maps[True]["photo.png"], maps[False]["photo.png"])  # not a JPEG: decoded in full
    exact, drafted = maps[False]["photo.jpg"].ravel(), maps[True]["photo.jpg"].ravel()
    assert not np.array_equal(exact, drafted) and drafted.max() > 0
    assert np.corrcoef(exact, drafted)[0, 1] > 0.9


class _WorkerSettings(torch.utils.data.Dataset):
    """What each DataLoader worker reports of its own scheduling priority and Pillow's block cache."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        from salrt.dataset.loading import Loaded
        return Loaded(i, size=(os.nice(0), os.getpid()), stat=(Image.core.get_blocks_max(), 0))


def _spinning(options) -> str:
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: onnxruntime's default, spinning
        return "default"


def test_decoding_workers_yield_to_the_model_which_does_not_spin_beside_them(tmp_path, photos, artifact,
                                                                             monkeypatch):
    """The pipeline's settings where they take effect: every DataLoader worker runs at the lowest priority and
    keeps Pillow's freed image blocks (the main process keeps its own settings), and the onnxruntime session of
    a run with workers sleeps between operators, while ``salrt.load``'s default (a lone call) keeps spinning."""
    from salrt.dataset.loading import PILLOW_BLOCKS_KEPT, WORKER_NICENESS, batches
    loaded = [item for batch in batches(_WorkerSettings(), batch_size=1, workers=2) for item in batch.loaded]
    assert {item.size[0] for item in loaded} == {min(19, os.nice(0) + WORKER_NICENESS)}
    assert {item.stat[0] for item in loaded} == {PILLOW_BLOCKS_KEPT} != {Image.core.get_blocks_max()}
    assert os.getpid() not in {item.size[1] for item in loaded} and os.nice(0) < 19

    import onnxruntime
    sessions, real = [], onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession",
                        lambda path, options, **kwargs: sessions.append(_spinning(options)) or real(path, options, **kwargs))
    root = tmp_path / "many"
    root.mkdir()
    for i in range(10):  # more than a batch: workers start
        Image.fromarray(photos["chelsea"][i:]).save(root / f"{i}.jpg")
    summary = explain_files(str(artifact), [root], tmp_path / "out", Options(save=("index",), workers=2))
    assert summary.explained == 10 and sessions == ["0"]
    salrt.load(artifact, backend="onnxruntime")
    assert sessions == ["0", "default"]


def journal_rows(out: Path) -> dict[str, dict]:
    """{input: {output file: [bytes, mtime_ns]}} as the journal in ``out`` records them."""
    with sqlite3.connect(out / JOURNAL) as db:
        return {path: json.loads(outputs) for path, outputs in db.execute("SELECT path, outputs FROM rows")}


def assert_whole(out: Path) -> int:
    """Every file the journal in ``out`` records is there, as written, and no temporary is left; returns the rows."""
    rows = journal_rows(out)
    for outputs in rows.values():
        for name, (size, mtime_ns) in outputs.items():
            stat = (out / name).stat()
            assert (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns), name
    assert not list(out.rglob(f"{TEMPORARY_PREFIX}*"))
    return len(rows)


def test_a_new_run_replaces_what_an_earlier_run_wrote_in_its_out_and_nothing_else(tmp_path, tree, artifact):
    out = tmp_path / "maps"
    first = explain_files(str(artifact), [tree], out, Options(batch_size=2, workers=0, html=True))
    assert first.explained == 4
    written = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert Path("index.html") in written and Path("b/c/astronaut.jpg_overlay.png") in written

    outside = tmp_path / "not-salrts.txt"  # a damaged journal naming a file outside --out deletes nothing there
    outside.write_text("keep")
    (out / "notes.txt").write_text("keep")  # nor does a file of the user's inside it
    with sqlite3.connect(out / JOURNAL) as db:
        db.execute("UPDATE rows SET outputs = ? WHERE path = 'b/bad.jpg'", (json.dumps({"../not-salrts.txt": [4, 0]}),))

    result = salrt_cli("explain", artifact, tree / "a/cat.jpg", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"replacing the earlier run in {out} (5 images, results.parquet, index.html); --resume would continue " \
           f"it" in result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        JOURNAL, "cat_overlay.png", "cat_saliency.png", "notes.txt", "results.parquet"]  # no stale tree, no gallery
    assert outside.read_text() == "keep"
    assert [row["path"] for row in read_index(out / "results.parquet")] == ["cat.jpg"]

    resumed = salrt_cli("explain", artifact, tree / "a/cat.jpg", "--out", out, "--resume", "--save", "png")
    assert "replacing" not in resumed.stderr and resumed.returncode == 0
    assert not (out / "results.parquet").exists(), "the index is this run's or none"


def test_sigterm_and_ctrl_c_stop_at_a_batch_boundary_and_resume(tmp_path, crops, artifact):
    out = tmp_path / "stopped"
    command = [sys.executable, "-m", "salrt.cli", "explain", str(artifact), str(crops), "--batch-size", "2",
               "--workers", "1", "--out", str(out)]

    def stop_midway(*signals, once: int, extra=()) -> subprocess.CompletedProcess:
        """Sends ``signals`` once ``once`` overlays are written."""
        run = subprocess.Popen(command + list(extra), stderr=subprocess.PIPE, text=True)
        while run.poll() is None and len(list(out.rglob("*_overlay.png"))) < once:
            time.sleep(0.01)
        for number in signals:
            run.send_signal(number)
            time.sleep(0.02)
        _, stderr = run.communicate(timeout=120)
        return subprocess.CompletedProcess(run.args, run.returncode, "", stderr)

    # SIGTERM (a service manager stopping the job): the batch in hand is finished and committed
    stopped = stop_midway(signal.SIGTERM, once=10)
    assert stopped.returncode == 143, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    done = assert_whole(out)
    assert last == (f"interrupted: SIGTERM: {done} of 49 images done and kept; rerun the same command with --resume "
                    f"to finish"), stopped.stderr
    assert 10 <= done < 49 and not (out / "results.parquet").exists()

    # Ctrl-C twice: stops at once, with nothing half-written
    stopped = stop_midway(signal.SIGINT, signal.SIGINT, once=done + 6, extra=["--resume"])
    assert stopped.returncode == 130, stopped.stderr
    # at once, or gracefully where the first signal's stop was done before the second came
    assert re.fullmatch(r"interrupted: (stopped at once by SIGINT;|SIGINT:) \d+ of 49 images done and kept; rerun "
                        r"the same command with --resume to finish", stopped.stderr.strip().splitlines()[-1])
    assert "Traceback" not in stopped.stderr, stopped.stderr
    done_twice = assert_whole(out)
    assert done <= done_twice < 49

    finished = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert finished.returncode == 2, finished.stderr  # broken.jpg
    resumed = int(re.search(r"explained 48 of 49 \((\d+) by an earlier run\)", finished.stderr)[1])
    assert resumed in (done_twice - 1, done_twice), finished.stderr  # all but broken.jpg's row, if it was done
    assert len(read_index(out / "results.parquet")) == 49 and assert_whole(out) == 49


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MiB tmpfs mounted for the test (mounting needs root, or CAP_SYS_ADMIN)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_stops_with_one_line_and_resume_completes_the_index(tmp_path, crops, artifact, small_disk):
    out = small_disk / "maps"
    command = [sys.executable, "-m", "salrt.cli", "explain", str(artifact), str(crops), "--batch-size", "2",
               "--workers", "1", "--save", "png,npy,grad,index"]
    full = subprocess.run(command + ["--out", str(out)], capture_output=True, text=True)
    assert full.returncode == 1, full.stderr
    line = full.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: cannot write {out}/\S+: (No space left on device|database or disk is full) "
                        rf"\(\d+ KiB left on its file system\); \d+ of 49 images done and kept; rerun the same "
                        rf"command with --resume to finish", line), full.stderr
    done = assert_whole(out)
    assert 0 < done < 49 and not (out / "results.parquet").exists()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    resumed = subprocess.run(command + ["--out", str(out), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 2, resumed.stderr
    whole = subprocess.run(command + ["--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert whole.returncode == 2, whole.stderr
    resumed_rows, whole_rows = read_index(out / "results.parquet"), read_index(tmp_path / "whole" / "results.parquet")
    assert [(row["path"], row["class_index"], row["files"]) for row in resumed_rows] == \
        [(row["path"], row["class_index"], row["files"]) for row in whole_rows]
    assert assert_whole(out) == 49
