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
from salrt.server.client import tensor_inputs

from conftest import GRAY_SHAPE, relative_l2
from triton_helpers import free_ports

import tritonclient.grpc as grpc  # noqa: E402
import tritonclient.http as http  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 4


def ports() -> dict:
    http_port, grpc_port, metrics_port = free_ports(3)
    return {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}


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


@pytest.fixture(scope="module")
def served(gray_artifact):
    with TritonServer(gray_artifact, ServeOptions(backend="onnxruntime", max_batch=MAX_BATCH, **ports())) as server:
        yield server


DTYPES = {"FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8,
          "BOOL": np.bool_}


def fuzzed_requests(classes: int):
    """(protocol, model kind, inputs or raw HTTP body, what is wrong): requests that must each get an error."""
    from hypothesis import strategies as st
    shapes = st.tuples(st.integers(1, MAX_BATCH), st.integers(0, 4), st.integers(0, 80), st.integers(0, 80)) \
        .filter(lambda shape: shape[1:] != GRAY_SHAPE)
    protocol = st.sampled_from(["http", "grpc"])
    right = lambda n: np.zeros((n, *GRAY_SHAPE), np.float32)  # noqa: E731
    return st.one_of(
        st.tuples(protocol, st.just("wrong shape"), shapes.map(lambda shape: np.zeros(shape, np.float32))),
        st.tuples(protocol, st.just("batch over the maximum"), st.integers(MAX_BATCH + 1, 3 * MAX_BATCH).map(right)),
        st.tuples(protocol, st.sampled_from([f"dtype {name}" for name in DTYPES]), st.integers(1, MAX_BATCH)),
        st.tuples(protocol, st.just("target out of range"),
                  st.lists(st.integers(classes, 2**62), min_size=1, max_size=MAX_BATCH)),
        st.tuples(protocol, st.just("targets for another batch"), st.integers(2, MAX_BATCH)),
        st.tuples(protocol, st.just("not finite"), st.sampled_from([np.nan, np.inf, -np.inf])),
        st.tuples(protocol, st.just("no image"), st.integers(1, MAX_BATCH)),
        st.tuples(protocol, st.just("an extra input"), st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1,
                                                               max_size=12).filter(lambda n: n not in ("image", "target"))),
        st.tuples(protocol, st.just("random bytes as images"), st.lists(st.binary(max_size=300), min_size=1,
                                                                         max_size=MAX_BATCH)),
        st.tuples(st.just("raw"), st.just("truncated body"), st.integers(1, 2000)),
    )


def send(served: TritonServer, name: str, request) -> None:
    """Sends one fuzzed request; raises InferenceServerException (or, raw, an HTTP error) as the server answers."""
    protocol, fault, value = request
    module = {"http": http, "grpc": grpc}.get(protocol)
    if protocol == "raw":
        return _truncated(served, name, value)
    client = http.InferenceServerClient(served.url) if module is http else \
        grpc.InferenceServerClient(f"127.0.0.1:{served.options.grpc_port}")
    model, inputs = name, None
    if fault in ("wrong shape", "batch over the maximum"):
        inputs = tensor_inputs(module, value)
    elif fault.startswith("dtype"):
        dtype = fault.split()[1]
        inputs = tensor_inputs(module, np.zeros((value, *GRAY_SHAPE), DTYPES[dtype]), dtype)
    elif fault in ("target out of range", "targets for another batch", "no image"):
        count = len(value) if fault == "target out of range" else value
        targets = np.array(value if fault == "target out of range" else [0] * (count - 1), np.int64).reshape(-1, 1)
        target = module.InferInput("target", list(targets.shape), "INT64")
        target.set_data_from_numpy(targets)
        image = [] if fault == "no image" else tensor_inputs(module, np.zeros((count, *GRAY_SHAPE), np.float32))[:1]
        inputs = image + [target]
    elif fault == "not finite":
        image = np.zeros((1, *GRAY_SHAPE), np.float32)
        image[0, 0, 3, 5] = value
        inputs = tensor_inputs(module, image)
    elif fault == "an extra input":
        extra = module.InferInput(value, [1, 1], "FP32")
        extra.set_data_from_numpy(np.zeros((1, 1), np.float32))
        inputs = tensor_inputs(module, np.zeros((1, *GRAY_SHAPE), np.float32)) + [extra]
    elif fault == "random bytes as images":
        model = f"{name}_image"
        inputs = [module.InferInput("image_bytes", [len(value), 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[b"\x89PNG" + data] for data in value], dtype=np.object_))
        inputs += tensor_inputs(module, np.zeros((len(value), 1), np.float32))[1:]
    try:
        client.infer(model, inputs)
    finally:
        client.close()


def _truncated(served: TritonServer, name: str, cut: int) -> None:
    """A binary-tensor HTTP request whose body ends ``cut`` bytes early (its header still claims every byte)."""
    import http.client
    import json
    image = np.zeros((1, *GRAY_SHAPE), np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": [1, *GRAY_SHAPE], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(image)}},
                                    {"name": "target", "shape": [1, 1], "datatype": "INT64", "data": [-1]}]}).encode()
    body = (header + image)[:-cut]
    connection = http.client.HTTPConnection(*served.url.split(":"), timeout=30)
    try:
        connection.request("POST", f"/v2/models/{name}/infer", body=body,
                           headers={"Inference-Header-Content-Length": str(len(header))})
        response = connection.getresponse()
        raise InferenceServerException(f"[{response.status}] {response.read()[:200]!r}") if response.status >= 400 \
            else AssertionError(f"a truncated body was answered {response.status}")
    finally:
        connection.close()


def test_fuzzed_requests_each_get_an_error_and_the_next_good_one_is_answered(served, gray_artifact):
    from hypothesis import HealthCheck, given, settings
    local = salrt.load(gray_artifact, backend="onnxruntime")
    name = model_names(local.manifest)["tensor"]
    image = torch.randn(1, *GRAY_SHAPE, generator=torch.Generator().manual_seed(11))
    expected = local.explain(image).grad
    good = http.InferenceServerClient(served.url)
    tried: dict[str, int] = {}

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(fuzzed_requests(len(local.categories)))
    def check(request):
        tried[request[1]] = tried.get(request[1], 0) + 1
        with pytest.raises(InferenceServerException):
            send(served, name, request)
        grad = good.infer(name, tensor_inputs(http, image.numpy())).as_numpy("grad")
        assert relative_l2(torch.from_numpy(grad.copy()), expected) <= 1e-5, request[:2]
    check()
    print(f"fuzzed requests: {sum(tried.values())} ({', '.join(f'{k} {v}' for k, v in sorted(tried.items()))}), "
          f"each refused and followed by a good one answered")
    assert sum(tried.values()) >= 300 and len(tried) >= 12
