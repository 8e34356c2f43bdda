"""The model ``salrt serve`` runs inside Triton's Python backend (each model's ``1/model.py`` imports this).

Triton's dynamic batcher hands ``execute`` several requests at once. Each is read and checked alone, so a
bad request gets its own error response; the good ones run as one batch and their rows are split back.
Two kinds share this class (the ``kind`` parameter of config.pbtxt):
- "tensor": the artifact's own contract, preprocessed ``image`` float32 and ``target`` int64;
- "image": ``image_bytes`` (an encoded JPEG/PNG per row), preprocessed here as the artifact says, and
  ``saliency`` returned as uint8 0-255.
"""
from __future__ import annotations

import io
import json

import numpy as np
import torch

# Only inside Triton's Python-backend stub; importing this module elsewhere is an error on purpose.
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from ..errors import SalrtError
from ..images import decode, mode_for
from ..runtime import load
from .repository import IMAGE


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.kind = parameters["kind"]
        self.explainer = load(parameters["artifact"], backend=parameters["backend"], device=parameters["device"],
                              digest=parameters.get("digest") or None)
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests: list) -> list:
        checked = [self._checked(request) for request in requests]
        good = [(inputs, self._wanted(request)) for request, inputs in zip(requests, checked)
                if not isinstance(inputs, Exception)]
        try:
            rows = iter(self._explain_rows(good) if good else ())
        except Exception as err:  # not one request's fault: each request of this batch gets the reason
            return [_error_response(inputs if isinstance(inputs, Exception) else err) for inputs in checked]
        return [_error_response(inputs) if isinstance(inputs, Exception) else _response(next(rows))
                for inputs in checked]

    def _wanted(self, request) -> list[str]:
        """The outputs a request asked for (KServe v2 ``outputs``), in the model's order; all when it names none."""
        asked = set(request.requested_output_names() or ())
        return [name for name in self.output_names if name in asked] or list(self.output_names)

    def _checked(self, request):
        """(batch, targets) of one request, checked as ``Explainer.explain`` checks them; or the InputError."""
        try:
            target = pb_utils.get_input_tensor_by_name(request, "target")
            target = None if target is None else torch.from_numpy(target.as_numpy().reshape(-1))
            if self.kind == IMAGE:
                encoded = pb_utils.get_input_tensor_by_name(request, "image_bytes").as_numpy().reshape(-1)
                mode = mode_for(self.explainer.input_shape[0])
                images = [decode(io.BytesIO(bytes(item)), f"image_bytes row {row}", mode)
                          for row, item in enumerate(encoded)]
            else:
                images = torch.from_numpy(pb_utils.get_input_tensor_by_name(request, "image").as_numpy())
            return self.explainer.checked_inputs(images, target)
        except SalrtError as err:
            return err

    def _explain_rows(self, requests: list[tuple[tuple[torch.Tensor, torch.Tensor], list[str]]]) -> list[dict]:
        """One dict of numpy outputs per request, only those it asked for: the requests run as one batch, split
        back by row counts (an output nobody asked for, e.g. grad, is neither converted nor copied)."""
        batch = torch.cat([images for (images, _), _ in requests])
        targets = torch.cat([target for (_, target), _ in requests])
        produced = self.explainer.explain(batch, targets).outputs
        wanted = {name for _, names in requests for name in names}
        if self.kind == IMAGE and "saliency" in wanted:
            produced = {**produced, "saliency": _as_uint8(produced["saliency"])}
        parts = {name: produced[name].split([len(images) for (images, _), _ in requests]) for name in wanted}
        return [{name: parts[name][row].cpu().numpy() for name in names} for row, (_, names) in enumerate(requests)]


def _response(row: dict):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in row.items()])


def _as_uint8(saliency: torch.Tensor) -> torch.Tensor:
    return (saliency * 255).round().to(torch.uint8)


def _error_response(err: Exception):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
