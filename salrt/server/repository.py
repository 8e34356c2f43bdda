"""The Triton model repository ``salrt serve`` generates for Triton's Python backend: two models per artifact,
``<model>`` (the artifact's tensor contract) and ``<model>_image`` (encoded photos in, uint8 saliency out)."""
from __future__ import annotations

import importlib.util
import json
import site
import sys
from pathlib import Path
from typing import Optional

import torch

from ..artifact import read_manifest
from ..errors import ArtifactError, InputError
from ..formats import BY_BACKEND
from ..graph import Task
from ..formats.triton_config import concrete_contract, model_config, triton_model_name, write_config
from ..ops import abs_channel_max_normalize

TENSOR, IMAGE = "tensor", "image"  # the two model kinds: graph tensors in, or encoded photos in
# A request parameter: when true, the model logs (Triton's log, info level) "salrt_timing REQUEST_ID
# salrt_check_us=... salrt_explain_us=... salrt_outputs_us=... salrt_torch_threads=...": the microseconds
# salrt's code spent in execute by phase, for benchmarks.
TIMING = "salrt_timing"

# Imports the serving model from the same sys.path as the process that wrote it: the stub's Python is the
# interpreter's shared library, which knows nothing of the virtual environment salrt runs from.
_MODEL_PY = """import site
import sys
sys.path[:0] = [p for p in {path!r} if p not in sys.path]
for directory in {site_dirs!r}:
    site.addsitedir(directory)  # runs its .pth files too (editable installs live there)
from salrt.server.triton_model import TritonPythonModel  # noqa: F401
"""


def pytriton_dir() -> Path:
    """Where the nvidia-pytriton wheel keeps its ``tritonserver`` (without importing pytriton itself)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("salrt serve needs Triton Inference Server: pip install 'salrt[serve]'")
    return Path(spec.submodule_search_locations[0]) / "tritonserver"


def model_names(manifest: dict) -> dict[str, str]:
    """{model kind: Triton model name}: the artifact's model name made a valid directory name."""
    name = triton_model_name(manifest["model"])
    return {TENSOR: name, IMAGE: f"{name}_image"}


def _contracts(manifest: dict) -> dict[str, tuple[list[dict], list[dict]]]:
    inputs, outputs = concrete_contract(manifest)
    # Every input is required, the contract's defaults included (-1: the top class, the predicted region, the
    # top detection): where some are optional, Triton 2.51 checks a request's input count, not its names, and a
    # request with a target but no image reached the Python backend and crashed Triton (SIGSEGV), a crash any
    # client could cause. Triton now refuses such a request naming the missing input.
    image_inputs = [{"name": "image_bytes", "dtype": "bytes", "shape": ["N"]}] + inputs[1:]
    # photos in: the class, the map (uint8: image_saliency's) and what the task explained (its box, region,
    # score), not the attribution or a method's intermediates
    sent = ("logits", "used_target", "saliency", *Task.of(manifest).spec.outputs)
    image_outputs = [{**io, "dtype": "uint8"} if io["name"] == "saliency" else io
                     for io in outputs if io["name"] in sent]
    return {TENSOR: (inputs, outputs), IMAGE: (image_inputs, image_outputs)}


def image_saliency(grad: torch.Tensor) -> torch.Tensor:
    """The image model's ``saliency`` (declared uint8 above): the fused op's uint8 output, round(255 * map)
    half to even, from the batch's ``grad`` output (the op reads a gradient, not a map). Every method's
    saliency is that op's rule applied to its ``grad`` (``graph.saliency.saliency_from_grad``), so these are
    the bytes of the float map's conversion (tests/test_serve.py holds them to it)."""
    return abs_channel_max_normalize(grad, out_dtype=torch.uint8)


def write_serve_repository(artifact: Path, root: Path, *, backend: str, device: str, max_batch: int,
                           max_queue_delay_ms: float, instances: int, digest: Optional[str] = None) -> dict[str, str]:
    """Writes both Python-backend models under ``root`` and returns {model kind: model name}. The batching
    options are checked by the caller (``ServeOptions.check``)."""
    artifact = Path(artifact).absolute()
    manifest = read_manifest(artifact)
    if backend in BY_BACKEND and BY_BACKEND[backend].name not in manifest["files"]:
        raise ArtifactError(f"{artifact} has no {BY_BACKEND[backend].name} artifact for backend {backend!r} "
                            f"(it has: {', '.join(manifest['files'])})")
    names = model_names(manifest)
    for model_kind, (inputs, outputs) in _contracts(manifest).items():
        directory = root / names[model_kind]
        (directory / "1").mkdir(parents=True)
        parameters = {"model_kind": model_kind, "artifact": artifact, "backend": backend, "device": device,
                      "digest": digest or "", "preprocessing": json.dumps(manifest["preprocessing"]),
                      "categories": json.dumps(manifest["categories"])}
        # a KIND_CPU instance whatever --device is: the instance is a Python process on the host, and the
        # model inside it puts itself on ``device`` (the parameter above)
        write_config(model_config(names[model_kind], inputs, outputs, backend="python", max_batch=max_batch,
                                  max_queue_delay_ms=max_queue_delay_ms, instances=instances, instance_kind="cpu",
                                  parameters=parameters), directory / "config.pbtxt")
        (directory / "1" / "model.py").write_text(_MODEL_PY.format(path=[p for p in sys.path if p],
                                                                        site_dirs=site.getsitepackages()))
    return names
