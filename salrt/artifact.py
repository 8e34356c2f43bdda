"""Artifact directories: ``salrt.export`` writes one (all or nothing), ``read_manifest`` and ``verified_file``
read it back. A directory holds one file (or, for a deployment target, one directory) per format
(``formats.FORMATS``) and ``manifest.json``: the model, weights, preprocessing, class names, tensor contract
and each file's sha256."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Union

import torch

from ._version import __version__
from .devices import checked_device
from .errors import ArtifactError, ExportError, InputError, SalrtError
from .formats import FORMATS, Format, parse_formats, writing_order
from .graph import DEFAULT_DTYPE, Method, Task, build_saliency_graph, contract
from .graph.io import BATCH, contract_of
from .graph.precision import DTYPES, check_device, check_dtype, check_formats, numerics
from .models import ClassifierSpec, Preprocessing, as_spec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DIGEST_PREFIX = "sha256:"

Progress = Callable[[str], None]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def task_of(spec: ClassifierSpec) -> Task:
    """The task a finished spec's graph explains, with its parameters (a segmentation model's background)."""
    return Task.for_model(spec.task, spec.categories, spec.output_grid)


def describe(spec: ClassifierSpec, method: Method = Method(), dtype: str = DEFAULT_DTYPE) -> dict:
    """Everything the manifest says about a model, its task, the method its graph computes and the dtype of its
    heavy ops (``graph.precision``), before any file exists: ``inputs`` and ``outputs`` are the tensor contract
    with the model's channels, size and classes (float32 whatever ``dtype`` is)."""
    shape = spec.input_shape
    task = task_of(spec)
    return {
        "format_version": FORMAT_VERSION,
        "salrt_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model": spec.name,
        "weights": spec.weights,
        "input_size": list(shape[1:]),
        "preprocessing": spec.preprocessing.as_dict(),
        "task": task.parameters(),
        "method": method.parameters(),
        "dtype": dtype,
        "chunk": method.chunk_for(shape),
        "images_per_call": method.images_per_call(shape),
        **contract(shape, len(spec.categories), method.outputs + task.spec.outputs,
                   method.taps[0].grid if method.taps else (), task.spec.inputs, task.spec.logits, spec.output_grid),
        "categories": spec.categories,
    }


def _with_files(description: dict, directory: Path, details: dict) -> dict:
    """The manifest: the description plus each written format's file, size and sha256 (for a directory, each
    of its files', keyed by their paths in the artifact)."""
    files = {}
    for fmt, extra in details.items():
        path = directory / FORMATS[fmt].file
        if path.is_dir():
            inside = {p.relative_to(directory).as_posix(): _size_and_sha256(p) for p in sorted(path.rglob("*"))
                      if p.is_file()}
            files[fmt] = {"file": path.name, "files": inside, **extra}
        else:
            files[fmt] = {"file": path.name, **_size_and_sha256(path), **extra}
    return {**description, "files": files}


def _size_and_sha256(path: Path) -> dict:
    return {"sha256": sha256(path), "bytes": path.stat().st_size}


def digest(directory: Path) -> str:
    """One digest of the whole artifact, manifest included: sha256 over "relative/path\0sha256-of-file\n"
    lines of every file under ``directory``, in path order (the C++ runtime computes the same). Pin it where an
    artifact is deployed: the manifest's sha256s catch corruption, not someone who can rewrite the directory."""
    directory = Path(directory)
    if not is_artifact_dir(directory):
        raise ArtifactError(f"{directory} is not a salrt artifact directory (no {MANIFEST})")
    lines = hashlib.sha256()
    for name in sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()):
        lines.update(f"{name}\0{sha256(directory / name)}\n".encode())  # sorted as strings, as C++ sorts them
    return DIGEST_PREFIX + lines.hexdigest()


def check_digest(directory: Path, expected: str) -> None:
    """ArtifactError unless the artifact's digest is ``expected`` (checked before any of its files is loaded);
    its 64 hex digits alone, without the ``sha256:`` prefix, are the same digest."""
    found = digest(directory)
    if re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        expected = DIGEST_PREFIX + expected.lower()
    if found != expected:
        raise ArtifactError(f"{directory} does not have the digest it was pinned to ({expected}); it has {found}: "
                            "a file was changed, added or removed since it was reviewed")


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory} is not a salrt artifact directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is corrupt: {err}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is corrupt: not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{directory} was written by salrt {manifest.get('salrt_version', '?')} in artifact "
                            f"format {manifest.get('format_version')}; this salrt {__version__} reads format "
                            f"{FORMAT_VERSION}: export it again")
    missing = [key for key in ("model", "weights", "preprocessing", "categories", "files") if key not in manifest]
    if missing or not isinstance(manifest["files"], dict):
        raise ArtifactError(f"{path} is corrupt: {', '.join(missing) or 'files'} missing or malformed")
    Task.of(manifest)  # a task this salrt does not explain: refused before any file loads
    _check_fields(manifest, path)
    return manifest


