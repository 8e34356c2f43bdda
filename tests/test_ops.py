"""Tests of the salrt.abs_channel_max_normalize operator against a naive float64 loop written here.

The reference shares no code with salrt: without the extension these tests check the torch fallback
against it, with the extension the kernels (``make test`` requires the extension, see conftest.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from salrt import ops
from salrt.graph.saliency import EPS, saliency_from_grad
from salrt.ops import abs_channel_max_normalize

needs_ext = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="salrt._C extension not built")
needs_cuda = pytest.mark.skipif(not (ops.HAS_EXTENSION and torch.cuda.is_available()), reason="needs CUDA")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FLT_MIN = float(np.finfo(np.float32).tiny)


def reference(g: torch.Tensor, mode: str = "minmax", eps: float = 1e-12, out_dtype=torch.float32) -> torch.Tensor:
    """The op's contract as a plain loop over images and channels, in float64 (half inputs upcast)."""
    grad = g.detach().double().numpy()
    maps = np.empty((grad.shape[0], *grad.shape[2:]))
    for n, image in enumerate(grad):
        m = np.abs(image[0])
        for channel in image[1:]:
            m = np.maximum(m, np.abs(channel))  # propagates NaN
        high = m.max() if m.size else 0.0
        low = (m.min() if m.size else 0.0) if mode == "minmax" else 0.0
        if mode == "none":
            maps[n] = m
        elif not np.isfinite(high):
            maps[n] = np.nan
        elif high - low <= eps * high or high - low < FLT_MIN:
            maps[n] = 0.0
        else:
            maps[n] = (m - low) / (high - low)
    if out_dtype == torch.uint8:
        return torch.from_numpy(np.round(np.nan_to_num(maps * 255, nan=0.0).clip(0, 255)).astype(np.uint8))
    return torch.from_numpy(maps).float()


# Layouts: each takes an NCHW tensor and returns one with the same values and different strides.
LAYOUTS = {
    "nchw": lambda x: x,
    "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "strided_view": lambda x: torch.repeat_interleave(x, 2, dim=2)[:, :, ::2],  # row stride 2W, unit cols
    "transposed_hw": lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),  # pixel stride H
    "channels_outer": lambda x: x.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3),  # [C,N,H,W] storage
    "cl_cropped": lambda x: torch.nn.functional.pad(x, (1, 2, 0, 1))
    .contiguous(memory_format=torch.channels_last)[:, :, :-1, 1:-2],
}


def check_close(out: torch.Tensor, ref: torch.Tensor, out_dtype=torch.float32) -> None:
    assert out.dtype == out_dtype and out.shape == ref.shape and out.is_contiguous()
    if out.numel() == 0:
        return
    if out_dtype == torch.uint8:
        diff = (out.int() - ref.int()).abs()
        # float32 kernel vs float64 reference may round a value within 1e-6 of x.5 differently
        assert diff.max().item() <= 1 and (diff > 0).float().mean().item() < 0.01
    else:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6, equal_nan=True)


def rand(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 3).to(dtype)


MODE_OUT = [("minmax", torch.float32), ("max", torch.float32), ("none", torch.float32),
            ("minmax", torch.uint8), ("max", torch.uint8)]  # mode 'none' has no uint8 output


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("mode", "out_dtype"), MODE_OUT, ids=[f"{m}-{str(d)[6:]}" for m, d in MODE_OUT])
def test_matches_reference(layout, dtype, mode, out_dtype):
    g = LAYOUTS[layout](rand((3, 3, 9, 37), dtype))  # 333 pixels: vector body plus a ragged tail
    out = abs_channel_max_normalize(g, mode, out_dtype=out_dtype)
    check_close(out, reference(g, mode, out_dtype=out_dtype), out_dtype)
    if mode == "none":  # the channel max is exact in every dtype
        assert torch.equal(out, g.float().abs().amax(1))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 7, 13), (2, 3, 1, 17), (2, 3, 17, 1), (0, 3, 5, 5),
                                   (2, 4, 3, 33), (1, 3, 8, 8), (1, 5, 2, 3)], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided_view"])
