"""A client of ``salrt serve`` (standard ``tritonclient``): photos in, the same ``Explanation`` as in-process."""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError, SalrtError
from ..models import Preprocessing
from ..runtime import Explanation


_OUTPUTS = ("logits", "used_target", "saliency")  # what explain() returns; the server sends nothing else
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
        parameters = self._config()["parameters"]
        self.preprocessing = Preprocessing(**json.loads(parameters["preprocessing"]["string_value"]))
        self.categories: list[str] = json.loads(parameters["categories"]["string_value"])

    def explain(self, images: Sequence[bytes], target: Optional[int] = None) -> Explanation:
        """``images``: encoded JPEG/PNG bytes. The map comes back as uint8, so it is within 1/510 of the
        in-process float map; the server's image model returns no gradient (``grad`` is None)."""
        module = self._module
        inputs = [module.InferInput("image_bytes", [len(images), 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[bytes(image)] for image in images], dtype=np.object_))
        if target is not None:
            inputs.append(module.InferInput("target", [len(images), 1], "INT64"))
            inputs[1].set_data_from_numpy(np.full((len(images), 1), target, dtype=np.int64))
        wanted = [module.InferRequestedOutput(name) for name in _OUTPUTS]  # no more (http: binary by default)
        result = self._call(lambda: self._client.infer(self.model, inputs, outputs=wanted))
        # copies (a few KB): tritonclient's arrays are read-only views of the response
        outputs = {"logits": torch.from_numpy(result.as_numpy("logits").copy()),
                   "used_target": torch.from_numpy(result.as_numpy("used_target").reshape(-1).copy()),
                   "saliency": torch.tensor(result.as_numpy("saliency"), dtype=torch.float32) / 255}
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
        self._client.infer(model, [self._input], outputs=self._outputs, **request)
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
