"""What a graph explains, per task: the scalar whose gradient every method takes, and the inputs and outputs
that come with it. A task wraps a method's function (``methods``) without the method knowing.

- ``classification``: the model returns logits [N,K]; the score is the target class's logit (a negative
  target: the top class).
- ``segmentation``: the model returns dense logits [N,K,h,w] (any h, w: SegFormer's are a quarter of the
  input's). The score is the sum of the class's logits over a region, pytorch-grad-cam's
  ``SemanticSegmentationTarget``. The ``region`` input [N,H,W] (float; 0 outside, 1 inside; other values
  weigh pixels) is at the input size; the graph resizes it to h x w as ``F.interpolate(mode="nearest")`` does.
  A negative value anywhere in an image's region asks for the default region: the pixels the model predicts
  as the class. A negative target asks for the default class: the class predicted at most pixels, the
  background left out unless nothing else is predicted. The background is the class named "background" or
  "__background__" (torchvision's VOC models, many Hugging Face configs); a model without one (ADE20K's 150
  classes, a U-Net's numbered classes) has none to leave out. Outputs add ``used_region`` (what was explained, at
  h x w: an empty one means a zero map, which ``salrt.load(...).explain`` refuses) and ``score``.
- ``detection`` (set-prediction detectors: DETR and its relatives, YOLOS): the model returns logits
  [N,Q,L] and boxes [N,Q,4] (normalized cx, cy, w, h, as Hugging Face's ``pred_boxes``), which salrt packs as
  one [N,Q,L+4] tensor (``models.spec.logits_of``). The score is one query's class logit, pytorch-grad-cam's
  ``FasterRCNNBoxScoreTarget`` for a set predictor: the ``query`` input's (an index: ranked detections), else
  the query whose box overlaps the ``box`` input [N,4] (x0, y0, x1, y1 in input pixels) most, else the query
  most probably of the target class, else the most
  probable detection (probabilities: softmax with the last logit "no object", DETR's and YOLOS's heads, else
  sigmoid). Outputs add ``used_query``, ``used_box`` (its predicted box, corners in pixels) and ``score``.

The region (query) and class come from the clean image. Every method's first call of ``forward`` is on the clean image
(its logits, or the input gradient's forward); the task reads its dense logits there, and later calls (noisy
copies, integration points, the baseline) are scored with that same class and region. The logits a method sees
are then [B,1], each image's score (a baseline of one image: [N,1], one score per image explained).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from ..errors import ArtifactError
from ..models.spec import check_task
from .io import BASE_INPUTS, DENSE_LOGITS, OUTPUTS, QUERY_LOGITS, Tensor

BACKGROUND_NAMES = ("background", "__background__")


@dataclasses.dataclass(frozen=True)
class Task:
    """A task and its parameters, as the manifest records them."""
    name: str = "classification"
    background: int = -1  # segmentation: the background class (-1: none)
    no_object: int = 0    # detection: 1 where the last logit of each query is "no object" (DETR, YOLOS)

    @property
    def spec(self) -> "TaskSpec":
        return TASKS[self.name]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The graph's inputs, in order: image, target, then the task's."""
        return BASE_INPUTS + self.spec.inputs

    def parameters(self) -> dict:
        return {"name": self.name, **{key: getattr(self, key) for key in self.spec.parameters}}

    @classmethod
    def of(cls, manifest: dict) -> "Task":
        """The task an artifact's manifest records (classification for artifacts from before tasks); an
        ArtifactError for an entry this salrt does not know."""
        entry = manifest.get("task", {"name": "classification"})
        known = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(entry, dict) or entry.get("name") not in TASKS or not set(entry) <= known \
                or not all(isinstance(entry.get(key, -1), int) for key in known - {"name"}):
            raise ArtifactError(f"manifest.json is corrupt or from a newer salrt: task {entry!r}; this salrt "
                                f"explains {', '.join(TASKS)}")
        return cls(**entry)

    @classmethod
    def for_model(cls, name: str, categories: Sequence[str], output_grid: Sequence[int] = ()) -> "Task":
        """Task ``name`` for a model with these class names and logits (segmentation: its background class found
        by name; detection: a "no object" logit where there is one more logit per query than classes)."""
        check_task(name)
        background = [i for i, category in enumerate(categories) if category.strip().lower() in BACKGROUND_NAMES]
        found = {"background": background[0] if background else -1,
                 "no_object": int(len(output_grid) == 2 and output_grid[1] == len(categories) + 1)}
        return cls(name, **{key: found[key] for key in TASKS[name].parameters})


def _classification(run: Callable, task: Task, logit_positions: Sequence[int]) -> Callable:
    return run


