"""Detection (set-prediction detectors): the graph explains one query's class logit, the query chosen by its box's
overlap with a given box, by class or as the top detection; against float64 autograd of that same logit with the
query chosen by a rule written here, on random weights and inputs the export never saw, image by image."""
import copy

import pytest
import torch

import salrt
from salrt.errors import InputError
from salrt.graph import Method

SIZE = 64
CLASSES = ["cat", "dog", "car"]


class TinyDetector(torch.nn.Module):
    """A user's set predictor: a CNN, then Q queries attending to its features; logits [N,Q,K] (sigmoid
    head, no "no object" class) and boxes [N,Q,4] (cx, cy, w, h in [0, 1]), returned as a pair."""

    def __init__(self, queries: int = 6, classes: int = 3):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.queries = torch.nn.Parameter(torch.randn(queries, 16))
        self.classes, self.boxes = torch.nn.Linear(16, classes), torch.nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.features(x).flatten(2).transpose(1, 2)  # [N, h*w, 16]
        attention = (self.queries @ tokens.transpose(1, 2)).softmax(-1)  # [N, Q, h*w]
        found = attention @ tokens
        return self.classes(found), self.boxes(found).sigmoid()


def hf_detector(kind: str, tmp_path_factory):
    """A Hugging Face detector with a tiny config, its weights redrawn so that queries differ, saved and read back
    as a user's directory."""
    import transformers
    from architectures import hf_saved, redrawn
    labels = dict(id2label=dict(enumerate(CLASSES)), label2id={name: i for i, name in enumerate(CLASSES)})
    if kind == "yolos":
        config = transformers.YolosConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, image_size=[SIZE, SIZE], patch_size=16,
                                          num_detection_tokens=6, **labels)
        model, processor = transformers.YolosForObjectDetection, transformers.YolosImageProcessor
    else:
        config = transformers.DetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, num_queries=6, d_model=16, encoder_layers=1,
            decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
            decoder_ffn_dim=32, backbone_config=transformers.ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"]), **labels)
        model, processor = transformers.DetrForObjectDetection, transformers.DetrImageProcessor
    torch.manual_seed(0)
    return hf_saved(redrawn(model(config)), processor(size={"height": SIZE, "width": SIZE}, do_pad=False),
                    tmp_path_factory.mktemp(kind))


@pytest.fixture(scope="module", params=["yolos", "detr", "user"])
def spec(request, tmp_path_factory):
    if request.param == "user":
        torch.manual_seed(0)
        return salrt.models.as_spec(TinyDetector(), categories=CLASSES, image_size=SIZE)
    return hf_detector(request.param, tmp_path_factory)


def packed64(spec, image):
    model = copy.deepcopy(spec.module).double()
    return model, model(image.double())


def reference_choice(spec, packed: torch.Tensor, target, box):
    """The query and class the task states, from float64 outputs: the query whose box overlaps the given box
    most, else the one most probably of the class, else the top detection; probabilities by softmax without
    the last ("no object") logit where there is one more logit than classes, else by sigmoid."""
    logits, boxes = packed[..., :-4], packed[..., -4:]
    no_object = logits.shape[-1] == len(spec.categories) + 1
    probabilities = logits.softmax(-1)[..., :-1] if no_object else logits.sigmoid()
    height, width = spec.input_shape[1:]
    corners = torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1) * \
        torch.tensor([width, height, width, height], dtype=boxes.dtype)
    queries, classes = [], []
    for p, c, t, b in zip(probabilities, corners, target, box):
        if (b >= 0).all():
            low, high = torch.maximum(c[:, :2], b[:2]), torch.minimum(c[:, 2:], b[2:])
            inter = (high - low).clamp_min(0).prod(1)
            iou = inter / ((c[:, 2:] - c[:, :2]).clamp_min(0).prod(1) + (b[2:] - b[:2]).prod() - inter)
            q = int(iou.argmax())
            k = int(t) if t >= 0 else int(p[q].argmax())
        elif t >= 0:
            q, k = int(p[:, t].argmax()), int(t)
        else:
            q, k = divmod(int(p.flatten().argmax()), p.shape[1])
        queries.append(q)
        classes.append(k)
    return torch.tensor(queries), torch.tensor(classes), corners


def drawn_box(packed: torch.Tensor, spec) -> tuple[list, int]:
    """A box drawn around an image's least confident query's predicted box (x0, y0, x1, y1 in input pixels),
    and that query."""
    height, width = spec.input_shape[1:]
    weakest = int(packed[:, :-4].amax(1).argmin())
    cx, cy, w, h = packed[weakest, -4:].tolist()
    return [max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height), min(width, (cx + w / 2) * width),
            min(height, (cy + h / 2) * height)], weakest


