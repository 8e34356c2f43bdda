"""`salrt serve` under load on loopback, against the same artifact explained in-process, in one run.

For each model: the in-process ``explain`` at N=1 (p50) and N=8 (images/s); then a Triton server (the
defaults of `salrt serve`: backend auto, --max-batch 16, CPU queue delay 0) taking single-image gRPC requests
for saliency and logits from 1, 4 and 16 concurrent ``tritonclient`` threads (Triton's own perf_analyzer is
not on PyPI for this machine): throughput, p50/p90/p99 latency, errors, server-side queue and compute time per
request, the average batch Triton executed (from its statistics), and at concurrency 1 the fixed cost over
in-process and where it goes. Updates docs/bench-serve.{json,png} and the README.

    python benchmarks/bench_serve.py [--models resnet50,resnet18] [--requests 48]
    python benchmarks/bench_serve.py --breakdown --models resnet18 --rounds 12   # per protocol/encoding/outputs
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpc
import tritonclient.http as http

import salrt
from salrt.bench import replace_readme_block
from salrt.bench.harness import cached_artifact, percentile
from salrt.formats import BY_BACKEND
from salrt.models import load_model
from salrt.server import TENSOR, ServeOptions, TritonServer
from salrt.server.process import MALLOC_SETTINGS
from salrt.server.client import RemoteExplainer, SharedMemoryTensors
from salrt.server.client import tensor_inputs as client_tensor_inputs
from salrt.server.repository import TIMING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from triton_helpers import free_ports  # noqa: E402  (the tests' own: free loopback ports for a server)

CONCURRENCY = (1, 4, 16)


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# How the timed requests are sent: the protocol that measured faster at concurrency 1 (--breakdown), asking
# for what a client drawing maps needs (not grad's 600 KB per 224x224 image).
PROTOCOL, OUTPUTS = grpc, ("saliency", "logits")
# A pause before each interleaved call: after a call, OpenMP's idle threads spin a while; without it the
# served request would share the 2 cores with the in-process call's spinning threads, which no client has.
PAUSE_S = 0.02


def tensor_inputs(image: np.ndarray) -> list:
    return client_tensor_inputs(PROTOCOL, image)


def grpc_url(server: TritonServer) -> str:
    return f"127.0.0.1:{server.options.grpc_port}"


class Load:
    """Single-image requests from ``concurrency`` threads, one tritonclient each (it is gevent-based), with
    Triton's statistics read before and after: ``run`` adds one block of requests to the totals."""

    def __init__(self, server: TritonServer, image: np.ndarray, concurrency: int):
        self.server, self.image, self.concurrency = server, image, concurrency
        self.model = server.models[TENSOR]
        self.latencies, self.errors, self.wall = [], 0, 0.0
        self.stats = http.InferenceServerClient(server.url)
        self.deltas = {"inference_count": 0, "execution_count": 0}

    def _client_thread(self, requests: int) -> tuple[list[float], int]:
        client, inputs = PROTOCOL.InferenceServerClient(grpc_url(self.server)), tensor_inputs(self.image)
        outputs = [PROTOCOL.InferRequestedOutput(name) for name in OUTPUTS]
        latencies, errors = [], 0
        for _ in range(requests):
            try:
                latencies.append(_timed(lambda: client.infer(self.model, inputs, outputs=outputs)))
            except Exception:
                errors += 1
        client.close()
        return latencies, errors

    def run(self, requests: int) -> None:
        before = self._statistics()
        with ThreadPoolExecutor(self.concurrency) as pool:
            started = time.perf_counter()
            results = list(pool.map(self._client_thread, [requests // self.concurrency] * self.concurrency))
            self.wall += time.perf_counter() - started
        after = self._statistics()
        for key in after:
            self.deltas[key] = self.deltas.get(key, 0) + after[key] - before[key]
        self.latencies += [t for per_thread, _ in results for t in per_thread]
        self.errors += sum(errors for _, errors in results)

    def _statistics(self) -> dict:
        model = self.stats.get_inference_statistics(self.model)["model_stats"][0]
        times = {kind: int(value["ns"]) for kind, value in model["inference_stats"].items()}
        return {"inference_count": int(model["inference_count"]), "execution_count": int(model["execution_count"]),
                **times}

    def summary(self) -> dict:
        done = max(self.deltas["inference_count"], 1)
        per_request_ms = {kind: self.deltas.get(kind, 0) / 1e6 / done for kind in
                          ("queue", "compute_input", "compute_infer", "compute_output")}
        return {"concurrency": self.concurrency, "requests": len(self.latencies), "errors": self.errors,
                "images_per_s": len(self.latencies) / self.wall, "p50_ms": percentile(self.latencies, 50) * 1e3,
                "p90_ms": percentile(self.latencies, 90) * 1e3, "p99_ms": percentile(self.latencies, 99) * 1e3,
                "queue_ms": per_request_ms["queue"],
                "compute_ms": sum(v for k, v in per_request_ms.items() if k != "queue"),
                "average_batch": done / max(self.deltas["execution_count"], 1)}


# How a lone request travels, each measured at concurrency 1 (the loads at 4 and 16 use the first):
# {label: shared memory?}. Shared memory needs the server's shared-memory API open (salrt serve --shared-memory).
C1_TRANSPORTS = {"gRPC": False, "gRPC + shared memory": True}


def bench_model(name: str, requests: int, rounds: int) -> dict:
    """In-process and served measurements interleaved, so both see the same machine state: N=1 calls
    alternate with concurrency-1 requests (each transport in turn), N=8 calls with blocks of concurrency-16
    requests."""
    spec = load_model(name, "random")
    artifact = cached_artifact(spec, [f.name for f in BY_BACKEND.values()], ROOT / ".salrt-bench", print)
    size = spec.preprocessing.crop
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch8 = image.expand(8, -1, -1, -1).contiguous()
    explainer = salrt.load(artifact)
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(artifact, ServeOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                             shared_memory=True)) as server:
        loads = {c: Load(server, image.numpy(), c) for c in CONCURRENCY[1:]}
        probes = {label: Probe(server, image.numpy(), PROTOCOL, True, OUTPUTS, shared_memory)
                  for label, shared_memory in C1_TRANSPORTS.items()}  # with their breakdown
        for _ in range(2):  # warm-up: both paths, both batch sizes
            explainer.explain(image), explainer.explain(batch8), loads[4]._client_thread(2)
        n1, n8 = [], []
        for round_ in range(rounds):
            for number, probe in enumerate(probes.values()):
                time.sleep(PAUSE_S)
                n1.append(_timed(lambda: explainer.explain(image)))
                time.sleep(PAUSE_S)
                probe.request(f"{round_}.{number}")  # no spaces: the model logs it as one field
        logged = logged_timings(server.log)
        c1 = {label: probe.summary(logged) for label, probe in probes.items()}
        loads[4].run(requests)
        for _ in range(3):
            n8.append(_timed(lambda: explainer.explain(batch8)))
            loads[16].run(max(requests, 8 * 16) // 3 // 16 * 16)
    local = {"backend_n1": explainer.backend_for(1), "backend_n8": explainer.backend_for(8),
             "n1_p50_ms": statistics.median(n1) * 1e3, "n8_images_per_s": 8 / statistics.median(n8)}
    rows = ([c1_row(c1[label], rounds, label, local["n1_p50_ms"]) for label in C1_TRANSPORTS]
            + [{**loads[c].summary(), "transport": next(iter(C1_TRANSPORTS))} for c in CONCURRENCY[1:]])
    print(f"{name} in-process: N=1 p50 {local['n1_p50_ms']:.1f} ms ({local['backend_n1']}), "
          f"N=8 {local['n8_images_per_s']:.2f} img/s ({local['backend_n8']})", flush=True)
    for row in rows:
        print(f"{name} served, concurrency {row['concurrency']:2} ({row['transport']}): {row['images_per_s']:5.2f} "
              f"img/s, p50 {row['p50_ms']:6.1f} p99 {row['p99_ms']:6.1f} ms, queue {row['queue_ms']:5.1f} ms, compute "
              f"{row['compute_ms']:6.1f} ms, batch {row['average_batch']:.2f}, errors {row['errors']}", flush=True)
        if "fixed_cost_ms" in row:
            print(f"{name} fixed cost at concurrency 1 ({row['transport']}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row["fixed_cost_ms"].items()), flush=True)
    return {"model": name, "in_process": local, "served": rows,
            "c16_throughput_over_in_process_n8": rows[-1]["images_per_s"] / local["n8_images_per_s"]}


# What a request costs beyond explain, one variant of the request at a time: protocol, binary or JSON tensor
# data, and which outputs it asks for (None: all, grad's 600 KB per 224x224 image included).
VARIANTS = {"http binary, all outputs": (http, True, None),
            "http binary, saliency+logits": (http, True, ("saliency", "logits")),
            "http JSON, saliency+logits": (http, False, ("saliency", "logits")),
            "grpc, all outputs": (grpc, True, None),
            "grpc, saliency+logits": (grpc, True, ("saliency", "logits")),
            "grpc + system shared memory, saliency+logits": (grpc, True, ("saliency", "logits"), True)}
SERVER_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


class Probe:
    """One request variant: its client, inputs and outputs, client-side latencies, Triton's statistics
    deltas summed over the requests, and the ids of its requests (the model logs their ``TIMING``)."""

    def __init__(self, server: TritonServer, image: np.ndarray, module, binary: bool, outputs,
                 shared_memory: bool = False):
        self.module, self.model, self.log = module, server.models[TENSOR], server.log
        self.client = module.InferenceServerClient(
            server.url if module is http else grpc_url(server))
        self.inputs = client_tensor_inputs(module, image)  # the targets' few bytes as the client sends them
        if module is http:
            self.inputs[0].set_data_from_numpy(image, binary_data=binary)
            self.outputs = outputs and [http.InferRequestedOutput(name, binary_data=binary) for name in outputs]
        else:
            self.inputs[0].set_data_from_numpy(image)
            self.outputs = outputs and [grpc.InferRequestedOutput(name) for name in outputs]
        self.image, self.tensors = image, None
        if shared_memory:  # the image and the outputs through regions (a gRPC client naming its outputs)
            shapes = self.client.infer(self.model, self.inputs, outputs=self.outputs)
            self.tensors = SharedMemoryTensors(self.client, image.shape, {
                name: (shapes.as_numpy(name).shape, shapes.as_numpy(name).dtype) for name in outputs})
        self.latencies, self.server_ns, self.ids, self.wall_ns = [], {}, [], []

    def infer(self, **request) -> None:
        if self.tensors is not None:
            self.tensors.infer(self.model, self.image, **request)
        else:
            self.client.infer(self.model, self.inputs, outputs=self.outputs, **request)

    def request(self, request_id: str) -> None:
        before = self._statistics()
        sent_ns, started = time.time_ns(), time.perf_counter()
        self.infer(request_id=request_id, parameters={TIMING: True})
        self.latencies.append(time.perf_counter() - started)
        self.wall_ns.append((sent_ns, time.time_ns()))
        after = self._statistics()
        while after["count"] == before["count"]:  # Triton counts a request a moment after its response goes
            time.sleep(0.001)
            after = self._statistics()
        for key in after:
            self.server_ns[key] = self.server_ns.get(key, 0) + after[key] - before[key]
        self.ids.append(request_id)

    def _statistics(self) -> dict:
        model = self.client.get_inference_statistics(self.model)
        stats = (model if self.module is http else _grpc_json(model))["model_stats"][0]["inference_stats"]
        return {"count": int(stats["success"].get("count", 0)),
                **{kind: int(stats[kind].get("ns", 0)) for kind in ("success", *SERVER_PHASES)}}

    def summary(self, logged: dict) -> dict:
        count, laps = len(self.latencies), [logged[request_id] for request_id in self.ids]
        server = {f"{kind}_ms": ns / 1e6 / count for kind, ns in self.server_ns.items() if kind != "count"}
        salrt_ms = {key.removeprefix("salrt_").removesuffix("_us") + "_ms": statistics.median(lap[key] for lap in laps)
                    / 1e3 for key in laps[0] if key.endswith("_us")}
        # same host, same clock: client send -> execute entered, and execute left -> client has the response
        salrt_ms["to_execute_ms"] = statistics.median(
            lap["salrt_entered_ns"] - sent for lap, (sent, _) in zip(laps, self.wall_ns)) / 1e6
        salrt_ms["from_execute_ms"] = statistics.median(
            received - lap["salrt_left_ns"] for lap, (_, received) in zip(laps, self.wall_ns)) / 1e6
        client_ms = percentile(self.latencies, 50) * 1e3
        return {"p50_ms": client_ms, "p90_ms": percentile(self.latencies, 90) * 1e3,
                "p99_ms": percentile(self.latencies, 99) * 1e3, **server, "outside_server_ms": client_ms - server["success_ms"],
                "server_framework_ms": server["success_ms"] - sum(server[f"{k}_ms"] for k in SERVER_PHASES),
                "salrt": salrt_ms, "stub_torch_threads": laps[0]["salrt_torch_threads"]}


def logged_timings(log: Path) -> dict:
    """{request id: {field: int}} from the lines the model logs for ``TIMING`` requests."""
    timings = {}
    for line in log.read_text(errors="replace").splitlines():
        _, found, rest = line.partition(f"{TIMING} ")
        if found:
            request_id, *fields = rest.strip('"').split()
            timings[request_id] = {key: int(value) for key, value in (field.split("=") for field in fields)}
    return timings


def _grpc_json(message) -> dict:
    from google.protobuf.json_format import MessageToDict
    return MessageToDict(message, preserving_proto_field_name=True)


def breakdown(name: str, rounds: int) -> dict:
    """Where a concurrency-1 request's milliseconds go: each variant's client latency against Triton's
    statistics and salrt's own phases, interleaved with the in-process N=1 explain."""
    spec = load_model(name, "random")
    artifact = cached_artifact(spec, [f.name for f in BY_BACKEND.values()], ROOT / ".salrt-bench", print)
    size = spec.preprocessing.crop
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    explainer = salrt.load(artifact)
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(artifact, ServeOptions(http_port=http_port, grpc_port=grpc_port,
                                             metrics_port=metrics_port, shared_memory=True)) as server:
        probes = {variant: Probe(server, image.numpy(), *spec_) for variant, spec_ in VARIANTS.items()}
        for probe in probes.values():  # warm-up
            explainer.explain(image), probe.infer()
        # the image model as `salrt explain --server` calls it, per protocol, against explain of the same JPEG
        remote = {protocol: RemoteExplainer(f"{protocol}://127.0.0.1:{port}", name)
                  for protocol, port in (("http", http_port), ("grpc", grpc_port))}
        jpeg = _jpeg(size)
        in_process, photo, remote_ms = [], [], {protocol: [] for protocol in remote}
        for round_ in range(rounds):
            for number, probe in enumerate(probes.values()):
                time.sleep(PAUSE_S)
                in_process.append(_timed(lambda: explainer.explain(image)))
                time.sleep(PAUSE_S)
                probe.request(f"{round_}.{number}")
            for protocol, client in remote.items():
                time.sleep(PAUSE_S)
                photo.append(_timed(lambda: explainer.explain(jpeg)))
                time.sleep(PAUSE_S)
                remote_ms[protocol].append(_timed(lambda: client.explain([jpeg])))
        logged = logged_timings(server.log)  # before the server's workspace (the log's folder) goes
    report = {"model": name, "in_process_n1_p50_ms": statistics.median(in_process) * 1e3,
              "backend": explainer.backend_for(1), "in_process_torch_threads": torch.get_num_threads(),
              "variants": {variant: probe.summary(logged) for variant, probe in probes.items()},
              "photo_in_process_p50_ms": statistics.median(photo) * 1e3,
              "photo_served_p50_ms": {protocol: statistics.median(t) * 1e3 for protocol, t in remote_ms.items()}}
    print(f"{name}: in-process N=1 p50 {report['in_process_n1_p50_ms']:.1f} ms ({report['backend']}, "
          f"{report['in_process_torch_threads']} threads)")
    for variant, row in report["variants"].items():
        print(f"  {variant:30} p50 {row['p50_ms']:6.1f} (+{row['p50_ms'] - report['in_process_n1_p50_ms']:5.1f}) | "
              f"outside server {row['outside_server_ms']:5.2f} | framework {row['server_framework_ms']:5.2f} | "
              + " ".join(f"{k} {row[k + '_ms']:.2f}" for k in SERVER_PHASES) + " | salrt "
              + " ".join(f"{k} {v:.2f}" for k, v in row["salrt"].items()) + f" | stub threads {row['stub_torch_threads']}",
              flush=True)
    print(f"  one JPEG through RemoteExplainer: in-process {report['photo_in_process_p50_ms']:.1f} ms, served "
          + ", ".join(f"{p} {t:.1f} ms" for p, t in report["photo_served_p50_ms"].items()), flush=True)
    return report


def _jpeg(size: int) -> bytes:
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (size + 32, size + 48, 3), dtype=np.uint8)
    buffer = __import__("io").BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def c1_row(c1: dict, requests: int, transport: str, in_process_ms: float) -> dict:
    """A concurrency-1 row of the table, from its probe's measurements, with its fixed cost over in-process."""
    return {"concurrency": 1, "transport": transport, "requests": requests, "errors": 0,
            "images_per_s": 1e3 / c1["p50_ms"], "p50_ms": c1["p50_ms"], "p90_ms": c1["p90_ms"],
            "p99_ms": c1["p99_ms"], "queue_ms": c1["queue_ms"],
            "compute_ms": c1["compute_input_ms"] + c1["compute_infer_ms"] + c1["compute_output_ms"],
            "average_batch": 1.0, "fixed_cost_ms": fixed_cost(c1, in_process_ms),
            "over_in_process_n1": c1["p50_ms"] / in_process_ms}


def fixed_cost(c1: dict, in_process_ms: float) -> dict:
    """Served p50 minus in-process p50 at one image, and where it goes (medians of each part, so the parts
    need not add up exactly): salrt's check and explain in the stub beyond the in-process call, the way in
    (client send -> execute entered: client, transport, Triton, the Python backend's IPC) and out, and
    salrt's output conversion and response building."""
    salrt_ms = c1["salrt"]
    return {"total": c1["p50_ms"] - in_process_ms,
            "stub_compute": salrt_ms["check_ms"] + salrt_ms["explain_ms"] - in_process_ms,
            "way_in": salrt_ms["to_execute_ms"], "way_out": salrt_ms["from_execute_ms"],
            "outputs": salrt_ms["outputs_ms"] + salrt_ms["respond_ms"]}


def table(report: dict) -> str:
    lines = ["| model | concurrency | transport | img/s | p50 ms | p90 ms | p99 ms | errors | queue ms | compute ms "
             "| avg batch | fixed cost ms (stub compute + way in + way out + outputs) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in report["models"]:
        local = result["in_process"]
        lines.append(f"| {result['model']} | in-process N=1 ({local['backend_n1']}) | | "
                     f"{1e3 / local['n1_p50_ms']:.2f} | {local['n1_p50_ms']:.1f} | | | | | | 1 | |")
        lines.append(f"| {result['model']} | in-process N=8 ({local['backend_n8']}) | | "
                     f"{local['n8_images_per_s']:.2f} | | | | | | | 8 | |")
        for r in result["served"]:
            fixed = r.get("fixed_cost_ms")
            cost = (f"{fixed['total']:.1f} ({fixed['stub_compute']:.1f} + {fixed['way_in']:.1f} + "
                    f"{fixed['way_out']:.1f} + {fixed['outputs']:.1f})" if fixed else "")
            lines.append(f"| {result['model']} | served, {r['concurrency']} | {r['transport']} | "
                         f"{r['images_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{r['errors']} | {r['queue_ms']:.1f} | {r['compute_ms']:.1f} | {r['average_batch']:.2f} "
                         f"| {cost} |")
    lines.append("")
    for result in report["models"]:
        c1 = "; ".join(f"{r['transport']} {r['over_in_process_n1']:.3f} x, {r['fixed_cost_ms']['total']:+.1f} ms"
                       for r in result["served"] if "fixed_cost_ms" in r)
        lines.append(f"- {result['model']}: served p50 at concurrency 1 over in-process N=1: {c1} (goal <= 1.05 "
                     f"and <= 2 ms); throughput at concurrency 16 = "
                     f"{result['c16_throughput_over_in_process_n8']:.2f} x in-process N=8 (goal >= 0.90)")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for result in report["models"]:
        served = [r for r in result["served"] if r["transport"] == next(iter(C1_TRANSPORTS))]
        line, = axis.plot([r["images_per_s"] for r in served], [r["p50_ms"] for r in served], "o-",
                          label=f"{result['model']} served (p50)")
        for r in served:
            axis.annotate(f"c={r['concurrency']}", (r["images_per_s"], r["p50_ms"]), textcoords="offset points",
                          xytext=(5, 5), fontsize=8)
        local = result["in_process"]
        axis.plot([1e3 / local["n1_p50_ms"], local["n8_images_per_s"]], [local["n1_p50_ms"], 8e3 /
                  local["n8_images_per_s"]], "s--", color=line.get_color(), alpha=0.6,
                  label=f"{result['model']} in-process N=1, N=8")
    axis.set_xlabel("throughput (images/s)")
    axis.set_ylabel("latency per request (ms)")
    axis.set_title("salrt serve (Triton, loopback, 2 CPU cores) vs in-process")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def readme_block(report: dict) -> str:
    return ("Generated by `python benchmarks/bench_serve.py` (this machine: 2 CPU cores; loopback gRPC, one image per "
            "request asking for `saliency` and `logits`, at concurrency 1 also through system shared memory "
            "(`salrt serve --shared-memory`); the in-process reference runs with the malloc settings the server's "
            "processes get (`server.process.MALLOC_SETTINGS`); queue and compute are Triton's per-request "
            "averages; the fixed cost is served p50 minus in-process p50 at one image: salrt's check and explain "
            "in the Python-backend stub beyond the in-process call, client send to `execute` entered, `execute` "
            "left to client done, salrt's output conversion; medians, so the parts need not add up):\n\n"
            + table(report) + "\n\n![serving: latency vs throughput](docs/bench-serve.png)")


def with_server_malloc_settings() -> None:
    """Re-runs this script with the malloc settings `salrt serve` gives Triton's processes (glibc reads them at
    start), so the in-process reference keeps freed activations as the server's stubs do: without them a
    process's calls fault fresh pages in or not depending on what it freed before (measured on ResNet-18 N=1:
    2,144 faults and 52.1 ms a call against 0.6 and 48.8 ms), which would decide the comparison."""
    missing = {key: value for key, value in MALLOC_SETTINGS.items() if key not in os.environ}
    if missing:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})


def main(argv=None) -> dict:
    if argv is None:  # run as a script: its own command line is what the re-run repeats
        with_server_malloc_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,resnet18")
    parser.add_argument("--requests", type=int, default=48, help="timed requests at concurrency 4 (16: at least 128)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved N=1 pairs (in-process call, request)")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--breakdown", action="store_true",
                        help="only break a concurrency-1 request's cost down per protocol and outputs (prints it)")
    args = parser.parse_args(argv)
    if args.breakdown:
        return {"breakdown": [breakdown(name, args.rounds) for name in args.models.split(",")]}
    report = {"cpus": torch.get_num_threads(), "torch": torch.__version__,
              "models": [bench_model(name, args.requests, args.rounds) for name in args.models.split(",")]}
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "bench-serve.json").write_text(json.dumps(report, indent=1))
    plot(report, ROOT / "docs" / "bench-serve.png")
    print(table(report))
    if not args.no_readme:
        replace_readme_block(ROOT / "README.md", "serve", readme_block(report))
    return report


if __name__ == "__main__":
    main()
