"""salrt as a Ray Data stage, and ``salrt explain --ray``: the job of ``salrt explain`` past one machine.

``Explain`` is a callable class for ``ray.data.Dataset.map_batches``: each actor loads the model once, then
turns batches of images into rows with the class, its probability, the top 5 and the saliency map, and writes
the files ``save`` asks for under ``out``::

    import ray, salrt.ray
    rows = (ray.data.read_images("s3://bucket/photos/", include_paths=True, mode="RGB")
            .map_batches(salrt.ray.Explain, fn_constructor_kwargs={"source": "resnet50/"},
                         batch_size=16, compute=ray.data.ActorPoolStrategy(size=4)))

``explain_on_ray`` is ``salrt explain --ray``: the inputs salrt collects locally become a dataset of paths, the
actors read, explain and write their files under the same tree as a local run, and the index is written by
Ray Data's ``write_parquet`` as a directory ``results.parquet/`` (pandas and pyarrow read it as one table).
On a cluster, the inputs and --out must be on storage every node sees under the same path.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np
import torch

from .dataset import RAY_AUTO, gallery, index
from .dataset.inputs import InputSet, output_names
from .dataset.earlier import remove_path
from .dataset.loading import Batch, load_image
from .dataset.outputs import remove_leftover_temporaries
from .artifact import read_manifest
from . import errors
from .errors import InputError, SalrtError
from .explain import Options, Summary, load_options, write_results
from .models import is_model_name
from .runtime import load

PIN = "ray[data]==2.60.0"
SOURCES = ("image", "bytes", "path")  # input columns an image may come from, in the order they are looked for
_ROWS = ".salrt-ray-rows"  # where rows go when the index is not saved: counted, shown in the gallery, deleted


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(f"--ray needs Ray Data: pip install 'salrt[ray]' (that is {PIN})") from None
    return ray


class Explain:
    """A Ray Data stage: batches of images in, a row per image out.

    Input columns: the image from ``image`` (decoded HW(C) uint8 arrays, as ``ray.data.read_images`` gives),
    ``bytes`` (encoded files, as ``ray.data.read_binary_files``) or ``path`` (files the actor reads), looked for
    in that order; optional ``path`` (names the row and its files; ``include_paths=True``), ``relative`` (the
    row's ``path`` instead of ``path`` relative to ``root``), ``output_base`` (files are named
    ``{output_base}_{kind}``; default the row's path) and ``target`` (the class per image; negative: its top).

    Output columns: those of salrt explain's index (``salrt.dataset.index.COLUMNS``) and, with ``maps``,
    ``saliency``: the float16 [H, W] map in [0, 1] (NaN where ``error`` says why there is none).

    Args:
        source: what ``salrt.load`` takes, typically an artifact directory every node can read.
        target: the class explained for images without a ``target`` column (default: the top class).
        out: the directory the files of ``save`` are written under (atomically), mirroring the row paths.
        save: of "png" (heatmap and overlay), "npy" (float16 map), "grad" (float32 attribution).
        root: paths are made relative to it for the ``path`` column and the file names.
        maps: return the ``saliency`` column.
        jpeg_draft: decode JPEGs reduced to what the model's resize needs (``salrt.images.decode_reduced``).
        load_options: more arguments of ``salrt.load`` (backend, device, weights, dtype, cuda_graphs, method).
    """

    def __init__(self, source: str, *, target: Optional[int] = None, out: Optional[str] = None,
                 save: Sequence[str] = (), root: Optional[str] = None, maps: bool = True,
                 jpeg_draft: bool = False, load_options: Optional[dict] = None):
        if save and out is None:
            raise InputError(f"save={list(save)} writes files: give out, the directory they go under")
        self.explainer = load(source, **(load_options or {}))
        self.target, self.save, self.maps, self.jpeg_draft = target, tuple(save), maps, jpeg_draft
        self.out = Path(out) if out is not None else None
        self.root = PurePosixPath(root) if root else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        count = len(next(iter(batch.values())))
        source = next((column for column in SOURCES if column in batch), None)
        if source is None:
            raise InputError(f"salrt.ray.Explain needs a column of images: one of {', '.join(SOURCES)}; "
                             f"got {', '.join(batch) or 'none'}")
        names = [self._row_path(batch, i) for i in range(count)]
        if self.save and None in names:
            raise InputError("salrt.ray.Explain names the files it writes after the rows' paths: add a path "
                             "column (read_images(..., include_paths=True)) or a relative one")
        bases = [_inside_out(str(base)) for base in batch["output_base"]] if "output_base" in batch else names
        images = self._load(batch[source], source, names)
        result = self.explainer.explain(images.images, target=self._targets(batch, images)) if images.loaded else None
        written = write_results(images, result and [result], self.out, relative=names.__getitem__,
                                outputs=lambda i: [output_names(bases[i], self.save)])
        rows = [row for _, _, row in sorted(written, key=lambda item: item[0].position)]
        columns = {name: [row[name] for row in rows] for name in index.COLUMNS}
        if self.maps:
            columns["saliency"] = self._maps(images, result, count)
        return columns

    def _load(self, column, source: str, names: list[str]) -> Batch:
        preprocessing = self.explainer.preprocessing
        loaded = [load_image(i, Path(value) if source == "path" else value, preprocessing,
                             keep_shown="png" in self.save, name=names[i] or "image bytes", jpeg_draft=self.jpeg_draft)
                  for i, value in enumerate(column)]
        return Batch([item for item in loaded if item.error is None], [item for item in loaded if item.error])

    def _row_path(self, batch: dict, i: int) -> Optional[str]:
        if "relative" in batch:
            return _inside_out(str(batch["relative"][i]))
        if "path" not in batch:
            return None
        path = PurePosixPath(str(batch["path"][i]).split("://", 1)[-1])  # s3://bucket/a.jpg: bucket/a.jpg
        if self.root is not None and path.is_relative_to(self.root):
            path = path.relative_to(self.root)
        return _inside_out(str(PurePosixPath(*path.parts[1:]) if path.is_absolute() else path))

    def _targets(self, batch: dict, images: Batch):
        if "target" not in batch:
            return self.target
        return torch.tensor([int(batch["target"][item.position]) for item in images.loaded])

    def _maps(self, images: Batch, result, count: int) -> np.ndarray:
        height, width = self.explainer.input_shape[1:]
        maps = np.full((count, height, width), np.nan, np.float16)
        for j, item in enumerate(images.loaded):
            maps[item.position] = result.saliency[j].to(torch.float16).cpu().numpy()
        return maps


def _inside_out(relative: str) -> str:
    """``relative``, refused where the files named after it would land outside ``out``."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise InputError(f"{relative}: an absolute path or one with '..' would write outside out")
    return relative


def explain_on_ray(source: str, inputs: InputSet, out_dir: Path, options: Options) -> Summary:
    """``salrt explain --ray``: ``inputs`` explained by Ray Data actors, files under ``out_dir`` as a local run
    writes them, the index (with "index" in options.save) as the directory results.parquet/. The caller has
    checked ``source`` (``check_source``) and made ``out_dir``."""
    ray = require_ray()  # checked with the options already: here it hands over the module
    started = _connect(ray, options.ray)
    try:
        rows_dir = out_dir / (index.file_name("parquet") if "index" in options.save else _ROWS)
        remove_path(rows_dir)  # the index is written anew by every run, as a local run's is
        remove_leftover_temporaries(out_dir)
        try:
            _explained(ray, source, inputs, out_dir, options).write_parquet(
                str(rows_dir.resolve()), schema=index.schema(), mode=ray.data.SaveMode.OVERWRITE)
        except ray.exceptions.RayError as err:
            raise _salrt_cause(err) or err
        summary = _summary(inputs, rows_dir, out_dir, options)
        if "index" not in options.save:
            remove_path(rows_dir)
        return summary
    finally:
        if started:
            ray.shutdown()


def check_source(source: str) -> None:
    """What every actor will load, checked here without loading it (else each actor's constructor fails): a
    model name, or an artifact directory whose manifest salrt reads."""
    if is_model_name(source):
        return
    if not Path(source).is_dir():
        raise InputError(f"{source} is neither an artifact directory nor a known model name")
    read_manifest(Path(source))


def _salrt_cause(err: Exception) -> Optional[SalrtError]:
    """The salrt error an actor raised (a refused backend, device or file) out of Ray's wrapping, if any: a
    task's error keeps it as ``cause``; an actor that died in its constructor keeps only its traceback."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, SalrtError):
        return cause
    raised = re.findall(r"^salrt\.errors\.(\w+): (.+)$", str(err), re.MULTILINE)
    kind = getattr(errors, raised[-1][0], None) if raised else None
    return kind(raised[-1][1]) if isinstance(kind, type) and issubclass(kind, SalrtError) else None


def _connect(ray, address: str) -> bool:
    """Connects to Ray (see RAY_AUTO); True when this call started the instance it must stop."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address == RAY_AUTO else address, include_dashboard=False, log_to_driver=False)
    except (ValueError, ConnectionError) as err:
        raise InputError(f"--ray {address}: no Ray cluster there ({err}); give an address such as "
                         f"ray://HEAD:10001 or auto, or put --ray after the images") from None
    return True


def _explained(ray, source: str, inputs: InputSet, out_dir: Path, options: Options):
    items = [{"path": str(item.path.resolve()), "relative": item.relative,
              "output_base": inputs.output_base(item)}
             for item in inputs.inputs]
    stage = {"source": source, "target": options.target, "out": str(out_dir.resolve()), "maps": False,
             "jpeg_draft": options.jpeg_draft,
             "save": [choice for choice in options.save if choice != "index"],
             "load_options": load_options(options)}
    gpus = options.ray_num_gpus if options.ray_num_gpus is not None else (1 if options.device == "cuda" else 0)
    _check_gpus(ray, gpus)
    actors = ray.data.ActorPoolStrategy(size=options.ray_concurrency) if options.ray_concurrency else \
        ray.data.ActorPoolStrategy(min_size=1, max_size=_actors_that_fit(ray, gpus))
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # the index in input order
    # an actor that dies (killed, out of memory, its node lost) is started again and its batches are retried:
    # Ray Data's actor defaults (max_restarts=-1, max_task_retries=-1; passing them is deprecated since Ray 2.60),
    # which tests/test_ray.py checks by killing one. A retried batch rewrites the same files, whole (see
    # dataset.outputs), and its rows are written once, by the attempt that finished.
    return ray.data.from_items(items).map_batches(Explain, fn_constructor_kwargs=stage, batch_size=options.batch_size,
                                                  compute=actors, num_gpus=gpus or None)


def _check_gpus(ray, gpus: float) -> None:
    """InputError where no actor could start: Ray would wait for a GPU that never comes."""
    present = ray.cluster_resources().get("GPU", 0)
    if gpus and present < gpus:
        raise InputError(f"the Ray cluster has {present:g} GPUs and each actor asks for {gpus:g} "
                         f"(--ray-num-gpus; 1 by default with --device cuda)")


def _actors_that_fit(ray, gpus: float) -> int:
    """As many actors as the cluster has GPUs for (with num_gpus) or CPUs for, keeping one CPU for Ray
    Data's own read and write tasks."""
    resources = ray.cluster_resources()
    if gpus:
        return max(1, int(resources["GPU"] // gpus))
    return max(1, int(resources.get("CPU", 1)) - 1)


def _summary(inputs: InputSet, rows_dir: Path, out_dir: Path, options: Options) -> Summary:
    failed = sum(row["error"] is not None for row in _rows(rows_dir, ["error"]))
    written = gallery.write_gallery(_rows(rows_dir), out_dir, title=inputs.root.name or str(inputs.root)) \
        if options.html else None
    return Summary(total=len(inputs), explained=len(inputs) - failed, failed=failed, resumed=0,
                   index=rows_dir if "index" in options.save else None, gallery=written)


def _rows(rows_dir: Path, columns: Optional[list[str]] = None):
    """The rows Ray wrote, a record batch at a time."""
    import pyarrow.dataset
    for batch in pyarrow.dataset.dataset(str(rows_dir), format="parquet").to_batches(columns=columns):
        yield from batch.to_pylist()