def inputs(spec, seed: int, count: int = 3):
    """Images the export never saw: the first with a box drawn around its least confident query's predicted box
    (the overlap must pick that query, not the top one), the second with a class, the third with neither; then
    (``count`` over 3) one with a drawn box and a class, the rest with neither. At the spec's input size."""
    image = torch.randn(count, *spec.input_shape, generator=torch.Generator().manual_seed(seed))
    box = torch.full((count, 4), -1.0)
    with torch.no_grad():
        drawn, weakest = drawn_box(spec.module(image[:1])[0], spec)
        box[0] = torch.tensor(drawn)
        if count > 3:
            box[3] = torch.tensor(drawn_box(spec.module(image[3:4])[0], spec)[0])
    return image, torch.tensor([-1, 2, -1, 0, -1] + [-1] * count)[:count], box, weakest


def test_the_gradient_is_that_of_the_chosen_querys_class_logit(spec):
    image, target, box, weakest = inputs(spec, seed=1)
    result = salrt.load(spec).explain(image, target, box=box)
    model, packed = packed64(spec, image)
    query, used, corners = reference_choice(spec, packed.detach(), target, box)
    assert result.used_query.tolist() == query.tolist() and result.used_target.tolist() == used.tolist()
    assert torch.allclose(result.used_box.double(), corners[torch.arange(3), query], atol=1e-3)
    x = image.double().requires_grad_(True)
    score = model(x)[torch.arange(3), query, used]
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.allclose(result.score.double(), score.detach(), atol=1e-4)
    errors = sorted(float((a.double() - e).norm() / e.norm()) for a, e in zip(result.grad, grad))
    assert errors[1] < 1e-4 and errors[-1] < 1e-2, errors
    assert int(query[0]) == weakest  # the box chose its query, not the top detection


def test_ranked_detections_are_explained_one_by_one(spec):
    """explain_detections: rank r explains each image's r-th most probable query (of the class, if given), its
    gradient that query's class logit, as float64 probabilities rank them; the query input picks one directly."""
    image, *_ = inputs(spec, seed=3)
    model, packed = packed64(spec, image)
    logits = packed.detach()[..., :-4]
    probabilities = logits.softmax(-1)[..., :-1] if logits.shape[-1] == len(CLASSES) + 1 else logits.sigmoid()
    explainer = salrt.load(spec)
    for target in (None, 1):
        ranked_by = probabilities.amax(2) if target is None else probabilities[..., target]
        expected = ranked_by.topk(3, dim=1).indices
        for rank, result in enumerate(explainer.explain_detections(image, 3, target)):
            query = expected[:, rank]
            assert result.used_query.tolist() == query.tolist(), (target, rank)
            used = probabilities[torch.arange(3), query].argmax(1) if target is None else torch.full((3,), target)
            assert result.used_target.tolist() == used.tolist()
            x = image.double().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x)[torch.arange(3), query, used].sum(), x)
            errors = sorted(float((a.double() - e).norm() / e.norm()) for a, e in zip(result.grad, grad))
            assert errors[1] < 1e-4 and errors[-1] < 1e-2, errors
    assert explainer.explain(image, query=[4, 0, 5]).used_query.tolist() == [4, 0, 5]
    with pytest.raises(InputError, match="query must be a query's index below 6"):
        explainer.explain(image, query=6)
    with pytest.raises(InputError, match="must be 1 to 6"):
        explainer.explain_detections(image, 7)


def test_exported_graphs_choose_and_explain_as_eager(tmp_path, tmp_path_factory):
    """DETR: its position embeddings are memoized by shape in transformers, which a symbolic batch cannot be."""
    spec = hf_detector("detr", tmp_path_factory)
    directory = salrt.export(spec, tmp_path / "detector", formats="torchscript,onnx",
                             method=Method("integrated_gradients", steps=4))
    manifest = salrt.load(directory, backend="onnxruntime").manifest
    assert manifest["task"] == {"name": "detection", "no_object": 1}  # DETR's last logit: "no object"
    assert [io["name"] for io in manifest["inputs"]] == ["image", "target", "box", "query"]
    assert manifest["outputs"][0]["shape"] == ["N", 6, 4]
    image, target, box, _ = inputs(spec, seed=2)
    eager = salrt.load(spec, method=Method("integrated_gradients", steps=4)).explain(image, target, box=box)
    for backend in ("torchscript", "onnxruntime"):
        result = salrt.load(directory, backend=backend).explain(image, target, box=box)
        assert result.used_query.tolist() == eager.used_query.tolist(), backend
        assert (result.saliency - eager.saliency).abs().max() < 1e-3, backend
        assert torch.allclose(result.used_box, eager.used_box, atol=1e-4), backend
        chosen = salrt.load(directory, backend=backend).explain(image, target, query=[3, 5, -1])
        assert chosen.used_query.tolist() == [3, 5, int(eager.used_query[2])], backend


