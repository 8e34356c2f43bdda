"""The model ``salrt serve`` runs inside Triton's Python backend (each model's ``1/model.py`` imports this).

Triton's dynamic batcher hands ``execute`` several requests at once. Each is read and checked alone, so a
bad request gets its own error response; the good ones run as one batch and their rows are split back.
Two model kinds share this class (the ``model_kind`` parameter of config.pbtxt):
- "tensor": the artifact's own contract, preprocessed ``image`` float32, ``target`` int64 and the task's
  inputs (segmentation's ``region``, detection's ``box``);
- "image": ``image_bytes`` (an encoded JPEG/PNG per row), preprocessed here as the artifact says, the same
  target and task inputs (a region at the model's input size: the client resizes and crops its mask as
  ``salrt.images.region_mask`` does), and ``saliency`` returned as uint8 0-255.
A request whose region turns out empty at the logits' grid gets its own error; its batch's others their maps.
"""
from __future__ import annotations

import io
import json
import time

import numpy as np
import torch

# Only inside Triton's Python-backend stub; importing this module elsewhere is an error on purpose.
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from ..errors import SalrtError
from ..graph.io import names
from ..images import decode, mode_for
from ..runtime import load
from .repository import IMAGE, TIMING, image_saliency


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.model_kind = parameters["model_kind"]
        self.explainer = load(parameters["artifact"], backend=parameters["backend"], device=parameters["device"],
                              digest=parameters.get("digest") or None)
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests: list) -> list:
        laps = _Laps()
        checked = [self._checked(request) for request in requests]
        good = [(inputs, self._wanted(request)) for request, inputs in zip(requests, checked)
                if not isinstance(inputs, Exception)]
        laps.lap("check")
        try:
            produced = self._explain(good) if good else {}
            laps.lap("explain")
            rows = iter(self._rows(produced, good))
            laps.lap("outputs")
        except Exception as err:  # not one request's fault: each request of this batch gets the reason
            return [_error_response(inputs if isinstance(inputs, Exception) else err) for inputs in checked]
        responses = [_error_response(inputs) if isinstance(inputs, Exception) else _response(next(rows))
                     for inputs in checked]
        laps.lap("respond")
        for request in requests:
            if _wants_timing(request):
                laps.log(request)
        return responses

    def _wanted(self, request) -> list[str]:
        """The outputs a request asked for (KServe v2 ``outputs``), in the model's order; all when it names none."""
        asked = set(request.requested_output_names() or ())
        return [name for name in self.output_names if name in asked] or list(self.output_names)

    def _checked(self, request):
        """The graph's inputs of one request (image batch, targets, the task's inputs), checked as
        ``Explainer.explain`` checks them; or the InputError. Optional inputs a request leaves out are None."""
        try:
            given = {name: _tensor(request, name) for name in names(self.explainer.inputs)[1:]}
            if self.model_kind == IMAGE:
                encoded = pb_utils.get_input_tensor_by_name(request, "image_bytes").as_numpy().reshape(-1)
                mode = mode_for(self.explainer.input_shape[0])
                images = [decode(io.BytesIO(bytes(item)), f"image_bytes row {row}", mode)
                          for row, item in enumerate(encoded)]
            else:
                images = _tensor(request, "image")
            target = given.pop("target")
            return self.explainer.checked_inputs(images, None if target is None else target.reshape(-1), **given)
        except SalrtError as err:
            return err

    def _explain(self, requests: list[tuple[tuple[torch.Tensor, ...], list[str]]]) -> dict:
        """The requests' rows run as one batch: every output, as torch tensors (the image model's saliency as
        uint8 if anyone asked for it)."""
        # a lone request (every request at concurrency 1) runs as it came: torch.cat would copy it
        columns = requests[0][0] if len(requests) == 1 else [torch.cat(parts) for parts in
                                                              zip(*(inputs for inputs, _ in requests))]
        # _checked checked each request; an empty region is refused per request, in _rows
        produced = self.explainer.explain_checked(*columns, refuse=False).outputs
        wanted = {name for _, names in requests for name in names}
        if self.model_kind == IMAGE and "saliency" in wanted:
            produced = {**produced, "saliency": image_saliency(produced["grad"])}
        return produced

    def _rows(self, produced: dict, requests: list) -> list:
        """Per request, a dict of the numpy outputs it asked for (split back by row counts: an output nobody
        asked for, e.g. grad, is neither converted nor copied), or the InputError its rows' outputs call for."""
        counts = [len(inputs[0]) for inputs, _ in requests]
        parts = {name: tensor.split(counts) for name, tensor in produced.items()}
        rows = []
        for row, (inputs, wanted) in enumerate(requests):
            own = {name: part[row] for name, part in parts.items()}
            error = self.explainer.refusal(own, inputs[2:])
            rows.append(error or {name: own[name].cpu().numpy() for name in wanted})
        return rows


class _Laps:
    """Wall time of execute's phases, logged for a request that sets the ``TIMING`` parameter (Triton's own
    statistics see only execute as a whole; this Python backend's responses carry no parameters)."""

    def __init__(self):
        # wall clock too: a client on the same host sees how long a request took to reach execute and back
        self.entered_ns, self.last, self.us = time.time_ns(), time.perf_counter(), {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.us[f"salrt_{phase}_us"] = round((now - self.last) * 1e6)
        self.last = now

    def log(self, request) -> None:
        # the stub's intra-op threads too: a count other than the in-process one changes compute time
        fields = {**self.us, "salrt_entered_ns": self.entered_ns, "salrt_left_ns": time.time_ns(),
                  "salrt_torch_threads": torch.get_num_threads()}
        pb_utils.Logger.log_info(" ".join([TIMING, request.request_id()] + [f"{k}={v}" for k, v in fields.items()]))


def _wants_timing(request) -> bool:
    return bool(json.loads(request.parameters() or "{}").get(TIMING))


def _tensor(request, name: str):
    """An input of the request as a torch tensor, None if the request leaves it out."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else torch.from_numpy(tensor.as_numpy())


def _response(row):
    if isinstance(row, Exception):
        return _error_response(row)
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in row.items()])


def _error_response(err: Exception):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
