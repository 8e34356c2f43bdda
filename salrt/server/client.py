"""A client of ``salrt serve`` (standard ``tritonclient``): photos in, the same ``Explanation`` as in-process."""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, SalrtError
from ..images import region_mask
from ..models import Preprocessing
from ..runtime import Explanation


_DATA_TYPES = {"O": "BYTES", "i": "INT64", "f": "FP32"}  # numpy's dtype kind: Triton's type
PROTOCOLS = ("http", "grpc")  # the URL's scheme; none means http (HOST:PORT is then Triton's HTTP port)


def split_url(url: str) -> tuple[str, str]:
    """(protocol, host:port) of ``http://HOST:PORT``, ``grpc://HOST:PORT`` or ``HOST:PORT`` (HTTP)."""
    scheme, found, address = url.partition("://")
    if not found:
        return "http", url
    if scheme not in PROTOCOLS:
        raise InputError(f"--server takes HOST:PORT, http://HOST:PORT or grpc://HOST:PORT, got {url!r}")
    return scheme, address


class RemoteExplainer:
    """Explains encoded photos on a ``salrt serve`` server through its ``<model>_image`` model, over HTTP
    (binary tensor data) or gRPC as the URL says."""

    def __init__(self, url: str, model: str):
        self.protocol, self.url = split_url(url)
        try:
            from tritonclient.utils import InferenceServerException
            if self.protocol == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
        except ImportError:
            raise InputError("--server needs tritonclient: pip install 'salrt[serve]'") from None
        self._module, self._error, self.model = client_module, InferenceServerException, f"{model}_image"
        self._client = client_module.InferenceServerClient(self.url)
        config = self._config()
        parameters = config["parameters"]
        # the image model's outputs (the class, the map, what the task explained); per-row scalars come as [N, 1]
        self.output_names = [output["name"] for output in config["output"]]
        # every input is required (server.repository): those not given are sent as the contract's default, -1
        self._inputs = {tensor["name"]: (tensor["data_type"], [int(d) for d in tensor["dims"]])
                        for tensor in config["input"]}
        self._per_row = {output["name"]: "reshape" in output for output in config["output"]}
        self.preprocessing = Preprocessing(**json.loads(parameters["preprocessing"]["string_value"]))
        self.categories: list[str] = json.loads(parameters["categories"]["string_value"])

    def explain(self, images: Sequence[bytes], target: Optional[int] = None, region=None, box=None) -> Explanation:
        """``images``: encoded JPEG/PNG bytes. The map comes back as uint8, so it is within 1/510 of the
        in-process float map; the server's image model returns no gradient (``grad`` is None). ``region`` and
        ``box`` as ``Explainer.explain`` takes them: a mask image is resized and cropped here, as the server
        preprocesses the photos."""
        n = len(images)
        inputs = {"image_bytes": np.array([[bytes(image)] for image in images], dtype=np.object_)}
        if target is not None:
            inputs["target"] = np.full((n, 1), target, dtype=np.int64)
        if region is not None:
            if isinstance(region, (str, os.PathLike, bytes, Image.Image)):
                region = region_mask(region, self.preprocessing)
            region = torch.as_tensor(region, dtype=torch.float32)
            inputs["region"] = (region.expand(n, *region.shape) if region.dim() == 2 else region).numpy()
        if box is not None:
            inputs["box"] = np.broadcast_to(np.asarray(box, np.float32).reshape(-1, 4), (n, 4))
        for name, (data_type, dims) in self._inputs.items():
            if name not in inputs:
                inputs[name] = np.full((n, *dims), -1, np.int64 if data_type == "TYPE_INT64" else np.float32)
        requested = [self._module.InferInput(name, list(value.shape), _DATA_TYPES[value.dtype.kind])
                     for name, value in inputs.items()]
        for tensor, value in zip(requested, inputs.values()):
            tensor.set_data_from_numpy(np.ascontiguousarray(value))
        # no more outputs than these (http: binary by default): no gradient, no method's intermediates
        wanted = [self._module.InferRequestedOutput(name) for name in self.output_names]
        result = self._call(lambda: self._client.infer(self.model, requested, outputs=wanted))
        # copies (a few KB): tritonclient's arrays are read-only views of the response
        outputs = {name: torch.from_numpy(result.as_numpy(name).copy()) for name in self.output_names}
        outputs = {name: value.reshape(-1) if self._per_row[name] else value for name, value in outputs.items()}
        outputs["saliency"] = outputs["saliency"].float() / 255
        return Explanation(outputs, categories=self.categories, backend=f"triton {self.protocol}://{self.url}")

    def _config(self) -> dict:
        if self.protocol == "grpc":
            return self._call(lambda: self._client.get_model_config(self.model, as_json=True))["config"]
        return self._call(lambda: self._client.get_model_config(self.model))

    def _call(self, request):
        try:
            return request()
        except self._error as err:
            raise SalrtError(f"server {self.protocol}://{self.url}: {err.message()}") from None
        except (ConnectionError, OSError) as err:
            raise SalrtError(f"no salrt server answers at {self.protocol}://{self.url} ({err.__class__.__name__}); "
                             "start one with `salrt serve ARTIFACT_DIR`") from None