MAX_SIDE = 16384  # pixels: a manifest's input size beyond this is not a model's but an attempt to exhaust memory


def _check_fields(manifest: dict, path: Path) -> None:
    """ArtifactError naming the first field a runtime could not use as it is: of the wrong type, out of range, or
    unlike the tensor contract that the manifest's own model, method and task give (``graph.io.contract``), so
    that a hand-edited or hostile manifest is refused here, not met as a TypeError, a wrong map or a huge
    allocation later. The C++ runtime checks what it reads the same way (cpp/src/explainer.cpp)."""
    def corrupt(field: str, problem: str) -> ArtifactError:
        return ArtifactError(f"{path} is corrupt: {field} {problem}")

    for key in ("model", "weights"):
        if not isinstance(manifest[key], str):
            raise corrupt(key, "must be a string")
    categories = manifest["categories"]
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        raise corrupt("categories", "must be a list of class names")
    if not all(isinstance(entry, dict) for entry in manifest["files"].values()):
        raise corrupt("files", "must map each format to its entry")
    if manifest.get("dtype", DEFAULT_DTYPE) not in DTYPES:
        raise corrupt("dtype", f"must be one of {', '.join(DTYPES)}")
    for key, least in (("chunk", 1), ("images_per_call", 0)):
        if not _is_int(manifest.get(key, least), least):
            raise corrupt(key, f"must be an integer of at least {least}")
    size = manifest.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(side, 1, MAX_SIDE) for side in size)):
        raise corrupt("input_size", f"must be [height, width], each 1 to {MAX_SIDE}")
    try:
        preprocessing = Preprocessing(**manifest["preprocessing"])
        method = Method.of(manifest)
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # InputError is a ValueError
        raise corrupt("preprocessing or method", f"cannot be read: {err}") from None
    if list(preprocessing.size) != size:
        raise corrupt("input_size", f"{size} is not the preprocessing's crop {list(preprocessing.size)}")
    recorded = _recorded_contract(manifest)
    given = recorded and _contract_given(manifest, recorded, preprocessing, method)
    if not given or _without_notes(given, _legacy(manifest)) != _without_notes(recorded, _legacy(manifest)):
        raise corrupt("inputs or outputs", "are not the tensors its model, method and task give")


