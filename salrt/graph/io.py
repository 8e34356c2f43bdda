"""The tensor contract every saliency graph keeps, in every format: names, dtypes, shapes, in order."""

INPUTS = [{"name": "image", "dtype": "float32", "shape": ["N", 3, "H", "W"]},
          {"name": "target", "dtype": "int64", "shape": ["N"], "note": "negative = argmax"}]
OUTPUTS = [{"name": "logits", "dtype": "float32", "shape": ["N", "K"]},
           {"name": "used_target", "dtype": "int64", "shape": ["N"]},
           {"name": "saliency", "dtype": "float32", "shape": ["N", "H", "W"], "range": [0, 1]},
           {"name": "grad", "dtype": "float32", "shape": ["N", 3, "H", "W"],
            "note": "the attribution: the input gradient for the saliency method"}]
# integrated_gradients adds the completeness error: sum of attributions - (F(x) - F(baseline)) per image
DELTA = {"name": "delta", "dtype": "float32", "shape": ["N"]}
INPUT_NAMES = [io["name"] for io in INPUTS]
OUTPUT_NAMES = [io["name"] for io in OUTPUTS]


def outputs_named(names) -> list[dict]:
    """The output descriptions of a method's outputs, in its order."""
    known = {io["name"]: io for io in OUTPUTS + [DELTA]}
    return [known[name] for name in names]
