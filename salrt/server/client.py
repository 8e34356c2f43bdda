"""A client of ``salrt serve`` (standard ``tritonclient``): photos in, the same ``Explanation`` as in-process."""
from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import InputError, SalrtError
from ..models import Preprocessing
from ..runtime import Explanation


_OUTPUTS = ("logits", "used_target", "saliency")  # what explain() returns; the server sends nothing else


class RemoteExplainer:
    """Explains encoded photos on a ``salrt serve`` server through its ``<model>_image`` model."""

    def __init__(self, url: str, model: str):
        try:
            import tritonclient.http as http
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise InputError("--server needs tritonclient: pip install 'salrt[serve]'") from None
        self._http, self._error = http, InferenceServerException
        self.url, self.model = url.removeprefix("http://"), f"{model}_image"
        self._client = http.InferenceServerClient(self.url)
        parameters = self._call(lambda: self._client.get_model_config(self.model))["parameters"]
        self.preprocessing = Preprocessing(**json.loads(parameters["preprocessing"]["string_value"]))
        self.categories: list[str] = json.loads(parameters["categories"]["string_value"])

    def explain(self, images: Sequence[bytes], target: Optional[int] = None) -> Explanation:
        """``images``: encoded JPEG/PNG bytes. The map comes back as uint8, so it is within 1/510 of the
        in-process float map; the server's image model returns no gradient (``grad`` is None)."""
        inputs = [self._http.InferInput("image_bytes", [len(images), 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[bytes(image)] for image in images], dtype=np.object_))
        if target is not None:
            inputs.append(self._http.InferInput("target", [len(images), 1], "INT64"))
            inputs[1].set_data_from_numpy(np.full((len(images), 1), target, dtype=np.int64))
        wanted = [self._http.InferRequestedOutput(name, binary_data=True) for name in _OUTPUTS]  # no more
        result = self._call(lambda: self._client.infer(self.model, inputs, outputs=wanted))
        outputs = {"logits": torch.from_numpy(result.as_numpy("logits")),
                   "used_target": torch.from_numpy(result.as_numpy("used_target").reshape(-1)),
                   "saliency": torch.from_numpy(result.as_numpy("saliency")).float() / 255}
        return Explanation(outputs, categories=self.categories, backend=f"triton {self.url}")

    def _call(self, request):
        try:
            return request()
        except self._error as err:
            raise SalrtError(f"server {self.url}: {err.message()}") from None
        except (ConnectionError, OSError) as err:
            raise SalrtError(f"no salrt server answers at {self.url} ({err.__class__.__name__}); "
                             "start one with `salrt serve ARTIFACT_DIR`") from None

