"""`salrt serve` under faults: a Python-backend stub killed mid-request, Triton killed, and property-based
fuzzed requests (Hypothesis, loopback only). Real Triton, real processes, the standard clients."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import salrt
from salrt.server import ServeOptions, TritonServer, model_names

from conftest import GRAY_SHAPE, relative_l2
from triton_helpers import free_ports

import tritonclient.grpc as grpc  # noqa: E402
import tritonclient.http as http  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 4


def ports() -> dict:
    http_port, grpc_port, metrics_port = free_ports(3)
    return {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}


def tensor_inputs(module, image: np.ndarray, dtype: str = "FP32") -> list:
    inputs = [module.InferInput("image", list(image.shape), dtype)]
    inputs[0].set_data_from_numpy(image)
    return inputs


class Serving:
    """`salrt serve ARTIFACT` as a process; its stderr lines collected as they come."""

    def __init__(self, artifact: Path):
        self.ports = ports()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "salrt.cli", "serve", str(artifact), "--backend", "onnxruntime",
             *(f"--{key.replace('_', '-')}={value}" for key, value in self.ports.items())],
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 300
        while not any("ready:" in line for line in self.lines):
            assert self.process.poll() is None and time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.1)
        self.url = f"127.0.0.1:{self.ports['http_port']}"

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def processes(self, marker: str) -> list[int]:
        """Descendants of salrt serve whose command line holds ``marker``."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes() and \
                        self._descends(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
        return found

    def _descends(self, pid: int) -> bool:
        while pid > 1:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if pid == self.process.pid:
                return True
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_a_killed_stub_fails_its_requests_and_is_loaded_again_and_a_killed_triton_ends_serve(gray_artifact):
    local = salrt.load(gray_artifact, backend="onnxruntime")
    name = model_names(local.manifest)["tensor"]
    image = torch.randn(1, *GRAY_SHAPE, generator=torch.Generator().manual_seed(4))
    expected = local.explain(image)
    serving = Serving(gray_artifact)
    try:
        outcomes, stop = [], threading.Event()

        def client_loop():
            client = http.InferenceServerClient(serving.url, network_timeout=120)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    grad = client.infer(name, tensor_inputs(http, image.numpy())).as_numpy("grad")
                    outcomes.append((started, time.monotonic(), relative_l2(torch.from_numpy(grad.copy()),
                                                                            expected.grad)))
                except InferenceServerException as err:
                    outcomes.append((started, time.monotonic(), err.message()))
        clients = [threading.Thread(target=client_loop) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        [stub] = serving.processes(f"/models/{name}/1/model.py")
        killed_at = time.monotonic()
        os.kill(stub, signal.SIGKILL)
        deadline = killed_at + 120
        while not any(start > killed_at and isinstance(result, float) for start, _, result in outcomes):
            assert time.monotonic() < deadline, "".join(serving.lines)
            time.sleep(0.05)
        time.sleep(3.0)
        stop.set()
        for client in clients:
            client.join(120)

        after = [(start, end, result) for start, end, result in outcomes if end > killed_at]
        failed = [result for _, _, result in after if isinstance(result, str)]
        assert failed and all("not healthy" in message for message in failed), set(failed)
        back = min(end for start, end, result in after if start > killed_at and isinstance(result, float))
        last_failure = max(end for _, end, result in after if isinstance(result, str))
        # the new stub answers while requests already queued for the old one still fail, for a moment
        assert last_failure - back < 2.0
        assert all(isinstance(result, float) for start, _, result in outcomes if start > last_failure + 0.1)
        assert all(result <= 1e-5 for _, _, result in outcomes if isinstance(result, float))
        print(f"stub killed: {len(failed)} requests failed with an error reply; answered again after "
              f"{back - killed_at:.1f} s, every request after {last_failure - killed_at:.1f} s")
        assert any("its backend process died; loading it again" in line for line in serving.lines)
        assert any("serving again after" in line for line in serving.lines)

        [triton] = serving.processes("tritonserver")
        os.kill(triton, signal.SIGKILL)
        assert serving.process.wait(60) == 1
        time.sleep(0.2)
        assert serving.lines[-1].strip() == "error: Triton was killed by SIGKILL: nothing is served any more", \
            serving.lines[-3:]
    finally:
        serving.stop()