def test_odd_shapes(shape, layout):
    g = LAYOUTS[layout](rand(shape))
    for out_dtype in (torch.float32, torch.uint8):
        out = abs_channel_max_normalize(g, out_dtype=out_dtype)
        assert out.shape == (shape[0], shape[2], shape[3])
        check_close(out, reference(g, out_dtype=out_dtype), out_dtype)


@needs_ext
@pytest.mark.parametrize("n", [1, 3, 4])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_threads_and_split_images(n, layout):
    """Images large enough to be split across threads, and counts that do or don't divide the threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = LAYOUTS[layout](rand((n, 3, 181, 190), seed=n))
        for mode, out_dtype in [("minmax", torch.float32), ("max", torch.float32), ("minmax", torch.uint8)]:
            out = abs_channel_max_normalize(g, mode, out_dtype=out_dtype)
            check_close(out, reference(g, mode, out_dtype=out_dtype), out_dtype)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("mode", ["minmax", "max"])
def test_constant_and_zero_maps_are_zero(mode):
    g = torch.full((2, 3, 5, 9), -2.5)
    g[1] = 0
    expected_first = 0.0 if mode == "minmax" else 1.0  # max mode: m / max == 1 for a constant map
    out = abs_channel_max_normalize(g, mode)
    assert torch.all(out[0] == expected_first) and torch.all(out[1] == 0)
    assert torch.all(abs_channel_max_normalize(g, "minmax", out_dtype=torch.uint8) == 0)
    # eps is relative to the map's max: a range of 1e-4 around 1 is constant for eps=1e-2 (minmax only:
    # in max mode the range is the max itself)
    g2 = 1 + rand((1, 3, 4, 4)).abs() * 1e-4
    assert torch.all(abs_channel_max_normalize(g2, "minmax", eps=1e-2) == 0)
    assert torch.all(abs_channel_max_normalize(g2, "max", eps=1e-2) > 0.99)


@pytest.mark.parametrize("mode", ["minmax", "max"])
def test_tiny_gradients_normalize_like_large_ones(mode):
    g = rand((2, 3, 7, 13))
    tiny = abs_channel_max_normalize(g * 1e-16, mode)  # the scale of a randomly initialised EfficientNet-B0
    assert tiny.amax() == 1
    torch.testing.assert_close(tiny, abs_channel_max_normalize(g, mode))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "transposed_hw"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_poisons_its_image_only(layout, dtype):
    g = rand((2, 3, 6, 11), dtype)
    g[0, 1, 2, 3] = float("nan")
    g = LAYOUTS[layout](g)
    for mode in ("minmax", "max"):
        out = abs_channel_max_normalize(g, mode)
        assert torch.isnan(out[0]).all() and not torch.isnan(out[1]).any()
        check_close(out, reference(g, mode))
        u8 = abs_channel_max_normalize(g, mode, out_dtype=torch.uint8)
        assert torch.all(u8[0] == 0)
        check_close(u8, reference(g, mode, out_dtype=torch.uint8), torch.uint8)
    m = abs_channel_max_normalize(g, "none")
    assert torch.isnan(m).sum() == 1 and torch.isnan(m[0, 2, 3])


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "transposed_hw"])
def test_inf_poisons_its_image_like_nan(layout):
    g = rand((3, 3, 5, 12))
    g[0, 0, 1, 1] = float("inf")
    g[1] = float("-inf")
    g = LAYOUTS[layout](g)
    for mode in ("minmax", "max"):
        out = abs_channel_max_normalize(g, mode)
        check_close(out, reference(g, mode))
        assert torch.isnan(out[:2]).all() and not torch.isnan(out[2]).any()
        check_close(out[2:], reference(g[2:], mode))
    assert abs_channel_max_normalize(g, "none")[0, 1, 1] == float("inf")


def test_wrapper_errors():
    with pytest.raises(TypeError, match=r"4-D \[N,C,H,W\] float32/float16/bfloat16"):
        abs_channel_max_normalize(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="torch.int64"):
        abs_channel_max_normalize(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.float64"):
        abs_channel_max_normalize(torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown mode 'mean'"):
        abs_channel_max_normalize(torch.zeros(1, 3, 4, 4), "mean")
    with pytest.raises(ValueError, match="not allowed with out_dtype=torch.uint8"):
        abs_channel_max_normalize(torch.zeros(1, 3, 4, 4), "none", out_dtype=torch.uint8)
    with pytest.raises(ValueError, match="out_dtype"):
        abs_channel_max_normalize(torch.zeros(1, 3, 4, 4), out_dtype=torch.float16)


@needs_ext
def test_op_errors():
    op, op_u8 = torch.ops.salrt.abs_channel_max_normalize, torch.ops.salrt.abs_channel_max_normalize_u8
    with pytest.raises(RuntimeError, match=r"expects a 4-D \[N,C,H,W\] float32/float16/bfloat16 tensor, got a 3-D"):
        op(torch.zeros(3, 4, 4))
    with pytest.raises(RuntimeError, match="got a 4-D Long tensor"):
        op(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="got a 4-D Double tensor"):
        op_u8(torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="unknown mode 'mean'"):
        op(torch.zeros(1, 3, 4, 4), "mean")
    with pytest.raises(RuntimeError, match="mode 'none' is not allowed for uint8"):
        op_u8(torch.zeros(1, 3, 4, 4), "none")
    with pytest.raises(RuntimeError, match="at least one channel"):
        op(torch.zeros(1, 0, 4, 4))
    with pytest.raises(NotImplementedError, match="Could not run 'salrt::abs_channel_max_normalize'"):
        op(torch.zeros(1, 3, 4, 4).to_sparse())  # a backend without a kernel


@needs_ext
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_opcheck(device):
    g = rand((2, 3, 5, 7)).to(device).requires_grad_()
    cl = rand((2, 3, 8, 9), torch.float16).to(device).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.salrt.abs_channel_max_normalize.default, (g,), {"mode": "minmax", "eps": 1e-12})
    torch.library.opcheck(torch.ops.salrt.abs_channel_max_normalize.default, (cl, "none", 0.0))
    torch.library.opcheck(torch.ops.salrt.abs_channel_max_normalize_u8.default, (g, "max", 1e-6))


def test_not_differentiable():
    g = rand((2, 3, 4, 5)).requires_grad_()
    out = abs_channel_max_normalize(g)
    assert not out.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()


def test_torch_compile_dynamic_fullgraph():
    torch._dynamo.reset()

    def saliency(x):
        return abs_channel_max_normalize(x * 2, "minmax") + abs_channel_max_normalize(x, "max", out_dtype=torch.uint8)

    compiled = torch.compile(saliency, fullgraph=True, dynamic=True)
    for shape in [(2, 3, 8, 10), (5, 3, 7, 13)]:
        x = rand(shape)
        torch.testing.assert_close(compiled(x), saliency(x), rtol=0, atol=1e-6)


def test_torch_export_dynamic_nhw():
    class Saliency(torch.nn.Module):
        def forward(self, x):
            return abs_channel_max_normalize(x, "minmax")

    n, h, w = torch.export.Dim("n", min=1, max=64), torch.export.Dim("h", min=2), torch.export.Dim("w", min=2)
    ep = torch.export.export(Saliency(), (rand((2, 3, 8, 10)),), dynamic_shapes=({0: n, 2: h, 3: w},))
    assert ("salrt.abs_channel_max_normalize" in str(ep.graph)) == ops.HAS_EXTENSION
    for shape in [(1, 3, 5, 6), (4, 3, 16, 9)]:
        x = rand(shape)
        check_close(ep.module()(x), reference(x))


@needs_cuda
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided_view", "transposed_hw", "cl_cropped"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu_bitwise(layout, dtype):
    g = rand((5, 3, 33, 48), dtype)
    g[1, 0, 3, 3] = float("nan")
    g[2] = 7.0
    g[3, 2, 0, 0] = float("inf")
    g = LAYOUTS[layout](g)
    for mode, out_dtype in MODE_OUT:
        cpu = abs_channel_max_normalize(g, mode, out_dtype=out_dtype)
        cuda = abs_channel_max_normalize(g.cuda(), mode, out_dtype=out_dtype)
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0, equal_nan=True)


@needs_cuda
def test_cuda_many_images_and_large_maps():
    for shape in [(70000, 1, 2, 2), (1, 3, 1024, 1030)]:
        g = rand(shape)
        torch.testing.assert_close(abs_channel_max_normalize(g.cuda()).cpu(), abs_channel_max_normalize(g),
                                   rtol=0, atol=0)


def test_benchmark_smoke(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_reduce

    path = tmp_path / "bench.json"
    report = bench_reduce.main(["--quick", "--device", "cpu", "--threads", "1", "--n", "2", "--hw", "16",
                                "--reps", "2", "--no-compile", "--json", str(path)])
    assert json.loads(path.read_text()) == report
    assert [(row["layout"], row["threads"]) for row in report["rows"]] == [("nchw", 1), ("channels_last", 1)]
    for row in report["rows"]:
        assert row["op_s"] > 0 and row["chain_s"] > 0 and row["bytes"] == 2 * 3 * 16 * 16 * 4 + 2 * 16 * 16 * 4
        assert row["speedup_vs_chain"] == pytest.approx(row["chain_s"] / row["op_s"])


def _python(code: str, **env):
    import os
    import subprocess
    import sys
    from pathlib import Path
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(Path(__file__).parents[1]), env={**os.environ, **env})


_WITHOUT_EXTENSION = "import sys\nsys.modules['salrt._C'] = None  # make the extension import fail\n"


def test_fallback_without_extension_warns_once_and_matches():
    code = _WITHOUT_EXTENSION + (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    from salrt import ops\n"
        "    import salrt.ops\n"
        "assert not ops.HAS_EXTENSION\n"
        "assert sum('salrt._C' in str(x.message) for x in w) == 1, [str(x.message) for x in w]\n"
        "g = torch.randn(2, 3, 5, 7, requires_grad=True)\n"
        "out = ops.abs_channel_max_normalize(g.contiguous(memory_format=torch.channels_last))\n"
        "assert not out.requires_grad and out.is_contiguous()\n"
        "torch.save((g.detach(), out, ops.abs_channel_max_normalize(g, 'max', out_dtype=torch.uint8)), 'fallback.pt')\n"
    )
    result = _python(code, SALRT_REQUIRE_EXTENSION="0")
    assert result.returncode == 0, result.stderr
    from pathlib import Path
    saved = Path(__file__).parents[1] / "fallback.pt"
    g, out, u8 = torch.load(saved)
    saved.unlink()
    check_close(out, reference(g))
    check_close(u8, reference(g, "max", out_dtype=torch.uint8), torch.uint8)


def test_required_extension_fails_the_import_when_missing():
    """What makes `make test` (and CI) fail on a build without _C instead of testing the fallback only."""
    result = _python(_WITHOUT_EXTENSION + "import salrt\n", SALRT_REQUIRE_EXTENSION="1")
    assert result.returncode != 0
    assert "salrt._C is required (SALRT_REQUIRE_EXTENSION=1)" in result.stderr


@needs_ext
def test_schema_default_eps_is_the_python_default():
    schema = torch.ops.salrt.abs_channel_max_normalize.default._schema
    assert {a.name: a.default_value for a in schema.arguments}["eps"] == EPS


@needs_ext  # without the extension the op is this very definition
@pytest.mark.parametrize("scale", [1e-39, 1e-44, 1e-20, 1.0, 1e30])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_graph_definition_and_op_give_the_same_bits(scale, layout):
    """The exported graphs trace salrt.graph.saliency; the eager backend runs the op. They used to disagree
    on subnormal ranges (scale 1e-39: the graph normalized them, the kernels returned zeros)."""
    g = LAYOUTS[layout](rand((4, 3, 9, 13)) * scale)
    g[1] = 1 + rand((3, 9, 13)).abs() * 1e-13  # a range within eps of the max: constant
    graph_map, op_map = saliency_from_grad(g), abs_channel_max_normalize(g)
    assert torch.equal(graph_map, op_map)
    check_close(op_map, reference(g))
    assert torch.all(op_map[1] == 0)
    if scale < FLT_MIN:
        assert torch.all(op_map == 0)
