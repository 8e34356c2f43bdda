"""`salrt explain` over a directory of full-resolution photos: memory flat in the number of images, and images/s
against in-process ``explain`` on tensors preprocessed beforehand, at the same batch size.

The photos are scikit-image's bundled ones (no downloads), cropped and flipped into distinct pictures, resized
to --size with a little sensor-like noise (so they compress and decode like camera JPEGs, ~3 MB each), and
hard-linked to as many file names as a run needs: every file is read and decoded in full, as any other.

    python benchmarks/bench_dataset.py                                   # every part; docs/ and README updated
    python benchmarks/bench_dataset.py --part throughput --models resnet18 --images 200    # one part
    python benchmarks/bench_dataset.py --part memory --checkpoints 200,2000    # 2,064 photos

Each part's rows replace the same rows in docs/bench-dataset.json; the README table is made from that file.
The artifacts are ONNX exports with random weights (224 px), run by onnxruntime, cached in .salrt-bench/.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import salrt
from salrt.bench import replace_readme_block
from salrt.bench.harness import cached_artifact
from salrt.dataset.journal import FILE_NAME as JOURNAL
from salrt.dataset.loading import default_workers
from salrt.explain import Options, explain_files
from salrt.models import load_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench-dataset.json"
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "colorwheel", "camera", "brick", "grass", "clock")
DISTINCT = 24  # distinct pictures; file names beyond that are hard links to them
BATCH = 8
# memory: images past the last checkpoint, so the DataLoader workers still run when it is read (they exit
# with the last batch, and their memory with them)
TAIL = 8 * BATCH
FULL, DRAFT = "full", "--jpeg-draft"  # how the rows' JPEGs were decoded


def distinct_photos(directory: Path, size: tuple[int, int]) -> list[Path]:
    """DISTINCT JPEGs of ``size``, made once: scikit-image photos, cropped and flipped, resized, with noise."""
    from skimage import data
    directory.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    paths = []
    for i in range(DISTINCT):
        path = directory / f"photo{i:02}.jpg"
        paths.append(path)
        if path.exists():
            continue
        photo = Image.fromarray(getattr(data, SOURCES[i % len(SOURCES)])()).convert("RGB")
        width, height = photo.size
        left, top = int(generator.integers(0, width // 8)), int(generator.integers(0, height // 8))
        photo = photo.crop((left, top, width - left // 2, height - top // 2))
        if i >= len(SOURCES):
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.asarray(photo.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(pixels + generator.normal(0, 4, pixels.shape).astype(np.int16), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, quality=90)
    return paths


def dataset(photos: list[Path], directory: Path, count: int) -> Path:
    """``directory`` holding exactly ``count`` files named img00000.jpg..., hard links to ``photos``."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in sorted(directory.iterdir())[count:]:
        stale.unlink()
    for i in range(count):
        link = directory / f"img{i:05}.jpg"
        if not link.exists():
            os.link(photos[i % len(photos)], link)
    return directory


def memory_mb() -> dict:
    """This process's resident set, and the proportional set (shared pages split, not double counted) of it
    plus its children: the DataLoader workers."""
    def pss(pid: int) -> float:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return 0.0
        return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")) / 1024

    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    rss = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    return {"rss_mb": rss, "pss_with_workers_mb": pss(os.getpid()) + sum(pss(int(c)) for c in children),
            "workers": len(children)}


class MemoryWatch:
    """Samples memory and the number of images the run has finished (its journal's rows) every 0.2 s; keeps
    the first sample at or past each checkpoint."""

    def __init__(self, out_dir: Path, checkpoints: list[int]):
        self.out_dir, self.checkpoints, self.at, self.peak = out_dir, checkpoints, {}, 0.0
        self.between: list[float] = []  # PSS with workers at every sample from the first checkpoint to the last
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *error):
        self._stop.set()
        self._thread.join()
        self._sample()  # the end of the run: every image done

    def _done(self) -> int:
        try:
            with sqlite3.connect(self.out_dir / JOURNAL, timeout=0.05) as journal:
                return journal.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
        except sqlite3.Error:
            return -1

    def _sample(self) -> None:
        done = self._done()
        memory = memory_mb()
        self.peak = max(self.peak, memory["pss_with_workers_mb"])
        if self.checkpoints and self.checkpoints[0] <= done <= self.checkpoints[-1] and memory["workers"]:
            self.between.append(memory["pss_with_workers_mb"])
        for checkpoint in self.checkpoints:
            if done >= checkpoint and checkpoint not in self.at:
                self.at[checkpoint] = {"images_done": done, **memory}

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()


