"""Families that once failed to export, through ``salrt.export`` to ONNX and TorchScript, each image's gradient
against float64 autograd (random weights, batch-norm statistics randomized, inputs the export never saw).
benchmarks/verify_architectures.py runs the same check on every family at the models' own sizes (torchvision's
swin_t too: at 112 px it took 147 s here, too slow for each CI run)."""
import statistics

import pytest

from architectures import FLOOR, timm_model, verify


def _assert_verified(result: dict) -> None:
    for fmt, errors in result["errors"].items():
        assert statistics.median(errors) < FLOOR, (fmt, errors)
    assert result["status"] == "verified", result["errors"]


@pytest.mark.parametrize("name,size", [
    ("resnet26d", 64),          # avg_pool2d(ceil_mode=True, count_include_pad=False) in every downsample
    ("mobilevit_xxs", 64),      # upsample_bilinear2d in its fusion blocks
    ("edgenext_xx_small", 64),  # torch.zeros(x.shape) in its position encoding: a factory on the symbolic batch
    ("convnextv2_atto", 64),    # addcmul in its GRN layers: a meta kernel that takes no symbolic batch
])
def test_timm_family(name, size):
    _assert_verified(verify(timm_model(name), size))