def _is_int(value, least: int, most: Optional[int] = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= (most or value)


def _recorded_contract(manifest: dict) -> Optional[dict]:
    """The manifest's inputs and outputs with its sizes filled in, or None where they are malformed."""
    try:
        recorded = contract_of(manifest)
        return recorded if all(isinstance(io, dict) for io in recorded["inputs"] + recorded["outputs"]) else None
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _contract_given(manifest: dict, recorded: dict, preprocessing: Preprocessing, method: Method) -> Optional[dict]:
    """The contract salrt writes for the manifest's model, method and task. The logits' sizes beyond N and K
    (a segmentation model's grid, a detector's queries) are the model's own: they come from the ``recorded``
    logits, as positive integers."""
    task = Task.of(manifest)
    logits = next((io for io in recorded["outputs"] if io.get("name") == "logits"), None)
    if not logits or not isinstance(logits.get("shape"), list) or len(logits["shape"]) != len(task.spec.logits.shape):
        return None
    grid = [size for symbol, size in zip(task.spec.logits.shape, logits["shape"]) if symbol not in (BATCH, "K")]
    if not all(_is_int(size, 1) for size in grid):
        return None
    try:
        return contract(preprocessing.input_shape, len(manifest["categories"]), method.outputs + task.spec.outputs,
                        method.taps[0].grid if method.taps else (), task.spec.inputs, task.spec.logits, grid)
    except (TypeError, ValueError, KeyError):
        return None


def _without_notes(given: dict, legacy: bool) -> list:
    """The contract as compared: notes are prose, which other salrt versions word otherwise; a legacy manifest's
    shapes are symbolic and said 3 channels whatever the model's, so its shapes are not compared."""
    ignored = ("note", "shape") if legacy else ("note",)
    return [{key: value for key, value in io.items() if key not in ignored} for io in given["inputs"] + given["outputs"]]


def _legacy(manifest: dict) -> bool:
    """A manifest written before contracts held the model's sizes: ["N", "C", "H", "W"]-style shapes."""
    return any(isinstance(size, str) and size != BATCH for io in manifest["inputs"] + manifest["outputs"]
               for size in io["shape"])


def verified_file(directory: Path, manifest: dict, fmt: str) -> Path:
    """The artifact file of a format, after checking it is the one the manifest describes."""
    entry = manifest["files"].get(fmt)
    if entry is None:
        raise ArtifactError(f"{directory} has no {fmt} artifact (it has: {', '.join(manifest['files'])})")
    path = _inside(Path(directory), entry, fmt)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    if sha256(path) != entry["sha256"]:
        raise ArtifactError(f"{path} does not match its manifest (sha256 mismatch): the file is truncated or "
                            "was modified; export it again")
    return path


def _inside(directory: Path, entry, fmt: str) -> Path:
    """The path of a manifest's file entry, refused unless it names a file inside ``directory``: a relative
    path without "..", not through a symlink that leads out (an artifact is code: model.pt2 holds a shared
    library, and a manifest must not point a runtime at one elsewhere)."""
    corrupt = f"{directory / MANIFEST} is corrupt: files.{fmt}"
    if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("file", "sha256")):
        raise ArtifactError(f"{corrupt} must hold \"file\" and \"sha256\" strings, got {entry!r}")
    relative = PurePosixPath(entry["file"])
    if relative.is_absolute() or ".." in relative.parts or str(relative) in ("", ".") or "\\" in entry["file"]:
        raise ArtifactError(f"{corrupt}.file {entry['file']!r} is not a path inside the artifact directory")
    path = directory / relative
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ArtifactError(f"{path} leads outside {directory} (a symbolic link): refused")
    return path


def dtype_of(manifest: dict) -> str:
    """The dtype an artifact's graph computes in; manifests from before ``--dtype`` existed are float32's."""
    return manifest.get("dtype", DEFAULT_DTYPE)


def preprocessing_of(manifest: dict) -> Preprocessing:
    return Preprocessing(**manifest["preprocessing"])