def pipeline(artifact: Path, images: Path, save: tuple[str, ...], checkpoints: list[int] = (),
             jpeg_draft: bool = False) -> dict:
    """``salrt explain ARTIFACT DIR --save ... [--jpeg-draft]`` in this process: images/s over the whole call
    (model load and the workers' start included) and, with ``checkpoints``, the memory at each. Only then is
    memory sampled: reading /proc/PID/smaps_rollup of a 1.4 GB process costs ~27 ms, so sampling it every 0.2 s
    takes 13% of a core from the run it measures."""
    with tempfile.TemporaryDirectory(dir=ROOT / ".salrt-bench") as out:
        out = Path(out)
        watch = MemoryWatch(out, list(checkpoints)) if checkpoints else contextlib.nullcontext()
        started = time.perf_counter()
        with watch:
            summary = explain_files(str(artifact), [images], out, Options(save=save, batch_size=BATCH,
                                                                          backend="onnxruntime", jpeg_draft=jpeg_draft))
        seconds = time.perf_counter() - started
    assert summary.failed == 0 and summary.explained == summary.total, summary
    run = {"images": summary.total, "seconds": seconds, "images_per_s": summary.total / seconds}
    if checkpoints:
        run.update(memory={str(k): v for k, v in watch.at.items()}, peak_pss_mb=watch.peak,
                   pss_between_mb=[min(watch.between), max(watch.between)] if watch.between else None)
    return run


def in_process(artifact: Path, photos: list[Path], seconds: float = 15.0) -> float:
    """images/s of ``Explainer.explain`` on one batch of BATCH photos preprocessed beforehand, for ~seconds."""
    explainer = salrt.load(artifact, backend="onnxruntime")
    batch = explainer.preprocess(photos[:BATCH])
    explainer.explain(batch)  # warm-up
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        explainer.explain(batch)
        calls += 1
    return calls * BATCH / (time.perf_counter() - started)


def artifact_for(model: str) -> Path:
    return cached_artifact(load_model(model, "random"), ["onnx"], ROOT / ".salrt-bench", print)


def throughput(model: str, photos: list[Path], images: Path, save: tuple[str, ...], jpeg_draft: bool) -> dict:
    """The pipeline between two in-process measurements (this machine is shared: the mean of both is the
    reference the pipeline ran next to)."""
    artifact = artifact_for(model)
    before = in_process(artifact, photos)
    run = pipeline(artifact, images, save, jpeg_draft=jpeg_draft)
    after = in_process(artifact, photos)
    reference = statistics.mean([before, after])
    print(f"{model}: in-process {before:.2f} / {after:.2f} img/s, pipeline {run['images_per_s']:.2f} img/s "
          f"({run['images_per_s'] / reference:.0%})", flush=True)
    return {"part": "throughput", "model": model, "save": ",".join(save), "images": run["images"],
            "decode": DRAFT if jpeg_draft else FULL,
            "in_process_images_per_s": [before, after], "pipeline_images_per_s": run["images_per_s"],
            "ratio": run["images_per_s"] / reference}


def memory(model: str, images: Path, checkpoints: list[int]) -> dict:
    run = pipeline(artifact_for(model), images, ("index",), checkpoints)
    first, last = (run["memory"][str(c)] for c in (checkpoints[0], checkpoints[-1]))
    print(f"{model}: after {first['images_done']} images {first['pss_with_workers_mb']:.0f} MB, after "
          f"{last['images_done']} {last['pss_with_workers_mb']:.0f} MB (PSS with workers; main RSS "
          f"{first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB), {run['images_per_s']:.2f} img/s", flush=True)
    return {"part": "memory", "model": model, "save": "index", "images": run["images"], "checkpoints": run["memory"],
            "growth_mb": last["pss_with_workers_mb"] - first["pss_with_workers_mb"],
            "rss_growth_mb": last["rss_mb"] - first["rss_mb"], "peak_pss_mb": run["peak_pss_mb"],
            "pss_between_mb": run["pss_between_mb"],
            "pipeline_images_per_s": run["images_per_s"]}


