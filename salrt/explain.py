"""Explain image files, directories and lists of them, and write maps, arrays, an index and a gallery: the
work behind ``salrt explain``.

The pipeline: the inputs are collected and their output names checked (``dataset.inputs``); DataLoader
workers decode and preprocess them a few batches ahead (``dataset.loading``); the main thread runs the
model; one writer thread writes each batch's files and then its rows (``dataset.journal``) while the model
runs the next batch. At the end the index and the gallery are written from the journal.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import signal
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from PIL import Image
from tqdm import tqdm

from .dataset import DEFAULT_SAVE, ON_ERROR, SAVE_CHOICES, earlier, gallery, index
from .dataset.inputs import InputSet, collect
from .dataset.journal import Journal
from .dataset.loading import Batch, ImageFiles, Loaded, batches, default_workers
from .dataset.outputs import remove_leftover_temporaries, save_npy, save_png
from .dataset.stopping import StopOnSignals
from .errors import InputError, Interrupted, OutputError
from .images import region_mask
from .formats import AUTO
from .graph import Method
from .models import Preprocessing
from .render import beside, boxed, heatmap, outlined, overlay, segmentation
from .runtime import Explanation, load

WRITES_AHEAD = 2  # batches whose files may wait for the writer thread while the model runs


@dataclasses.dataclass
class Options:
    """How ``explain_files`` runs; the defaults are ``salrt explain``'s."""
    target: Union[None, int, str] = None  # an index or a class name
    region: Optional[Path] = None       # segmentation: a mask image (pixels above 0), the same for every image
    region_dir: Optional[Path] = None   # segmentation: a mask per image, mirroring the input tree (``mask_path``)
    box: Optional[Sequence[float]] = None  # detection: x0, y0, x1, y1 in input pixels, the same for every image
    top_detections: Optional[int] = None  # detection: explain each image's K most probable detections, a map each
    backend: str = AUTO
    device: str = "cpu"
    cuda_graphs: bool = False           # replay CUDA graphs per batch size (salrt.load's cuda_graphs)
    weights: str = "default"
    batch_size: int = 8
    server: Optional[str] = None        # host:port of `salrt serve`: the model's name is then the source
    method: Optional[Method] = None
    dtype: Optional[str] = None         # a model source: fp32 (default), bf16, fp16; an artifact: its own
    save: Sequence[str] = DEFAULT_SAVE  # of SAVE_CHOICES
    index_format: str = "parquet"       # or csv
    on_error: Optional[str] = None      # fail | continue; default: fail for files named one by one
    resume: bool = False                # continue the earlier run in --out; without it, that run is replaced
    html: bool = False
    workers: Optional[int] = None       # loading processes; default: one per core, at most 8
    jpeg_draft: bool = False            # decode JPEGs reduced to what the model's resize needs (faster, not exact)
    model_options: dict = dataclasses.field(default_factory=dict)  # for a model source: salrt.load's
    ray: Optional[str] = None           # run on Ray Data: dataset.RAY_AUTO or a cluster's address
    ray_concurrency: Optional[int] = None  # Ray actors; default: as many as the cluster's CPUs (GPUs) allow
    ray_num_gpus: Optional[float] = None   # GPUs per actor; default 1 with device cuda, else 0


@dataclasses.dataclass
class Summary:
    total: int
    explained: int      # this run and, with --resume, earlier runs
    failed: int
    resumed: int        # finished by an earlier run
    index: Optional[Path]
    gallery: Optional[Path]

    def line(self) -> str:
        """e.g. ``explained 9,998 of 10,000; 2 failed, see results.parquet``."""
        text = f"explained {self.explained:,} of {self.total:,}"
        if self.resumed:
            text += f" ({self.resumed:,} by an earlier run)"
        if self.failed:
            return text + f"; {self.failed:,} failed, see " + (self.index.name if self.index else "the errors above")
        written = [str(path) for path in (self.index, self.gallery) if path]
        return text + (f"; wrote {', '.join(written)}" if written else "")


def parse_save(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in chosen if part not in SAVE_CHOICES]
    if unknown or not chosen:
        raise InputError(f"--save takes a comma-separated choice of {', '.join(SAVE_CHOICES)}, got {text!r}")
    return chosen


