"""The tensor contract every saliency graph keeps, in every format: the one description of its inputs and
outputs (name, dtype, shape, in order) that the manifest carries and everything else reads.

Shapes are written with ``N`` (the batch, dynamic) and the model's sizes ``C`` (channels), ``H``, ``W``,
``K`` (classes), for the CAM family ``h`` and ``w`` (its first layer's grid), for segmentation ``Ho`` and
``Wo`` (the grid of the model's logits) and for detection ``Q`` (queries) and ``L`` (logits per query: K, or
K + 1 with a "no object" class last). ``contract`` makes them concrete for one model (N stays symbolic);
the manifest stores that concrete form, so runtimes (Python, C++, Triton configs) read a model's sizes from it and restate nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

BATCH = "N"


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple
    note: str = ""
    default: Optional[int] = None  # an input a runtime may fill in when the caller leaves it out
    range: Optional[tuple] = None

    def concrete(self, sizes: dict) -> dict:
        """The manifest's form: a dict with the model's sizes in the shape (N stays symbolic)."""
        entry = {"name": self.name, "dtype": self.dtype, "shape": [sizes.get(d, d) for d in self.shape]}
        entry.update({key: value for key, value in (("note", self.note), ("default", self.default),
                                                     ("range", self.range and list(self.range))) if value is not None
                      and value != ""})
        return entry


INPUTS = (Tensor("image", "float32", (BATCH, "C", "H", "W"), "preprocessed: resize, center crop, mean/std"),
          Tensor("target", "int64", (BATCH,), "the class to explain; negative = the top class (segmentation: "
                                              "the most predicted, background aside)", default=-1))
TASK_INPUTS = {t.name: t for t in (
    Tensor("region", "float32", (BATCH, "H", "W"), "segmentation: the pixels whose class logits are summed (1 in, "
                                                   "0 out); a negative value = those predicted as the class",
           default=-1),
    Tensor("box", "float32", (BATCH, 4), "detection: x0, y0, x1, y1 in input pixels; the query whose predicted box "
                                         "overlaps it most is explained; negative = the top detection", default=-1),
    Tensor("query", "int64", (BATCH,), "detection: the query to explain, by index (ranked detections); negative = "
                                       "the one the box, the class or the score picks", default=-1),
)}
BASE_INPUTS = tuple(t.name for t in INPUTS)
OUTPUTS = {t.name: t for t in (
    Tensor("logits", "float32", (BATCH, "K"), "a classifier's logits"),
    Tensor("used_target", "int64", (BATCH,), "the class explained"),
    Tensor("saliency", "float32", (BATCH, "H", "W"), "max over channels of |attribution|, min-max normalized; "
                                                      "a constant map is all zeros", range=(0, 1)),
    Tensor("grad", "float32", (BATCH, "C", "H", "W"), "the attribution: the input gradient for the saliency method; "
                                                      "for the CAM family the upsampled map in every channel"),
    Tensor("delta", "float32", (BATCH,), "integrated_gradients: sum of attributions - (F(x) - F(baseline))"),
    Tensor("cam", "float32", (BATCH, "h", "w"), "the CAM family: the (first) layer's map after the ReLU, before "
                                                "normalization and upsampling"),
    Tensor("used_region", "float32", (BATCH, "Ho", "Wo"), "segmentation: the region explained, at the logits' grid"),
    Tensor("used_query", "int64", (BATCH,), "detection: the query explained"),
    Tensor("used_box", "float32", (BATCH, 4), "detection: the explained query's predicted box, x0, y0, x1, y1 in "
                                              "input pixels"),
    Tensor("score", "float32", (BATCH,), "segmentation and detection: the explained scalar (the class's logits "
                                         "summed over the region; the query's class logit)"),
)}
DENSE_LOGITS = Tensor("logits", "float32", (BATCH, "K", "Ho", "Wo"), "segmentation: per-pixel logits")
QUERY_LOGITS = Tensor("logits", "float32", (BATCH, "Q", "L"), "detection: per-query logits")
BASE_OUTPUTS = ("logits", "used_target", "saliency", "grad")  # every method's; methods may add others after them


def contract(input_shape: Sequence[int], classes: int, outputs: Sequence[str] = BASE_OUTPUTS,
             layer_grid: Sequence[int] = (), task_inputs: Sequence[str] = (), logits: Tensor = OUTPUTS["logits"],
             output_grid: Sequence[int] = ()) -> dict:
    """{"inputs": [...], "outputs": [...]} of a model taking [N, *input_shape] images with ``classes`` classes
    (``layer_grid``: (h, w) of a CAM method's first layer; ``task_inputs``: a task's inputs after image and
    target; ``logits``: the task's logits tensor, ``output_grid`` its sizes after N and K: (Ho, Wo) or (Q, L))."""
    channels, height, width = (int(size) for size in input_shape)
    sizes = {"C": channels, "H": height, "W": width, "K": int(classes), **dict(zip("hw", map(int, layer_grid))),
             **dict(zip([d for d in logits.shape[1:] if d != "K"], map(int, output_grid)))}
    tensors = {**OUTPUTS, "logits": logits}
    return {"inputs": [t.concrete(sizes) for t in (*INPUTS, *(TASK_INPUTS[name] for name in task_inputs))],
            "outputs": [tensors[name].concrete(sizes) for name in outputs]}


def input_specs(image_shape: Sequence[int], inputs: Sequence[str] = BASE_INPUTS) -> list[tuple[tuple, str]]:
    """(shape of one batch item, dtype) of each named input, for images of ``image_shape`` (C, H, W)."""
    sizes = dict(zip("CHW", as_image_shape(image_shape)))
    tensors = {t.name: t for t in (*INPUTS, *TASK_INPUTS.values())}
    return [(tuple(sizes.get(d, d) for d in tensors[name].shape[1:]), tensors[name].dtype) for name in inputs]


def contract_of(manifest: dict) -> dict:
    """The concrete contract of an artifact's manifest. Manifests written before models had their own channel
    count stored ``["N", 3, "H", "W"]``-style shapes; their sizes come from ``input_size`` and ``categories``."""
    height, width = manifest["input_size"]
    sizes = {"H": height, "W": width, "K": len(manifest["categories"]), "C": 3}

    def concrete(entries: list[dict]) -> list[dict]:
        return [{**io, "shape": [sizes.get(d, d) for d in io["shape"]]} for io in entries]
    return {"inputs": concrete(manifest["inputs"]), "outputs": concrete(manifest["outputs"])}


def as_image_shape(shape) -> tuple[int, int, int]:
    """(C, H, W) from (C, H, W), (H, W) or an int (the sizes of salrt < 0.2's square RGB-only API: 3 channels)."""
    if isinstance(shape, int):
        return (3, shape, shape)
    shape = tuple(int(size) for size in shape)
    return (3, *shape) if len(shape) == 2 else shape


def names(entries: list[dict]) -> list[str]:
    return [io["name"] for io in entries]


def image_shape(manifest: dict) -> tuple[int, int, int]:
    """(C, H, W) of one image, from a manifest (or a description about to become one)."""
    image = next(io for io in contract_of(manifest)["inputs"] if io["name"] == "image")
    return tuple(image["shape"][1:])


def outputs_of(manifest: dict) -> list[str]:
    """The artifact's output names, in the order its graphs return them."""
    return names(manifest["outputs"])
