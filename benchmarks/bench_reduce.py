"""Benchmark of salrt's saliency reduction (abs -> channel max -> per-image normalisation).

Compares the ``salrt`` operator with the eager torch op chain and with ``torch.compile`` of that chain,
over batch sizes, dtypes and memory layouts, on CPU (1 thread and all threads) and CUDA when present.
Reports the median time, the bandwidth (bytes read + written) and the fraction of copy bandwidth it
reaches: ``dst.copy_(src)`` of a buffer of the input's size, measured in the same run (the caches can
hold large inputs, so a DRAM-sized copy, also printed, would not be a fair roofline for every case).

    python benchmarks/bench_reduce.py                 # full table
    python benchmarks/bench_reduce.py --quick         # N in {1, 32}, float32, < 1 minute
    python benchmarks/bench_reduce.py --device cuda --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from salrt import ops  # noqa: E402
from salrt.graph.saliency import saliency_from_grad  # noqa: E402  (the same rule as torch ops)

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _time_cpu(fn: Callable[[], object], reps: int, min_seconds: float) -> float:
    for _ in range(3):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_cuda(fn: Callable[[], object], reps: int, min_seconds: float) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_bandwidth(device: str, timer, reps: int) -> float:
    """GB/s of dst.copy_(src) on a buffer far larger than the caches, counting bytes read + written."""
    numel = (64 if device == "cpu" else 256) * 2**20  # 256 MiB / 1 GiB of float32
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    seconds = timer(lambda: dst.copy_(src), reps, 0.0)
    return 2 * src.numel() * src.element_size() / seconds / 1e9


def make_input(n: int, hw: int, dtype: torch.dtype, layout: str, device: str) -> torch.Tensor:
    g = torch.randn(n, 3, hw, hw, device=device).to(dtype)
    return g.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else g


def bench_case(g: torch.Tensor, timer, reps: int, min_seconds: float, compiled) -> dict:
    op = lambda: ops.abs_channel_max_normalize(g)  # noqa: E731
    chain = lambda: saliency_from_grad(g)  # noqa: E731
    torch.testing.assert_close(op(), chain(), rtol=0, atol=1e-5)
    result = {"op_s": timer(op, reps, min_seconds), "chain_s": timer(chain, reps, min_seconds)}
    if compiled is not None:
        compiled(g)  # compilation is not timed
        result["compiled_s"] = timer(lambda: compiled(g), reps, min_seconds)
    n, c, h, w = g.shape
    result["bytes"] = g.numel() * g.element_size() + n * h * w * 4
    src = g.contiguous()
    dst = torch.empty_like(src)
    result["copy_gbps"] = 2 * src.numel() * src.element_size() / timer(lambda: dst.copy_(src), reps, min_seconds) / 1e9
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all", help="default: cpu, plus cuda if present")
    p.add_argument("--threads", default=None, help="CPU thread counts, comma separated (default: 1 and all)")
    p.add_argument("--quick", action="store_true", help="N in {1, 32}, float32 only, few repetitions")
    p.add_argument("--n", default=None, help="batch sizes, comma separated (default 1,8,32,128)")
    p.add_argument("--hw", type=int, default=224, help="image height and width")
    p.add_argument("--dtypes", default=None, help=f"subset of {','.join(DTYPES)}")
    p.add_argument("--layouts", default="nchw,channels_last")
    p.add_argument("--reps", type=int, default=None, help="minimum timed repetitions per case")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--json", default=None, help="write the results to this path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    ns = [int(x) for x in (args.n or ("1,32" if args.quick else "1,8,32,128")).split(",")]
    dtypes = (args.dtypes or ("f32" if args.quick else ",".join(DTYPES))).split(",")
    layouts = args.layouts.split(",")
    reps = args.reps or (5 if args.quick else 20)
    min_seconds = 0.05 if args.quick else 0.3
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if args.device == "cuda" and not devices:
        raise SystemExit("--device cuda: no CUDA device available")
    all_threads = os.cpu_count() or 1
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, all_threads})
    torch._dynamo.config.cache_size_limit = 1024  # one static-shape graph per case

    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                          "extension": ops.HAS_EXTENSION, "cpu_count": all_threads},
              "copy_gbps": {}, "rows": []}
    header = (f"{'device':>6} {'thr':>3} {'dtype':>5} {'layout':>13} {'N':>4} | {'op ms':>8} {'GB/s':>6} {'%copy':>6} | "
              f"{'chain ms':>9} {'x':>6} | {'compiled':>9} {'x':>6}")
    print(f"salrt extension: {ops.HAS_EXTENSION}; torch {torch.__version__}; {all_threads} CPUs")
    for device in devices:
        settings = thread_counts if device == "cpu" else [torch.get_num_threads()]
        timer = _time_cpu if device == "cpu" else _time_cuda
        for threads in settings:
            torch.set_num_threads(threads)  # at::parallel_for inside the extension follows this too
            torch._dynamo.reset()  # inductor bakes the thread count into its kernels
            compiled = None if args.no_compile else torch.compile(saliency_from_grad, dynamic=False)
            key = f"{device}/{threads}" if device == "cpu" else device
            copy_gbps = copy_bandwidth(device, timer, 3 if args.quick else 10)
            report["copy_gbps"][key] = copy_gbps
            print(f"\n{device}, {threads} thread(s): copy_ of a buffer larger than the caches: {copy_gbps:.1f} GB/s "
                  "(read + write); %copy below: vs copy_ of a buffer of the input's size")
            print(header)
            for dtype in dtypes:
                for layout in layouts:
                    for n in ns:
                        g = make_input(n, args.hw, DTYPES[dtype], layout, device)
                        r = bench_case(g, timer, reps, min_seconds, compiled)
                        gbps = r["bytes"] / r["op_s"] / 1e9
                        row = {"device": device, "threads": threads, "dtype": dtype, "layout": layout, "n": n,
                               "hw": args.hw, **r, "op_gbps": gbps, "copy_fraction": gbps / r["copy_gbps"],
                               "speedup_vs_chain": r["chain_s"] / r["op_s"]}
                        line = (f"{device:>6} {threads:>3} {dtype:>5} {layout:>13} {n:>4} | {r['op_s'] * 1e3:8.3f} "
                                f"{gbps:6.1f} {100 * row['copy_fraction']:5.0f}% | {r['chain_s'] * 1e3:9.3f} "
                                f"{row['speedup_vs_chain']:5.1f}x |")
                        if "compiled_s" in r:
                            row["speedup_vs_compiled"] = r["compiled_s"] / r["op_s"]
                            line += f" {r['compiled_s'] * 1e3:9.3f} {row['speedup_vs_compiled']:5.2f}x"
                        print(line, flush=True)
                        report["rows"].append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