def default_class(dense: torch.Tensor, background: int) -> torch.Tensor:
    """[N]: each image's most predicted class; the background only where nothing else is predicted."""
    classes = torch.arange(dense.shape[1], device=dense.device)
    counts = (dense.argmax(1).unsqueeze(1) == classes.reshape(1, -1, 1, 1)).sum((2, 3)).to(dense.dtype)
    if background >= 0:  # below any class predicted at one pixel or more, above those predicted nowhere
        counts = torch.where(classes == background, torch.full_like(counts, 0.5), counts)
    return counts.argmax(1)


def region_at(dense: torch.Tensor, used: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """[N,h,w]: the region, resized to the dense logits' grid (nearest), or where an image's region holds a
    negative value, the pixels predicted as its class."""
    given = torch.nn.functional.interpolate(region.unsqueeze(1).to(dense.dtype), size=tuple(dense.shape[2:]),
                                            mode="nearest").squeeze(1)
    predicted = (dense.argmax(1) == used.reshape(-1, 1, 1)).to(dense.dtype)
    wants_default = region.flatten(1).amin(1).reshape(-1, 1, 1) < 0
    return torch.where(wants_default, predicted, given)


def _scored(choose: Callable, scores: Callable, extras: Sequence[str]) -> Callable:
    """A task's wrap: the method's ``run`` over a forward whose logits become one column, each image's score.
    ``choose(clean logits, image, target, *task inputs)`` -> {"logits", "used", *extras} on the first call (the
    clean image); ``scores(logits, chosen)`` -> [B,1] on every call. The outputs: the clean logits and the class
    for the method's first two, the method's others, the extras, the score."""
    def wrap(run: Callable, task: Task, logit_positions: Sequence[int]) -> Callable:
        def explain(forward, image, target, *inputs):
            chosen = {}

            def score(logits: torch.Tensor) -> torch.Tensor:
                if not chosen:  # the first call: the clean image (see the module's docstring)
                    chosen.update(choose(task, logits.detach(), image, target, *inputs))
                return scores(logits, chosen)

            def scored(x):
                outputs = forward(x)
                if isinstance(outputs, torch.Tensor):
                    return score(outputs)
                outputs = list(outputs)
                for position in logit_positions:
                    outputs[position] = score(outputs[position])
                return tuple(outputs)
            values, _, *rest = run(scored, image, torch.zeros_like(target))
            return (chosen["logits"], chosen["used"], *rest, *(chosen[name] for name in extras), values[:, 0])
        return explain
    return wrap


def _choose_region(task: Task, dense: torch.Tensor, image, target, region) -> dict:
    used = torch.where(target < 0, default_class(dense, task.background), target)
    return {"logits": dense, "used": used, "region": region_at(dense, used, region)}


def _region_scores(dense: torch.Tensor, chosen: dict) -> torch.Tensor:
    """[B,1]: the class's logits summed over the region, for dense logits [B,K,h,w] of N images' samples
    (B = N x samples, each image's together) or of one image that every image compares with (integrated
    gradients' baseline: a batch of a fixed 1, scored with each image's class and region: [N,1])."""
    used, region = chosen["used"], chosen["region"]
    if _one_for_all(dense):
        return (dense[0].index_select(0, used) * region).sum((1, 2)).unsqueeze(1)
    per_image = dense.reshape(used.shape[0], -1, *dense.shape[1:])  # [N, samples, K, h, w]
    index = used.reshape(-1, 1, 1, 1, 1).expand(-1, per_image.shape[1], 1, *dense.shape[2:])
    picked = per_image.gather(2, index).squeeze(2)
    return (picked * region.unsqueeze(1)).sum((2, 3)).reshape(-1, 1)


def _one_for_all(logits: torch.Tensor) -> bool:
    """A batch of a fixed single image (integrated gradients' baseline) rather than N images' samples."""
    return isinstance(logits.shape[0], int) and logits.shape[0] == 1


BOX_VALUES = 4  # a detector's packed output ends with each query's box: cx, cy, w, h in [0, 1] of the input


def box_corners(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """[..., 4] normalized (cx, cy, w, h) as (x0, y0, x1, y1) in pixels of an input of ``size`` (H, W)."""
    cx, cy, w, h = boxes.unbind(-1)
    height, width = size
    return torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], -1)


