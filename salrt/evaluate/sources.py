"""Where an evaluation's model and maps come from: a model name, run eagerly, or an artifact directory, whose
maps come from its graph through the runtime while its model is rebuilt in PyTorch to score them."""
from __future__ import annotations

import torch

from ..errors import InputError
from ..graph import METHODS, Method
from ..models import ClassifierSpec, is_model_name, load_model
from ..runtime import Explainer, load, rebuilt_spec

SAME_MODEL_TOLERANCE = 1e-3  # relative L2 of an artifact's probabilities to its model's in PyTorch (float32: ~1e-6)


def resolve(source, methods, weights, backend, device) -> tuple[ClassifierSpec, Explainer | None, list[Method]]:
    """(the model in PyTorch, the artifact's explainer or None, the methods to score)."""
    if is_model_name(source):
        return load_model(source, weights), None, list(methods or [Method(name) for name in METHODS])
    artifact = load(source, backend, device, method=methods[0] if methods and len(methods) == 1 else None)
    if methods and len(methods) > 1:
        raise InputError(f"{source} computes one method, {artifact.manifest['method']['name']}: an artifact is "
                         f"scored with its own method only; give a model name to compare several")
    return _rebuilt_model(source, artifact), artifact, [Method.of(artifact.manifest)]


def _rebuilt_model(source, artifact: Explainer) -> ClassifierSpec:
    """The artifact's model in PyTorch, from the name and weights its manifest records: the artifact's weights
    are frozen into its graph, and scoring and the randomized copies need the model itself."""
    name, artifact_weights = artifact.manifest["model"], artifact.manifest["weights"]
    try:
        if artifact_weights == "custom" or not is_model_name(name):
            raise InputError("a custom module")
        return rebuilt_spec(artifact.manifest)
    except InputError as err:
        raise InputError(f"{source}: scoring runs the artifact's model in PyTorch, and {name!r} with weights "
                         f"{artifact_weights!r} cannot be rebuilt here ({err})") from None


def artifact_maps(artifact: Explainer, batch, targets, probabilities) -> tuple[torch.Tensor, str]:
    """The artifact's maps for ``targets``, once its logits are shown to be those of the model that scores them."""
    explanation = artifact.explain(batch, targets)
    error = float((explanation.logits.softmax(1) - probabilities).norm() / probabilities.norm())
    if error > SAME_MODEL_TOLERANCE:
        raise InputError(f"{artifact.manifest['model']} in PyTorch (weights {artifact.manifest['weights']!r}) is not "
                         f"the model the artifact holds (probabilities differ by {error:.1e} relative L2): export "
                         f"it again from these weights")
    return explanation.saliency, explanation.backend