def merged(rows: list[dict]) -> dict:
    """docs/bench-dataset.json with ``rows`` replacing the rows of the same part, model, size and save."""
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    key = lambda row: (row["part"], row["model"], row["size"], row["save"], row.get("decode", FULL))  # noqa: E731
    fresh = {key(row) for row in rows}
    report["rows"] = [row for row in report["rows"] if key(row) not in fresh] + rows
    report.update(cores=len(os.sched_getaffinity(0)), workers=default_workers(), batch=BATCH,
                  torch=torch.__version__)
    return report


def readme_table(report: dict) -> str:
    lines = [f"Generated by `python benchmarks/bench_dataset.py` (results kept in docs/bench-dataset.json): "
             f"{report['cores']} CPU cores shared by the model (onnxruntime, random weights, 224 px, batch "
             f"{report['batch']}) and {report['workers']} DataLoader workers (at the lowest priority) decoding JPEGs "
             f"of the size shown; the pipeline's onnxruntime session sleeps between operators "
             f"(`spin_wait=False`), the in-process reference's spins (`salrt.load`'s default).", "",
             "| part | model | photos | decode | images | --save | result |", "|---|---|---|---|---|---|---|"]
    for row in sorted(report["rows"], key=lambda r: (r["part"], r["model"], r["size"], r["save"],
                                                     r.get("decode", FULL))):
        if row["part"] == "memory":
            points = [row["checkpoints"][c] for c in sorted(row["checkpoints"], key=int)]
            result = (f"PSS of the process and its {points[-1]['workers']} workers "
                      f"{points[0]['pss_with_workers_mb']:.0f} MB after {points[0]['images_done']:,} images, "
                      f"{points[-1]['pss_with_workers_mb']:.0f} MB after {points[-1]['images_done']:,}: "
                      f"**{row['growth_mb']:+.0f} MB** (main process RSS {points[0]['rss_mb']:.0f} -> "
                      f"{points[-1]['rss_mb']:.0f} MB: {row['rss_growth_mb']:+.0f} MB); in between, every 0.2 s, "
                      f"{row['pss_between_mb'][0]:.0f}-{row['pss_between_mb'][1]:.0f} MB; "
                      f"{row['pipeline_images_per_s']:.2f} img/s")
        else:
            before, after = row["in_process_images_per_s"]
            result = (f"{row['pipeline_images_per_s']:.2f} img/s vs {before:.2f} / {after:.2f} in-process on "
                      f"preprocessed tensors (before / after): **{row['ratio']:.0%}**")
        lines.append(f"| {row['part']} | {row['model']} | {row['size']} | {row.get('decode', FULL)} | "
                     f"{row['images']:,} | {row['save']} | "
                     f"{result} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("throughput", "memory", "all"), default="all")
    parser.add_argument("--models", default="resnet18,resnet50", help="throughput: the models to time")
    parser.add_argument("--memory-model", default="resnet18")
    parser.add_argument("--images", type=int, default=None,
                        help="images per run [default: 200 for throughput, the last checkpoint + 64 for memory]")
    parser.add_argument("--checkpoints", default="200,2000", help="memory: image counts to read memory at")
    parser.add_argument("--size", default="4000x3000", help="the photos' WIDTHxHEIGHT")
    parser.add_argument("--save", default="index", help="throughput: salrt explain's --save")
    parser.add_argument("--jpeg-draft", action="store_true", help="throughput: salrt explain --jpeg-draft")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    size = tuple(int(n) for n in args.size.split("x"))
    cache = ROOT / ".salrt-bench"
    photos = distinct_photos(cache / f"photos-{args.size}", size)
    save = tuple(args.save.split(","))
    rows = []
    if args.part in ("throughput", "all"):
        images = dataset(photos, cache / f"dataset-{args.size}", args.images or 200)
        rows += [throughput(model, photos, images, save, args.jpeg_draft) for model in args.models.split(",")]
    if args.part in ("memory", "all"):
        checkpoints = [int(n) for n in args.checkpoints.split(",")]
        count = args.images or checkpoints[-1] + TAIL
        images = dataset(photos, cache / f"dataset-{args.size}", count)
        rows.append(memory(args.memory_model, images, [c for c in checkpoints if c + TAIL <= count]))
    report = merged([{**row, "size": args.size} for row in rows])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(readme_table(report))
    if not args.no_readme:
        replace_readme_block(ROOT / "README.md", "dataset-bench", readme_table(report))


if __name__ == "__main__":
    main()