@pytest.mark.parametrize("box, message", [
    ([10, 10, 80, 20], "is not a box inside the model's 64x64 input"),
    ([30, 10, 20, 20], "is not a box inside"),
    ([1, 2, 3], "box must be x0, y0, x1, y1"),
])
def test_a_bad_box_is_one_clear_error(box, message):
    torch.manual_seed(0)
    explainer = salrt.load(TinyDetector(), categories=CLASSES, image_size=SIZE)
    with pytest.raises(InputError, match=message):
        explainer.explain(torch.zeros(1, 3, SIZE, SIZE), box=box)


def test_a_classifier_is_not_a_detector_and_a_box_needs_one(lite0):
    with pytest.raises(InputError, match=r"returned a tensor of shape \[1, 1000\]; detection takes"):
        salrt.load(lite0, task="detection")
    with pytest.raises(InputError, match="box: for a detection model"):
        salrt.load(lite0).explain(torch.zeros(1, 3, 224, 224), box=[0, 0, 10, 10])


def test_a_detector_with_non_maximum_suppression_is_refused_with_the_reason():
    import torchvision
    with pytest.raises(InputError, match="fasterrcnn_resnet50_fpn returns detections after non-maximum suppression"):
        salrt.load("fasterrcnn_resnet50_fpn", weights="random")
    detector = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    with pytest.raises(InputError, match="SSD returns detections after non-maximum suppression .*batched_nms"):
        salrt.load(detector, image_size=320)


def test_the_cli_explains_a_box_and_draws_it(tmp_path, photo_files):
    import inspect
    import numpy as np
    import pandas as pd
    from PIL import Image
    from test_cli import salrt_cli
    (tmp_path / "my_detector.py").write_text("import torch\n\n\n" + inspect.getsource(TinyDetector))
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    photo = next(iter(photo_files.values()))
    done = salrt_cli("explain", "my_detector:TinyDetector", "--classes", "classes.txt", "--image-size", str(SIZE),
                     photo, "--box", "8,8,40,40", "--target", "dog", "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    overlay = np.asarray(Image.open(tmp_path / "out" / f"{photo.stem}_overlay.png"))
    assert ((overlay == (0, 255, 255)).all(-1)).sum() > 2 * SIZE  # the explained query's box
    done = salrt_cli("explain", "my_detector:TinyDetector", "--classes", "classes.txt", "--image-size", str(SIZE),
                     photo, "--top-detections", "2", "--out", tmp_path / "ranked", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "detection 2: " in done.stdout
    row = pd.read_parquet(tmp_path / "ranked" / "results.parquet").iloc[0]
    assert [d["files"].tolist() for d in row["detections"]] == \
        [[f"{photo.stem}_det{r}_saliency.png", f"{photo.stem}_det{r}_overlay.png"] for r in (1, 2)]
    assert len({d["query"] for d in row["detections"]}) == 2 and row["detections"][0]["class_name"] == row["class_name"]
    assert all((tmp_path / "ranked" / name).is_file() for name in row["files"])


@pytest.mark.parametrize("kind", ["detr", "user"])
def test_gradcam_is_pytorch_grad_cams_on_the_chosen_querys_class_logit(kind, tmp_path_factory):
    """The CAM family on a detector: pytorch-grad-cam in float64, its target the query and class salrt chose
    (a callable on each image's packed output, as its FasterRCNNBoxScoreTarget is on a box list)."""
    from cam_references import tokens_to_grid
    from pytorch_grad_cam import GradCAM
    from salrt.graph.layers import user_root
    if kind == "user":
        torch.manual_seed(0)
        spec = salrt.models.as_spec(TinyDetector(), categories=CLASSES, image_size=SIZE)
    else:
        spec = hf_detector(kind, tmp_path_factory)
    image, target, box, _ = inputs(spec, seed=4)
    explainer = salrt.load(spec, method=Method("gradcam"))
    result = explainer.explain(image, target, box=box)
    model = copy.deepcopy(spec.module).double().requires_grad_(True)
    tap = explainer.manifest["method"]["taps"][0]  # DETR's: the encoder's image tokens, as the decoder reads them
    reshape = tokens_to_grid(tap["prefix"], tuple(tap["grid"])) if tap["layout"] == "tokens" else None
    layer = user_root(model).get_submodule(tap["path"])
    targets = [lambda packed, q=int(q), k=int(k): packed[q, k] for q, k in zip(result.used_query, result.used_target)]
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        expected = cam(input_tensor=image.double(), targets=targets)
    errors = sorted(float((a.double() - torch.from_numpy(e)).abs().max()) for a, e in zip(result.saliency, expected))
    assert errors[1] < 1e-4 and errors[-1] < 1e-2, errors
    assert all(float(s.std()) > 0 for s in result.saliency)
