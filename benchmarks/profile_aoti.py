"""Where aoti_n1's time goes: compile the single-image package with Inductor's kernel profiling and group
torch.profiler's self time by kind (oneDNN convolutions, fused pointwise kernels, ...).

    python benchmarks/profile_aoti.py [--model resnet50] [--runs 5]
"""
from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import torch

from salrt import _torch
from salrt.graph import build_saliency_graph, exported_program
from salrt.models import load_model


def kind(name: str) -> str:
    if "convolution_transpose" in name:
        return "transposed convolutions (oneDNN)"
    if "convolution" in name:
        return "convolutions (oneDNN)"
    if "fused" in name and "where" in name:
        return "ReLU masks (fused le + where)"
    if "max_pool" in name:
        return "max-pool"
    return name


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    spec = load_model(args.model, "random")
    size = spec.preprocessing.crop
    program = exported_program(build_saliency_graph(spec.module, spec.input_shape), spec.input_shape, batch=1)
    package = Path(tempfile.mkdtemp()) / "profiled_n1.pt2"
    with torch._inductor.config.patch(**{"cpp.enable_kernel_profile": True}):
        _torch.aoti_compile(program, str(package), freeze=True)
    compiled = _torch.aoti_load(str(package))
    image, target = torch.randn(1, 3, size, size), torch.full((1,), -1, dtype=torch.int64)
    with torch.no_grad():
        for _ in range(3):
            compiled(image, target)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            for _ in range(args.runs):
                compiled(image, target)
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    by_kind = collections.Counter()
    for event in events:
        by_kind[kind(event.key)] += event.self_cpu_time_total
    print(f"{args.model} aoti_n1, N=1: {total / args.runs / 1e3:.1f} ms per call")
    for name, self_time in by_kind.most_common(8):
        print(f"{100 * self_time / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