class _Region(NamedTuple):
    handle: object  # tritonclient's
    name: str       # what the server knows it as
    shape: tuple
    dtype: np.dtype
    size: int       # bytes


class SharedMemoryTensors:
    """A same-host gRPC client's tensors through system shared memory, for a server started with
    ``ServeOptions(shared_memory=True)`` (``salrt serve --shared-memory``): one region for the ``image`` input
    and one per output, registered once; each ``infer`` writes the image there and reads the outputs back,
    so neither travels through the socket. ``outputs``: {name: (shape, numpy dtype)} of one request."""

    def __init__(self, client, image_shape: Sequence[int], outputs: dict):
        import secrets
        import tritonclient.grpc as grpc
        import tritonclient.utils.shared_memory as shm
        self._client, self._shm, self.regions = client, shm, {}
        tag = f"salrt{os.getpid()}_{secrets.token_hex(4)}"
        shapes = {"image": (tuple(image_shape), np.dtype(np.float32)),
                  **{name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in outputs.items()}}
        try:
            for name, (shape, dtype) in shapes.items():
                size, region_name = int(np.prod(shape)) * dtype.itemsize, f"{tag}_{name}"
                self.regions[name] = _Region(shm.create_shared_memory_region(region_name, f"/{region_name}", size),
                                             region_name, shape, dtype, size)
                client.register_system_shared_memory(region_name, f"/{region_name}", size)
        except Exception:
            self.close()
            raise
        self._input = grpc.InferInput("image", list(image_shape), "FP32")
        self._input.set_shared_memory(self.regions["image"].name, self.regions["image"].size)
        self._target = tensor_inputs(grpc, np.zeros(image_shape, np.float32))[1]  # -1s: the top class, inline
        self._outputs = []
        for name in outputs:
            requested = grpc.InferRequestedOutput(name)
            requested.set_shared_memory(self.regions[name].name, self.regions[name].size)
            self._outputs.append(requested)

    def infer(self, model: str, image: np.ndarray, **request) -> dict:
        """The outputs of one request for ``image`` (copies: the regions are rewritten by the next one)."""
        if tuple(image.shape) != self.regions["image"].shape:
            raise InputError(f"an image of shape {tuple(image.shape)} for regions sized for "
                             f"{self.regions['image'].shape}: make one SharedMemoryTensors per request shape")
        self._shm.set_shared_memory_region(self.regions["image"].handle, [np.ascontiguousarray(image, np.float32)])
        self._client.infer(model, [self._input, self._target], outputs=self._outputs, **request)
        return {name: self._shm.get_contents_as_numpy(region.handle, region.dtype, region.shape).copy()
                for name, region in self.regions.items() if name != "image"}

    def close(self) -> None:
        for region in self.regions.values():
            try:
                self._client.unregister_system_shared_memory(region.name)
            except Exception:  # the server may be gone already; the region is ours to remove either way
                pass
            self._shm.destroy_shared_memory_region(region.handle)
        self.regions = {}

    def __enter__(self) -> "SharedMemoryTensors":
        return self

    def __exit__(self, *error) -> None:
        self.close()


def tensor_inputs(module, image: np.ndarray, target=None, dtype: str = "FP32") -> list:
    """A tensor model's request for tritonclient ``module`` (``tritonclient.http`` or ``.grpc``): ``image``
    [N,C,H,W] and its targets, -1 per row (the top class) unless given, since every input is required."""
    target = np.full(len(image), -1) if target is None else target
    inputs = [module.InferInput("image", list(image.shape), dtype),
              module.InferInput("target", [len(image), 1], "INT64")]
    inputs[0].set_data_from_numpy(image)
    inputs[1].set_data_from_numpy(np.asarray(target, dtype=np.int64).reshape(-1, 1))
    return inputs