def export(model: Union[str, torch.nn.Module, ClassifierSpec], out_dir: Union[str, Path],
           formats: Union[str, Iterable[str]] = ("torchscript",), weights: str = "default",
           image_size: Union[None, int, tuple[int, int]] = None, progress: Progress = lambda message: None,
           triton: Optional[dict] = None, method: Method = Method(), *, categories=None,
           preprocessing: Union[None, Preprocessing, dict] = None, channels: Optional[int] = None,
           device: Union[str, torch.device] = "cpu", dtype: str = DEFAULT_DTYPE, task: Optional[str] = None) -> Path:
    """Export ``model``'s saliency graph to an artifact directory and return its path.

    Args:
        model: a model source (``salrt.models``: a torchvision name, ``timm:NAME``, ``hf:PATH_OR_ID``,
            ``package.module:attribute``), or any classifier ``nn.Module`` returning logits, a tuple or a
            mapping / ModelOutput with ``logits``.
        out_dir: the directory to write; an existing salrt artifact directory there is replaced, any other
            existing non-empty path is refused.
        formats: names from ``salrt.formats.FORMATS`` ("torchscript", "onnx", "aoti", "aoti_n1", "triton"), or
            one comma-separated string. "triton" writes ``triton/``, a Triton model repository serving the ONNX
            graph (its model.onnx a hard link to the artifact's where "onnx" is exported too).
        weights: "default" (pretrained; a module: as it is), "random" (seeded initialisation, named sources) or
            the path of a checkpoint (.pt/.pth state dict or .safetensors).
        image_size: the input size fixed in the graph, H = W or (H, W) (default: the model's crop size).
        progress: called with a line of text before each step.
        method: what the graph computes (``salrt.graph.Method``: saliency, input_x_gradient, smoothgrad,
            smoothgrad_sq, vargrad, integrated_gradients, with their parameters); recorded in the manifest.
        categories: class names (a list, or a file: one per line or JSON), as many as the model has logits;
            default: the source's (ImageNet's for torchvision and efficientnet_lite0), else "class 0"...
        preprocessing: a ``Preprocessing``, or a dict of its fields (resize, crop, mean, std, interpolation)
            replacing the source's.
        channels: the input channels (default: the source's; a module: its first convolution's).
        device: what the compiled formats (aoti, aoti_n1) are compiled for, "cpu" or "cuda" (recorded in their
            manifest entries; a package loads only there). TorchScript and ONNX run on any device.
        dtype: "fp32" (default), "bf16" or "fp16": what the graph's heavy ops compute in (``graph.precision``:
            the scheme, and which formats run which dtype); inputs and outputs stay float32. Recorded in the
            manifest.
        task: what the graph explains (``graph.tasks``): "classification" (a class's logit) or
            "segmentation" (a class's logits summed over a region); default: found from the logits' rank.
            Recorded in the manifest, with the inputs and outputs it adds.
        triton: settings of the "triton" format (``salrt.formats.triton.REPOSITORY_DEFAULTS``): max_batch,
            max_queue_delay_ms, instance_kind ("gpu" or "cpu"), instances; unused without that format.

    Returns:
        ``out_dir``, holding one file (triton: a directory) per format and ``manifest.json``. It appears
        complete or not at all: files are written to a temporary sibling that is renamed at the end.

    Raises:
        InputError: unknown model, format, dtype or weights; a format that does not run ``dtype``; an image size
            under 32; class names that do not match the logits; an unwritable ``out_dir``; a bad triton setting,
            or "triton" without tritonclient; a device this machine lacks.
        ExportError: the graph cannot be built or written in a format (the message names the op).
    """
    formats = parse_formats(formats)
    check_formats(check_dtype(dtype), formats)
    method = method.check()
    device = checked_device(device)
    for fmt in formats:  # a compiled format runs where it is compiled for: that device must run the dtype
        if FORMATS[fmt].for_one_device:
            check_device(dtype, fmt, device.type)
    given = {"triton": triton}  # the formats' own options, by format name, as the arguments above name them
    options = {fmt: _writer_options(FORMATS[fmt], given.get(fmt), device) for fmt in formats}  # before any work
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    spec = as_spec(model, weights, categories=categories, preprocessing=preprocessing, channels=channels,
                   image_size=image_size, task=task)
    method = method.resolved(spec.module, spec.input_shape)  # a layer that does not fit: refused before any file
    staging = _staging_dir(out_dir)
    try:
        started = time.perf_counter()
        progress(f"tracing the saliency graph of {spec.name}")
        with _export_step(f"cannot build the saliency graph of {spec.name}"):
            graph = build_saliency_graph(spec.module, spec.input_shape, method=method,
                                         mean=spec.preprocessing.mean, std=spec.preprocessing.std, dtype=dtype,
                                         task=task_of(spec))
        description = describe(spec, method, dtype)
        details = {}
        for fmt in writing_order(formats):
            progress(f"writing {FORMATS[fmt].file}")
            with _export_step(f"cannot export {spec.name} to {fmt}"):
                with numerics(dtype):  # AOTInductor picks tf32 kernels only when tf32 is on as it compiles
                    details[fmt] = _write(FORMATS[fmt], graph, staging, description, options[fmt])
        manifest = _with_files(description, staging, details)
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _writer_options(fmt: Format, given: Optional[dict], device: torch.device) -> dict:
    """What ``fmt``'s writer takes besides the graph: its own options, checked, and the device it compiles for."""
    options = fmt.check_options(given) if fmt.check_options else {}
    return {**options, "device": device} if fmt.for_one_device else options


def _write(fmt: Format, graph: torch.fx.GraphModule, staging: Path, description: dict, options: dict) -> dict:
    if fmt.reuses:  # it ships another format's file: given that file where this export wrote it (written first)
        reused = staging / FORMATS[fmt.reuses].file
        options = {**options, "reused_file": reused if reused.exists() else None}
    return fmt.write(graph, staging / fmt.file, description, **options)


@contextlib.contextmanager
def _export_step(what: str):
    """Turn a tracer or exporter failure into one ExportError line naming the model, format and cause."""
    try:
        yield
    except SalrtError:
        raise
    except Exception as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        cause = next((line for line in lines if "aten." in line or "prims." in line), lines[0] if lines else "")
        raise ExportError(f"{what}: {type(err).__name__}: {cause.strip()[:300]}") from err


def is_artifact_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or is_artifact_dir(out_dir))):
        raise InputError(f"{out_dir} exists and is not a salrt artifact directory; choose another --out")


def _staging_dir(out_dir: Path) -> Path:
    parent = out_dir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as err:
        raise InputError(f"cannot write to {parent}: {err.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact gets ordinary permissions
    return staging


def _replace(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