def overlaps(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """[N,Q]: intersection over union of each image's query boxes [N,Q,4] with its box [N,4] (corners)."""
    box = box.unsqueeze(1)
    low, high = torch.maximum(boxes[..., :2], box[..., :2]), torch.minimum(boxes[..., 2:], box[..., 2:])
    intersection = (high - low).clamp_min(0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp_min(0).prod(-1) + (box[..., 2:] - box[..., :2]).prod(-1)
    return intersection / (area - intersection).clamp_min(torch.finfo(boxes.dtype).tiny)


def class_probabilities(logits: torch.Tensor, no_object: int) -> torch.Tensor:
    """[N,Q,K]: each query's probability of each class: softmax with a "no object" class (DETR, YOLOS; left out
    here), else sigmoid (Deformable and Conditional DETR: focal-loss heads)."""
    return logits.softmax(-1)[..., :-1] if no_object else logits.sigmoid()


def _choose_detection(task: Task, packed: torch.Tensor, image, target, box, query) -> dict:
    """The query and class explained: the query given, else the query whose box overlaps the given box most,
    else the query most probably of the given class, else the most probable detection of any class; the class
    given, else that query's most probable one."""
    logits, boxes = packed[..., :-BOX_VALUES], box_corners(packed[..., -BOX_VALUES:], image.shape[2:])
    probabilities = class_probabilities(logits, task.no_object)
    queries, classes = probabilities.shape[1:]
    given_box, given_class = box.amin(1) >= 0, target >= 0
    of_class = probabilities.gather(2, target.clamp_min(0).reshape(-1, 1, 1).expand(-1, queries, 1)).squeeze(2)
    top = probabilities.flatten(1).argmax(1)
    chosen = torch.where(given_box, overlaps(boxes, box).argmax(1),
                         torch.where(given_class, of_class.argmax(1), top // classes))
    query = torch.where(query >= 0, query, chosen)
    # the top detection's class is its query's most probable one too: one rule for every case
    at_query = probabilities.gather(1, query.reshape(-1, 1, 1).expand(-1, 1, classes)).squeeze(1).argmax(1)
    used = torch.where(given_class, target, at_query)
    picked = boxes.gather(1, query.reshape(-1, 1, 1).expand(-1, 1, BOX_VALUES)).squeeze(1)
    return {"logits": logits, "used": used, "query": query, "box": picked}


def ranked_detections(logits: torch.Tensor, no_object: int, target: torch.Tensor, count: int) -> torch.Tensor:
    """[N, count]: each image's queries from the most probable detection down (of the target class where one
    is given, else of any class), as ``_choose_detection`` picks the first of them by default."""
    probabilities = class_probabilities(logits, no_object)
    of_class = probabilities.gather(2, target.clamp_min(0).reshape(-1, 1, 1).expand(-1, probabilities.shape[1], 1))
    ranked_by = torch.where(target.reshape(-1, 1) >= 0, of_class.squeeze(2), probabilities.amax(2))
    return ranked_by.topk(count, dim=1).indices


def _query_scores(packed: torch.Tensor, chosen: dict) -> torch.Tensor:
    """[B,1]: the chosen query's class logit, for packed outputs [B,Q,L+4] (as ``_region_scores`` batches)."""
    used, query = chosen["used"], chosen["query"]
    logits = packed[..., :-BOX_VALUES]
    if _one_for_all(logits):
        return logits[0][query, used].unsqueeze(1)
    per_image = logits.reshape(used.shape[0], -1, *logits.shape[1:])  # [N, samples, Q, L]
    at_query = per_image.gather(2, query.reshape(-1, 1, 1, 1).expand(-1, per_image.shape[1], 1, logits.shape[2]))
    return at_query.squeeze(2).gather(2, used.reshape(-1, 1, 1).expand(-1, per_image.shape[1], 1)).reshape(-1, 1)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: the graph inputs after ``image`` and ``target``, the outputs after the method's, its logits
    (``io``: [N,K], [N,K,Ho,Wo], [N,Q,L]) and how it turns a method's function into its own
    (``wrap(run, task, positions of the logits in forward's outputs)``)."""
    name: str
    wrap: Callable[[Callable, Task, Sequence[int]], Callable]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    logits: Tensor = OUTPUTS["logits"]
    parameters: tuple[str, ...] = ()  # the Task fields it uses


TASKS = {spec.name: spec for spec in (
    TaskSpec("classification", _classification),
    TaskSpec("segmentation", _scored(_choose_region, _region_scores, ("region",)), inputs=("region",),
             outputs=("used_region", "score"), logits=DENSE_LOGITS, parameters=("background",)),
    TaskSpec("detection", _scored(_choose_detection, _query_scores, ("query", "box")), inputs=("box", "query"),
             outputs=("used_query", "used_box", "score"), logits=QUERY_LOGITS, parameters=("no_object",)),
)}
