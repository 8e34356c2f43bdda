"""The tensor contract every saliency graph keeps, in every format: names, dtypes, shapes, in order."""

INPUTS = [{"name": "image", "dtype": "float32", "shape": ["N", 3, "H", "W"]},
          {"name": "target", "dtype": "int64", "shape": ["N"], "note": "negative = argmax"}]
OUTPUTS = [{"name": "logits", "dtype": "float32", "shape": ["N", "K"]},
           {"name": "used_target", "dtype": "int64", "shape": ["N"]},
           {"name": "saliency", "dtype": "float32", "shape": ["N", "H", "W"], "range": [0, 1]},
           {"name": "grad", "dtype": "float32", "shape": ["N", 3, "H", "W"]}]
INPUT_NAMES = [io["name"] for io in INPUTS]
OUTPUT_NAMES = [io["name"] for io in OUTPUTS]