def explain_files(source: str, paths: Sequence[Path], out_dir: Path, options: Options = Options(),
                  list_files: Sequence[str] = (), output: Callable[[str], None] = print) -> Summary:
    """Explains the images that ``paths`` (files, directories, globs) and ``list_files`` name and writes what
    ``options.save`` asks for under ``out_dir``. Files named one by one print their top-5 line to ``output``.

    Bad input is refused before anything is written: paths that do not exist, outputs two inputs would share,
    and, with on_error "fail" (the default for files named one by one), any unreadable image. With "continue"
    an unreadable image becomes an index row with its error and the run goes on (``Summary.failed``)."""
    inputs = dataclasses.replace(collect(paths, list_files, out_dir), detections=options.top_detections or 0)
    on_error = options.on_error or ("fail" if inputs.named_one_by_one else "continue")
    workers = default_workers() if options.workers is None else options.workers
    _check_options(inputs, options, on_error)
    if on_error == "fail":
        _refuse_unreadable(inputs, options.batch_size, workers)
    if options.ray is not None:  # the model loads in Ray's actors, not here
        from .ray import check_source, explain_on_ray
        check_source(source)
        _clear(_writable(out_dir), options)
        return explain_on_ray(source, inputs, out_dir, options)
    # before the output directory exists: a refused model leaves nothing
    model = _load_model(source, options, beside_workers=workers > 0)
    _clear(_writable(out_dir), options)
    remove_leftover_temporaries(out_dir)
    journal = Journal(out_dir, model.settings, options.resume)
    try:
        todo = [position for position, item in enumerate(inputs.inputs)
                if not (options.resume and journal.finished(position, item))]
        with StopOnSignals() as stop:
            try:
                failed = _explain(inputs, todo, model, journal, out_dir, options, on_error, workers, output, stop)
            except OutputError as err:
                raise OutputError(f"{err}; {_kept(journal, inputs)}") from None
            except Interrupted as err:
                raise Interrupted(err.exit_code - 128, f"{err}; {_kept(journal, inputs)}") from None
        if stop.requested is not None:
            raise Interrupted(stop.requested, f"{signal.Signals(stop.requested).name}: {_kept(journal, inputs)}")
        summary = _finish(inputs, journal, out_dir, options, failed, resumed=len(inputs) - len(todo))
    finally:
        journal.close()
    return summary


def _clear(out_dir: Path, options: Options) -> None:
    """Makes ``out_dir`` this run's: without --resume, an earlier run's results there are deleted (what it
    owned, see ``dataset.earlier``), said in one line; with it, only its index and gallery, which this run
    rewrites."""
    found = earlier.find(out_dir)
    if found and not options.resume:
        tqdm.write(f"replacing the earlier run in {out_dir} ({found.describe()}); --resume would continue it",
                   file=sys.stderr)
        earlier.remove(found)
    else:
        earlier.remove_derived(out_dir)


def _kept(journal: Journal, inputs: InputSet) -> str:
    """Where a stopped run stands, and how to finish it."""
    return (f"{journal.done():,} of {len(inputs):,} images done and kept; rerun the same command with --resume "
            f"to finish")


