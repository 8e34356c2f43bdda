"""`salrt serve` for a long while: 8 concurrent clients (half HTTP, half gRPC) send single-image requests to a
ResNet-18 server on loopback, 1 in 10 of them bad (a wrong shape, NaN, a target out of range, undecodable bytes
to the photo model, a missing input). Per minute: good requests answered, their p50/p99 latency, errors on good
requests (must be 0), bad requests refused (must be all), and the resident memory of Triton and of each
Python-backend stub. Memory is compared first minute against last (each process must grow by under 50 MB).
Updates docs/soak-serve.json and the README's table.

    python benchmarks/soak_serve.py [--minutes 10] [--clients 8] [--no-readme]
"""
from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from salrt.bench import replace_readme_block
from salrt.bench.harness import cached_artifact, percentile
from salrt.devices import cpu_description
from salrt.models import load_model
from salrt.server import IMAGE, TENSOR, ServeOptions, TritonServer
from salrt.server.client import tensor_inputs
from salrt.server.process import children

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from triton_helpers import free_ports  # noqa: E402  (the tests' own: free loopback ports for a server)

BAD_EVERY = 10        # one request in this many is bad
GROWTH_LIMIT_MB = 50  # per process, first minute against last


def bad_requests(module, shape: tuple) -> list[tuple[str, str, list]]:
    """(name, model kind, inputs): requests the server must refuse, each in its own way."""
    good = np.zeros((1, *shape), np.float32)
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    photo = [module.InferInput("image_bytes", [1, 1], "BYTES")]
    photo[0].set_data_from_numpy(np.array([[b"\x89PNG not a picture"]], dtype=np.object_))
    return [("wrong shape", TENSOR, tensor_inputs(module, np.zeros((1, shape[0], 7, 9), np.float32))),
            ("NaN", TENSOR, tensor_inputs(module, nan)),
            ("target out of range", TENSOR, tensor_inputs(module, good, [10**6])),
            ("undecodable photo", IMAGE, photo + tensor_inputs(module, good)[1:]),
            ("missing image", TENSOR, tensor_inputs(module, good)[1:])]