def _check_options(inputs: InputSet, options: Options, on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise InputError(f"--on-error is one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if options.index_format not in index.FORMATS:
        raise InputError(f"--index-format is one of {', '.join(index.FORMATS)}, got {options.index_format!r}")
    if options.html and "png" not in options.save:
        raise InputError("--html shows the overlays: add png to --save")
    if options.server and options.jpeg_draft:
        raise InputError("--jpeg-draft changes how salrt decodes; with --server the server decodes the files")
    task_inputs = [name for name, value in (("--region", options.region), ("--region-dir", options.region_dir),
                                            ("--box", options.box)) if value is not None]
    if options.region is not None and options.region_dir is not None:
        raise InputError("--region (one mask for every image) or --region-dir (one per image), not both")
    if task_inputs and options.ray is not None:
        raise InputError(f"{task_inputs[0]}: explained here or with --server, not with --ray")
    if options.top_detections is not None:
        if options.server or options.ray is not None:
            raise InputError("--top-detections: explained here, not with --server or --ray")
        if options.box is not None:
            raise InputError("--box explains the detection overlapping a box, --top-detections the K most probable: "
                             "one or the other")
    if options.region_dir is not None and not Path(options.region_dir).is_dir():
        raise InputError(f"--region-dir {options.region_dir}: no such directory")
    if options.server and isinstance(options.target, str):
        raise InputError(f"--target {options.target!r}: with --server give the class's index (the artifact's "
                         "manifest.json lists its classes in order)")
    if options.server and "grad" in options.save:
        raise InputError("--save grad needs the attribution, which a server's image model does not send back")
    if options.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {options.batch_size}")
    if "index" in options.save and options.index_format == "parquet":
        index.require_pyarrow()
    if options.ray is not None:
        _check_ray_options(options)
    elif options.ray_concurrency is not None or options.ray_num_gpus is not None:
        raise InputError("--ray-concurrency and --ray-num-gpus go with --ray")
    inputs.check_outputs_are_distinct(options.save)


def _check_ray_options(options: Options) -> None:
    from .ray import require_ray
    refused = {"--server": options.server, "--resume": options.resume, "--index-format csv":
               "index" in options.save and options.index_format == "csv"}
    for flag, given in refused.items():
        if given:
            raise InputError(f"{flag} is for runs on this machine; --ray writes the index with Ray Data's "
                             f"write_parquet and loads the model in its own actors")
    require_ray()


def _refuse_unreadable(inputs: InputSet, batch_size: int, workers: int) -> None:
    """Decodes every input once, before the model loads: the first bad one is an InputError."""
    files = ImageFiles([item.path for item in inputs.inputs], range(len(inputs)), preprocessing=None)
    with tqdm(total=len(inputs), desc="reading", unit="img", disable=len(inputs) <= batch_size, leave=False) as bar:
        for batch in batches(files, batch_size, workers):
            if batch.failed:
                raise InputError(batch.failed[0].error)
            bar.update(len(batch))


def _writable(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as err:
        raise InputError(f"cannot write to {out_dir}: {err.strerror}") from None
    return out_dir


@dataclasses.dataclass
class _Model:
    explain: Callable[[Batch], list[Explanation]]  # an explanation per map: one, or a detector's ranked ones
    preprocessing: Preprocessing
    settings: str        # what must match for --resume to keep an earlier run's rows
    needs_encoded: bool  # a server decodes the files' bytes itself


def _load_model(source: str, options: Options, beside_workers: bool) -> _Model:
    described = {"target": options.target, "box": options.box, "save": sorted(options.save),
                 "jpeg_draft": options.jpeg_draft,
                 "region_dir": options.region_dir and str(Path(options.region_dir).resolve()),
                 # only when given: the fingerprints of runs from before the option stay what they were
                 **({"top_detections": options.top_detections} if options.top_detections else {})}
    if options.server:
        from .server.client import RemoteExplainer
        remote = RemoteExplainer(options.server, source)
        region = None if options.region is None else region_mask(options.region, remote.preprocessing)
        if region is not None:
            described["region"] = _tensor_digest(region)

        def explain_remotely(batch: Batch) -> Explanation:
            return remote.explain([item.encoded for item in batch.loaded], options.target, box=options.box,
                                  region=region if batch.regions is None else batch.regions)
        return _Model(lambda batch: [explain_remotely(batch)], remote.preprocessing,
                      _fingerprint(server=options.server, model=source, **described), True)
    # the decoding workers share the cores: the model's threads sleep between operators rather than spin on
    # them (measured: +5-9 points of the tensor rate on 2 cores; no cost at batch 8)
    explainer = load(source, **load_options(options), spin_wait=not beside_workers)
    region = None
    if options.region is not None:  # read and checked once, before any image
        region = explainer.checked_inputs(torch.zeros(1, *explainer.input_shape), options.target,
                                          region=options.region)[2][0]
        described["region"] = _tensor_digest(region)
    def explain(batch: Batch) -> list[Explanation]:
        if options.top_detections:
            return explainer.explain_detections(batch.images, options.top_detections, options.target)
        return [explainer.explain(batch.images, options.target, region if batch.regions is None else batch.regions,
                                  box=options.box)]
    return _Model(explain, explainer.preprocessing,
                  _fingerprint(manifest=explainer.manifest, backend=options.backend, **described), False)


def mask_path(region_dir: Path, relative: str) -> Path:
    """The region mask of the input at ``relative`` (its path under the input root): the same path under
    ``region_dir``, or that path with a .png suffix (a.jpg's mask: a.png, a lossless file)."""
    same = region_dir / relative
    return same if same.is_file() else same.with_suffix(".png")


def load_options(options: Options) -> dict:
    """The arguments of ``salrt.load`` that ``options`` set: here, and in each Ray actor."""
    return {"backend": options.backend, "device": options.device, "weights": options.weights,
            "method": options.method, "dtype": options.dtype, "cuda_graphs": options.cuda_graphs,
            **options.model_options}


def _tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()


def _fingerprint(**settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _explain(inputs: InputSet, todo: list[int], model: _Model, journal: Journal, out_dir: Path, options: Options,
             on_error: str, workers: int, output: Callable[[str], None], stop: StopOnSignals) -> int:
    """Runs the model over the inputs at ``todo``, until done or ``stop`` is requested; returns how many of
    them failed to load."""
    masks = None if options.region_dir is None else \
        [mask_path(Path(options.region_dir), item.relative) for item in inputs.inputs]
    files = ImageFiles([item.path for item in inputs.inputs], todo, model.preprocessing,
                       keep_shown="png" in options.save, keep_encoded=model.needs_encoded,
                       jpeg_draft=options.jpeg_draft, masks=masks)
    failed = 0
    bar = tqdm(total=len(inputs), initial=len(inputs) - len(todo), desc="explaining", unit="img",
               disable=len(inputs) <= 1, leave=False, smoothing=0.05)
    say = output if bar.disable else bar.write  # lines printed above the bar, not through it
    with bar, _Writer(inputs, journal, out_dir, options.save) as writer:
        loader = iter(batches(files, options.batch_size, workers))
        try:
            for batch in loader:
                for item in batch.failed:
                    if on_error == "fail":
                        raise InputError(item.error)
                    tqdm.write(f"skipped: {item.error}", file=sys.stderr)
                failed += len(batch.failed)
                results = model.explain(batch) if batch.loaded else None
                writer.submit(batch, results)
                if inputs.named_one_by_one and results:
                    _print_top(batch, results, inputs, say)
                bar.update(len(batch))
                if stop.requested is not None:
                    break
        finally:
            with stop.deferred():  # the loading processes' shutdown is not cut short by a second signal
                del loader
    return failed


def _print_top(batch: Batch, results: list[Explanation], inputs: InputSet, say: Callable[[str], None]) -> None:
    """The top-5 line of each file named one by one, and a detector's explained detections."""
    for j, (loaded, top) in enumerate(zip(batch.loaded, results[0].top(5))):
        say(f"{inputs.inputs[loaded.position].path.name}: " + ", ".join(f"{name} {p:.3f}" for _, name, p in top))
        if results[0].used_query is not None:
            for rank, detection in enumerate(_detections(results, j), 1):
                say(f"  detection {rank}: {detection['class_name']} {detection['probability']:.3f}, "
                    f"query {detection['query']}, box " + ",".join(f"{v:.0f}" for v in detection["box"]))


class _Writer:
    """Writes each batch's files, then its journal rows, on one background thread while the model computes
    the next batch; at most WRITES_AHEAD batches wait. A write that fails stops the run with its error."""

    def __init__(self, inputs: InputSet, journal: Journal, out_dir: Path, save: Sequence[str]):
        self.inputs, self.journal, self.out_dir, self.save = inputs, journal, out_dir, save
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="salrt-writer")
        self._pending: collections.deque[Future] = collections.deque()

    def submit(self, batch: Batch, results: Optional[list[Explanation]]) -> None:
        self._pending.append(self._thread.submit(self._write, batch, results))
        while len(self._pending) > WRITES_AHEAD:
            self._pending.popleft().result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, KeyboardInterrupt):  # stop at once: the batch being written finishes, the rest waits
            for pending in self._pending:          # for --resume
                pending.cancel()
        try:
            while self._pending:  # also after an error: files being written finish, their rows are kept
                pending = self._pending.popleft()
                if not pending.cancelled():
                    pending.result()
        finally:
            self._thread.shutdown()

    def _write(self, batch: Batch, results: Optional[list[Explanation]]) -> None:
        inputs = self.inputs.inputs
        written = write_results(batch, results, self.out_dir,
                                relative=lambda position: inputs[position].relative,
                                outputs=lambda position: self.inputs.outputs(inputs[position], self.save))
        self.journal.record([(loaded.position, inputs[loaded.position], loaded.stat, files, row)
                             for loaded, files, row in written])


def write_results(batch: Batch, results: Optional[Sequence[Explanation]], out_dir: Path,
                  relative: Callable[[int], str], outputs: Callable[[int], list[list[tuple[str, str]]]]
                  ) -> list[tuple[Loaded, dict, dict]]:
    """Writes the files of each image of ``batch`` and returns (image, {file: (bytes, mtime_ns)}, its index row)
    for each, failed ones last. ``results``: the batch's explanations, one per map (one, or a detector's
    ranked detections); ``outputs(position)``: per map, the kinds and names of its files under ``out_dir``."""
    written = []
    if results:
        first = results[0]
        probabilities = first.class_shares()
        for j, (loaded, top) in enumerate(zip(batch.loaded, first.top(5))):
            per_map = [{name: _write_file(kind, out_dir / name, loaded, result, j) for kind, name in names}
                       for result, names in zip(results, outputs(loaded.position))]
            files = {name: stat for written_files in per_map for name, stat in written_files.items()}
            target = int(first.target[j])
            row = {"path": relative(loaded.position), "width": loaded.size[0], "height": loaded.size[1],
                   "class_index": target, "class_name": first.categories[target],
                   "probability": float(probabilities[j, target]),
                   "top5": [{"index": i, "name": name, "probability": p} for i, name, p in top],
                   "detections": _detections(results, j, per_map) if first.used_query is not None else None,
                   "files": list(files), "backend": first.backend, "error": None}
            written.append((loaded, files, row))
    return written + [(loaded, {}, _failed_row(relative(loaded.position), loaded.error)) for loaded in batch.failed]


def _detections(results: Sequence[Explanation], j: int, per_map: Optional[list[dict]] = None) -> list[dict]:
    """Image ``j``'s explained detections, an index row's ``detections`` (``per_map``: each one's files)."""
    return [{"query": int(result.used_query[j]), "class_index": int(result.target[j]),
             "class_name": result.categories[int(result.target[j])],
             "probability": float(result.detection_probability()[j]),
             "box": [float(v) for v in result.used_box[j]], "score": float(result.score[j]),
             "files": list(per_map[rank]) if per_map else []}
            for rank, result in enumerate(results)]


def _write_file(kind: str, path: Path, loaded: Loaded, result: Explanation, j: int) -> tuple[int, int]:
    saliency = result.saliency[j]
    if kind == "saliency.png":
        return save_png(path, heatmap(saliency))
    if kind == "overlay.png":
        picture = overlay(Image.fromarray(loaded.shown.numpy()), saliency)
        if result.used_region is not None:  # segmentation: the region explained, outlined, beside the prediction
            predicted = segmentation(result.logits[j].argmax(0), picture.size, result.categories)
            picture = beside(outlined(picture, result.used_region[j]), outlined(predicted, result.used_region[j]))
        if result.used_box is not None:  # detection: the explained query's box
            picture = boxed(picture, result.used_box[j], saliency.shape)
        return save_png(path, picture)
    if kind == "saliency.npy":  # in [0, 1]: float16 keeps 3 significant digits at half the bytes
        return save_npy(path, saliency.to(torch.float16).cpu().numpy())
    # the attribution stays float32: input gradients are often far below float16's smallest normal (6e-5)
    return save_npy(path, result.grad[j].float().cpu().numpy())


def _failed_row(relative: str, error: str) -> dict:
    return {"path": relative, "width": None, "height": None, "class_index": None, "class_name": None,
            "probability": None, "top5": None, "detections": None, "files": [], "backend": None, "error": error}


def _finish(inputs: InputSet, journal: Journal, out_dir: Path, options: Options, failed: int,
            resumed: int) -> Summary:
    index_path = gallery_path = None
    if "index" in options.save:
        index_path = out_dir / index.file_name(options.index_format)
        index.write_index(journal.rows(), index_path, options.index_format)
    if options.html:
        gallery_path = gallery.write_gallery(journal.rows(), out_dir, title=inputs.root.name or str(inputs.root))
    return Summary(total=len(inputs), explained=len(inputs) - failed, failed=failed, resumed=resumed,
                   index=index_path, gallery=gallery_path)