class Client(threading.Thread):
    """Sends requests until ``stop``; records (minute, seconds, outcome) per request."""

    def __init__(self, server: TritonServer, module, shape: tuple, started: float, stop: threading.Event, seed: int):
        super().__init__(daemon=True)
        self.module, self.started, self.stop, self.random = module, started, stop, random.Random(seed)
        url = server.url if module is http else f"127.0.0.1:{server.options.grpc_port}"
        self.client = module.InferenceServerClient(url)
        self.models = server.models
        self.good = tensor_inputs(module, np.random.default_rng(seed).standard_normal((1, *shape), np.float32))
        self.bad = bad_requests(module, shape)
        self.records: list[tuple[int, float, str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            bad = self.random.randrange(BAD_EVERY) == 0
            name, kind, inputs = self.random.choice(self.bad) if bad else ("good", TENSOR, self.good)
            begun = time.perf_counter()
            try:
                result = self.client.infer(self.models[kind], inputs)
                outcome = "answered" if result.as_numpy("saliency") is not None else "empty"
            except InferenceServerException:
                outcome = "refused"
            except Exception as err:  # a dropped connection and the like: counted, never hidden
                outcome = f"failed: {type(err).__name__}"
            minute = int((begun - self.started) // 60)
            self.records.append((minute, time.perf_counter() - begun, ("bad " if bad else "good ") + outcome))


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of Triton and each stub (named by its model), in MB."""
    found = {"tritonserver": _rss(pid)}
    for child, command, _ in children(pid):
        if "/models/" in command:
            found[f"stub {command.split('/models/')[1].split('/')[0]}"] = _rss(child)
    return found


def _rss(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def soak(minutes: float, clients: int) -> dict:
    spec = load_model("resnet18", weights="random")
    artifact = cached_artifact(spec, ["onnx"], ROOT / ".bench-cache", progress=print)
    http_port, grpc_port, metrics_port = free_ports(3)
    options = ServeOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with TritonServer(artifact, options) as server:
        assert children(server.process.pid), "no stubs found under Triton"
        stop, started = threading.Event(), time.perf_counter()
        threads = [Client(server, http if i % 2 == 0 else grpc, spec.input_shape, started, stop, seed=i)
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        memory = []
        for minute in range(int(np.ceil(minutes))):
            time.sleep(max(0.0, started + 60 * (minute + 1) - 5 - time.perf_counter()))
            memory.append(rss_mb(server.process.pid))  # near each minute's end
            print(f"minute {minute + 1}: {sum(len(t.records) for t in threads):,} requests so far; "
                  f"RSS {', '.join(f'{k} {v:.0f} MB' for k, v in memory[-1].items())}", flush=True)
            time.sleep(max(0.0, started + 60 * (minute + 1) - time.perf_counter()))
        stop.set()
        for thread in threads:
            thread.join(60)
    records = [record for thread in threads for record in thread.records]
    return report(records, memory, minutes, clients)


def report(records: list, memory: list[dict], minutes: float, clients: int) -> dict:
    rows = []
    for minute, rss in enumerate(memory):
        mine = [(seconds, outcome) for m, seconds, outcome in records if m == minute]
        good = [seconds * 1000 for seconds, outcome in mine if outcome == "good answered"]
        rows.append({"minute": minute + 1, "requests": len(mine), "good_answered": len(good),
                     "p50_ms": round(percentile(good, 50), 1) if good else None,
                     "p99_ms": round(percentile(good, 99), 1) if good else None,
                     "good_errors": sum(outcome.startswith("good") and outcome != "good answered"
                                        for _, outcome in mine),
                     "bad_refused": sum(outcome == "bad refused" for _, outcome in mine),
                     "bad_not_refused": sum(outcome.startswith("bad") and outcome != "bad refused"
                                            for _, outcome in mine),
                     "rss_mb": {name: round(value, 1) for name, value in rss.items()}})
    growth = {name: round(memory[-1].get(name, float("nan")) - first, 1) for name, first in memory[0].items()}
    return {"date": datetime.date.today().isoformat(), "cpu": cpu_description(), "minutes": minutes,
            "clients": clients, "bad_every": BAD_EVERY, "rows": rows, "rss_growth_mb": growth,
            "good_errors": sum(row["good_errors"] for row in rows),
            "bad_not_refused": sum(row["bad_not_refused"] for row in rows),
            "passed": all(row["good_errors"] == 0 and row["bad_not_refused"] == 0 for row in rows)
            and all(value < GROWTH_LIMIT_MB for value in growth.values())}


def table(result: dict) -> str:
    processes = list(result["rows"][0]["rss_mb"])
    lines = ["| minute | requests | good answered | p50 ms | p99 ms | errors on good | bad refused | bad answered | "
             + " | ".join(f"RSS {name} MB" for name in processes) + " |",
             "|---" * (8 + len(processes)) + "|"]
    for row in result["rows"]:
        lines.append(f"| {row['minute']} | {row['requests']:,} | {row['good_answered']:,} | {row['p50_ms']} | "
                     f"{row['p99_ms']} | {row['good_errors']} | {row['bad_refused']:,} | {row['bad_not_refused']} | "
                     + " | ".join(f"{row['rss_mb'].get(name, float('nan')):.0f}" for name in processes) + " |")
    growth = ", ".join(f"{name} {value:+.1f} MB" for name, value in result["rss_growth_mb"].items())
    return "\n".join(lines) + (f"\n\nResident memory, last minute against the first: {growth} (limit "
                               f"+{GROWTH_LIMIT_MB} MB each). {'Passed' if result['passed'] else 'FAILED'}.")


def readme_block(result: dict) -> str:
    return (f"Generated by `python benchmarks/soak_serve.py` on {result['date']} ({result['cpu']}; "
            f"{result['minutes']:g} minutes, {result['clients']} clients, half HTTP and half gRPC, one "
            f"ResNet-18 image a request, 1 in {result['bad_every']} bad):\n\n" + table(result))


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    result = soak(args.minutes, args.clients)
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "soak-serve.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    if not args.no_readme:
        replace_readme_block(ROOT / "README.md", "soak", readme_block(result))
    return result


if __name__ == "__main__":
    main()
