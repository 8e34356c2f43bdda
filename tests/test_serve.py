"""`salrt serve`: a real Triton Inference Server on free loopback ports, spoken to with the standard clients."""
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import salrt
from salrt.server import ServeOptions, TritonServer, model_names
from salrt.server.client import RemoteExplainer, tensor_inputs

from conftest import GRAY_SHAPE, png_header, relative_l2
from triton_helpers import free_ports

# salrt[serve] is part of `make test`: without tritonclient this file fails, it does not skip
import tritonclient.grpc as grpc  # noqa: E402
import tritonclient.http as http  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 8


def options(**changes) -> ServeOptions:
    http_port, grpc_port, metrics_port = free_ports(3)
    return ServeOptions(**{"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
                           "backend": "onnxruntime", "max_batch": MAX_BATCH, **changes})


@pytest.fixture(scope="module")
def artifact(exported):
    return exported("resnet18", formats=("onnx",))


@pytest.fixture(scope="module")
def server(artifact):
    # the default 2 ms delay: requests arriving while the model computes queue up and run as one batch
    with TritonServer(artifact, options()) as running:
        yield running


@pytest.fixture(scope="module")
def local(artifact):
    return salrt.load(artifact, backend="onnxruntime")


def target_input(module, target) -> object:
    tensor = module.InferInput("target", [len(target), 1], "INT64")
    tensor.set_data_from_numpy(np.asarray(target, dtype=np.int64).reshape(-1, 1))
    return tensor


tensor_request = tensor_inputs  # ``target``: None sends -1 per row, the top class (every input is required)


def image_request(encoded: list[bytes], target=None):
    inputs = [http.InferInput("image_bytes", [len(encoded), 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[e] for e in encoded], dtype=np.object_))
    return inputs + [target_input(http, [-1] * len(encoded) if target is None else target)]


def encoded_photos(photos) -> list[bytes]:
    files = []
    for array in photos.values():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG")
        files.append(buffer.getvalue())
    return files


def test_tensor_model_matches_in_process_over_http_and_grpc(server, local):
    image = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(7))  # never seen by the export
    target = [-1, 281, 5]
    expected = local.explain(image, target)
    clients = {"http": (http, http.InferenceServerClient(server.url)),
               "grpc": (grpc, grpc.InferenceServerClient(f"127.0.0.1:{server.options.grpc_port}"))}
    for protocol, (module, client) in clients.items():
        result = client.infer("resnet18", tensor_request(module, image.numpy(), target))
        assert result.as_numpy("used_target").shape == (3, 1), protocol
        assert result.as_numpy("used_target").ravel().tolist() == expected.target.tolist(), protocol
        assert result.as_numpy("used_target")[1, 0] == 281
        for name, tensor in (("logits", expected.logits), ("saliency", expected.saliency), ("grad", expected.grad)):
            assert relative_l2(torch.from_numpy(result.as_numpy(name).copy()), tensor) <= 1e-5, (protocol, name)
        assert np.abs(result.as_numpy("grad")).max() > 0


def test_every_input_is_required_by_name_and_a_negative_target_means_the_top_class(server, local):
    """Triton checks only the count of inputs where some are optional, and a request with a target but no image
    crashed it (SIGSEGV): every input is required, and a request missing one is refused naming it."""
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    client = http.InferenceServerClient(server.url)
    result = client.infer("resnet18", tensor_request(http, image.numpy()))
    assert result.as_numpy("used_target").ravel().tolist() == local.explain(image).target.tolist()
    for inputs, missing in ((tensor_request(http, image.numpy())[:1], "target"),
                            (tensor_request(http, image.numpy())[1:], "image")):
        with pytest.raises(InferenceServerException, match=f"missing required input\\(s\\) \\['{missing}'\\]"):
            client.infer("resnet18", inputs)
    assert server.process.poll() is None


def test_image_model_matches_in_process_on_photos(server, local, photos):
    encoded = encoded_photos(photos)
    expected = local.explain(encoded, [-1, 504, -1])
    result = http.InferenceServerClient(server.url).infer("resnet18_image", image_request(encoded, [-1, 504, -1]))
    assert result.as_numpy("saliency").dtype == np.uint8 and result.as_numpy("saliency").shape == (3, 224, 224)
    assert result.as_numpy("used_target").ravel().tolist() == expected.target.tolist()
    assert relative_l2(torch.from_numpy(result.as_numpy("logits").copy()), expected.logits) <= 1e-5
    uint8 = (expected.saliency * 255).round()
    assert np.abs(result.as_numpy("saliency").astype(np.float32) - uint8.numpy()).max() <= 1
    assert result.as_numpy("saliency").max() == 255


@pytest.mark.parametrize("scheme", ["", "http://", "grpc://"])
def test_remote_explainer_speaks_http_or_grpc_as_the_url_says(server, local, photos, scheme):
    from salrt.server.client import RemoteExplainer
    port = server.options.grpc_port if scheme == "grpc://" else server.options.http_port
    remote = RemoteExplainer(f"{scheme}127.0.0.1:{port}", "resnet18")
    encoded = encoded_photos(photos)
    served, expected = remote.explain(encoded, target=504), local.explain(encoded, 504)
    assert remote.protocol == (scheme.removesuffix("://") or "http") and remote.categories == local.categories
    assert served.grad is None and served.used_target.tolist() == expected.target.tolist() == [504] * 3
    assert relative_l2(served.logits, expected.logits) <= 1e-5
    assert (served.saliency - expected.saliency).abs().max() <= 1 / 255


def test_remote_explainer_refuses_an_unknown_scheme():
    from salrt.server.client import RemoteExplainer
    with pytest.raises(salrt.errors.InputError, match="grpc://HOST:PORT"):
        RemoteExplainer("https://127.0.0.1:1", "resnet18")


def test_a_request_asking_for_timing_logs_salrt_phases(server):
    from salrt.server.repository import TIMING
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(13)).numpy()
    client = grpc.InferenceServerClient(f"127.0.0.1:{server.options.grpc_port}")
    client.infer("resnet18", tensor_request(grpc, image), outputs=[grpc.InferRequestedOutput("saliency")],
                 request_id="timed-1", parameters={TIMING: True})
    client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f"{TIMING} timed-1 " not in server.log.read_text(errors="replace"):
        time.sleep(0.1)
    line = next(line for line in server.log.read_text(errors="replace").splitlines() if f"{TIMING} timed-1 " in line)
    fields = dict(field.split("=") for field in line.strip('"').split(f"{TIMING} timed-1 ")[1].strip('"').split())
    assert set(fields) == {"salrt_check_us", "salrt_explain_us", "salrt_outputs_us", "salrt_respond_us",
                           "salrt_entered_ns", "salrt_left_ns", "salrt_torch_threads"}
    assert int(fields["salrt_explain_us"]) > 0 and int(fields["salrt_left_ns"]) > int(fields["salrt_entered_ns"])


def test_serves_a_grayscale_non_square_model_with_its_own_classes(gray_artifact, photos):
    """The served configs follow the manifest: image [N,1,48,64] in; photos are decoded to grayscale."""
    local = salrt.load(gray_artifact, backend="onnxruntime")
    image = torch.randn(2, *GRAY_SHAPE, generator=torch.Generator().manual_seed(9))
    encoded = encoded_photos(photos)
    with TritonServer(gray_artifact, options()) as running:
        client = http.InferenceServerClient(running.url)
        name = model_names(local.manifest)["tensor"]
        shapes = {io["name"]: io["shape"] for io in client.get_model_metadata(name)["inputs"]}
        tensor = client.infer(name, tensor_request(http, image.numpy()))
        served = client.infer(f"{name}_image", image_request(encoded))
        client.close()
    assert shapes["image"] == [-1, *GRAY_SHAPE]
    assert relative_l2(torch.from_numpy(tensor.as_numpy("grad").copy()), local.explain(image).grad) <= 1e-5
    expected = local.explain(encoded)
    assert served.as_numpy("saliency").shape == (3, 48, 64)
    assert served.as_numpy("used_target").ravel().tolist() == expected.target.tolist()


@pytest.mark.parametrize("protocol", [http, grpc], ids=["http", "grpc"])
def test_a_request_gets_only_the_outputs_it_names(server, local, protocol):
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(12))
    client = protocol.InferenceServerClient(server.url if protocol is http else f"127.0.0.1:{server.options.grpc_port}")
    result = client.infer("resnet18", tensor_request(protocol, image.numpy()),
                          outputs=[protocol.InferRequestedOutput("saliency")])
    client.close()
    response = result.get_response(as_json=True) if protocol is grpc else result.get_response()
    assert [output["name"] for output in response["outputs"]] == ["saliency"]
    assert result.as_numpy("grad") is None
    assert relative_l2(torch.from_numpy(result.as_numpy("saliency").copy()), local.explain(image).saliency) <= 1e-5


def test_concurrent_requests_are_batched_and_keep_their_own_targets(server):
    client_statistics = http.InferenceServerClient(server.url)
    before = client_statistics.get_inference_statistics("resnet18")["model_stats"][0]
    images = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(9)).numpy()
    targets = [i * 50 if i % 3 else -1 for i in range(16)]

    def one(i):
        client = http.InferenceServerClient(server.url)  # gevent underneath: one client per thread
        result = client.infer("resnet18", tensor_request(http, images[i:i + 1], [targets[i]]))
        return int(result.as_numpy("used_target")[0, 0])

    with ThreadPoolExecutor(16) as pool:
        used = list(pool.map(one, range(16)))
    assert [u for u, t in zip(used, targets) if t >= 0] == [t for t in targets if t >= 0]
    after = client_statistics.get_inference_statistics("resnet18")["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 16 and executions < inferences, (inferences, executions)


BAD_IMAGES = {
    "empty": b"",
    "not an image": b"hello, this is text",
    "corrupt": b"\xff\xd8\xff\xe0" + os.urandom(200),
    "truncated": None,  # a real JPEG cut in half, filled in below
    "bomb": png_header(20000, 20000),
}


def bad_requests(photos) -> dict:
    """name -> (model, inputs, what the error must say)."""
    jpeg = encoded_photos(photos)[0]
    images = {**BAD_IMAGES, "truncated": jpeg[:len(jpeg) // 2]}
    requests = {f"image: {name}": ("resnet18_image", image_request([data]), "image_bytes row 0")
                for name, data in images.items()}
    requests["image: bomb"] = ("resnet18_image", image_request([images["bomb"]]), "megapixels, over the limit")
    requests["image: target out of range"] = ("resnet18_image", image_request([jpeg], [5000]), "out of range")
    good = np.zeros((1, 3, 224, 224), np.float32)
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    requests.update({
        "tensor: float64": ("resnet18", tensor_request(http, good.astype(np.float64), dtype="FP64"), "FP64"),
        "tensor: wrong size": ("resnet18", tensor_request(http, np.zeros((1, 3, 100, 100), np.float32)), "shape"),
        "tensor: NaN": ("resnet18", tensor_request(http, nan), "NaN"),
        "tensor: target out of range": ("resnet18", tensor_request(http, good, [1000]), "out of range"),
        "tensor: batch over --max-batch": (
            "resnet18", tensor_request(http, np.zeros((MAX_BATCH + 1, 3, 224, 224), np.float32)), "batch"),
    })
    return requests


def test_every_bad_request_gets_its_own_error_and_the_server_keeps_serving(server, photos):
    client = http.InferenceServerClient(server.url)
    good = tensor_request(http, np.zeros((1, 3, 224, 224), np.float32))
    for name, (model, inputs, message) in bad_requests(photos).items():
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, inputs)
        assert message in caught.value.message(), (name, caught.value.message())
        assert client.infer("resnet18", good).as_numpy("logits").shape == (1, 1000), name


def test_a_bad_request_batched_with_good_ones_fails_alone(server, photos):
    """Triton's batcher hands the model bad and good requests together: only the bad one may fail."""
    encoded = encoded_photos(photos)[0]
    payloads = [[encoded] if i % 4 else [b"not an image"] for i in range(12)]

    def one(payload):
        try:
            result = http.InferenceServerClient(server.url).infer("resnet18_image", image_request(payload))
            return int(result.as_numpy("used_target")[0, 0])
        except InferenceServerException as err:
            return err.message()

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(one, payloads))
    for payload, outcome in zip(payloads, outcomes):
        if payload[0] == encoded:
            assert isinstance(outcome, int), outcome
        else:
            assert "not a readable image" in outcome


def _rss_mb(pid: int) -> dict[int, float]:
    """Resident memory of a process and its children (Triton and its Python-backend stubs), by pid."""
    found, pids = {}, [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                found[current] = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
            with open(f"/proc/{current}/task/{current}/children") as children:
                pids += [int(child) for child in children.read().split()]
        except (FileNotFoundError, StopIteration):
            pass
    return found


def test_a_thousand_bad_requests_leak_nothing(server, photos):
    client = http.InferenceServerClient(server.url)
    requests = list(bad_requests(photos).values())
    def thousand_bad_requests():
        for i in range(1000):
            model, inputs, _ = requests[i % len(requests)]
            with pytest.raises(InferenceServerException):
                client.infer(model, inputs)
    # The first thousand grow Triton's and the tensor stub's buffers once (measured: +32 MB each), and the
    # next thousands add under 1 MB: a leak would keep growing, so the second thousand is the one measured.
    thousand_bad_requests()
    before = _rss_mb(server.process.pid)
    thousand_bad_requests()
    after = _rss_mb(server.process.pid)
    assert sum(after.values()) - sum(before.values()) < 50, (before, after)
    assert client.infer("resnet18", tensor_request(http, np.zeros((1, 3, 224, 224), np.float32))).as_numpy("logits") is not None


def test_triton_and_its_stubs_keep_freed_memory_for_the_next_request(server, monkeypatch):
    """Triton and every Python-backend stub it started run with salrt's malloc settings (a request's
    activations reuse the heap instead of faulting fresh pages in: 3.5 ms of a ResNet-18 call on the CPU);
    a setting the user made wins."""
    from salrt.server.process import MALLOC_SETTINGS, _environment
    processes = _rss_mb(server.process.pid)
    assert len(processes) >= 3, processes  # tritonserver, the tensor model's stub, the image model's stub
    for pid in processes:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert all(f"{key}={value}".encode() in environment for key, value in MALLOC_SETTINGS.items()), pid
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert _environment()["MALLOC_TRIM_THRESHOLD_"] == "0"


def test_shared_memory_is_closed_unless_asked_for_and_then_carries_the_tensors(artifact, server, local):
    """A same-host client's tensors through system shared memory: refused by a default server (the API stays
    restricted), and with ``shared_memory=True`` each request's image and outputs go through the regions and
    match in-process, request after request (the regions are rewritten, not appended to)."""
    from salrt.server.client import SharedMemoryTensors
    outputs = {"saliency": ((1, 224, 224), np.float32), "logits": ((1, 1000), np.float32)}
    closed = grpc.InferenceServerClient(f"127.0.0.1:{server.options.grpc_port}")
    with pytest.raises(InferenceServerException, match="This protocol is restricted"):
        SharedMemoryTensors(closed, (1, 3, 224, 224), outputs)
    with TritonServer(artifact, options(shared_memory=True)) as shared:
        client = grpc.InferenceServerClient(f"127.0.0.1:{shared.options.grpc_port}")
        with SharedMemoryTensors(client, (1, 3, 224, 224), outputs) as tensors:
            for seed in (11, 12):
                image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
                expected, got = local.explain(image), tensors.infer("resnet18", image.numpy())
                assert set(got) == {"saliency", "logits"}
                assert relative_l2(torch.from_numpy(got["saliency"]), expected.saliency) <= 1e-5, seed
                assert relative_l2(torch.from_numpy(got["logits"]), expected.logits) <= 1e-5, seed
                assert got["saliency"].max() > 0
            with pytest.raises(salrt.errors.InputError, match=r"shape \(2, 3, 224, 224\) for regions sized for \(1, 3, 224, 224\)"):
                tensors.infer("resnet18", np.zeros((2, 3, 224, 224), np.float32))
        assert client.get_system_shared_memory_status().regions == {}  # unregistered on close


def test_admin_endpoints_are_closed(server):
    def status(method: str, path: str) -> int:
        request = urllib.request.Request(f"http://{server.url}{path}", data=b"{}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code
    assert status("POST", "/v2/repository/index") == 403
    assert status("POST", "/v2/repository/models/resnet18/unload") == 403
    assert status("POST", "/v2/systemsharedmemory/region/x/register") == 403
    assert status("GET", "/v2/models/resnet18/ready") == 200  # the server still serves


def non_loopback_ipv4() -> str:
    """An IPv4 address of this machine that is not loopback: the source address the kernel picks toward a
    routable one (connecting a UDP socket sends nothing), else one the host name resolves to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            candidates = [probe.getsockname()[0]]
        except OSError:  # no route at all
            candidates = []
    candidates += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    found = [address for address in candidates if not address.startswith("127.") and address != "0.0.0.0"]
    assert found, "this machine has no non-loopback IPv4 address: salrt serve's loopback-only binding cannot be checked"
    return found[0]


def answers(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted (False: refused, nothing listens there)."""
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except ConnectionRefusedError:
        return False


def test_only_loopback_is_bound(server):
    """What Triton bound, not the flags salrt gave it: the default --host answers on 127.0.0.1 and refuses
    the same ports on this machine's other address."""
    address = non_loopback_ipv4()
    with socket.create_server((address, 0)) as control:  # that address takes connections from this machine
        assert answers(address, control.getsockname()[1])
    ports = (server.options.http_port, server.options.grpc_port, server.options.metrics_port)
    assert server.options.host == ServeOptions().host == "127.0.0.1"
    assert [answers("127.0.0.1", port) for port in ports] == [True] * 3
    assert [answers(address, port) for port in ports] == [False] * 3, f"Triton answers on {address}"


def test_image_model_saliency_has_the_bytes_of_the_float_map(local):
    """The image model's uint8 saliency, the fused op's uint8 output from grad, is round(255 * saliency)."""
    from salrt.server.repository import image_saliency
    generator = torch.Generator().manual_seed(21)
    maps = torch.rand(4, 1, 40, 56, generator=generator)
    maps[:, 0, 0, :2] = torch.tensor([0.0, 1.0])  # each spans [0, 1] exactly, as a normalized map does
    maps[1, 0, 1, :8] = (torch.arange(8) + 0.5) / 255  # at the boundaries between two bytes
    maps[3] = 0.0  # a constant map (a constant image's)
    # one channel already spanning [0, 1]: the op's min-max scaling leaves it as it is
    assert torch.equal(image_saliency(maps), (maps[:, 0] * 255).round().to(torch.uint8))
    explained = local.explain(torch.randn(3, 3, 224, 224, generator=generator), [-1, 281, 5])
    assert torch.equal(image_saliency(explained.grad), (explained.saliency * 255).round().to(torch.uint8))


def test_stop_lets_the_request_in_flight_finish(artifact):
    server = TritonServer(artifact, options())
    with server:
        client = http.InferenceServerClient(server.url)
        image = np.random.default_rng(0).standard_normal((MAX_BATCH, 3, 224, 224), dtype=np.float32)
        result = {}

        def request():
            result["r"] = client.infer("resnet18", tensor_request(http, image))
            client.close()  # Triton waits (up to its exit timeout) for clients' keep-alive connections to close
        worker = threading.Thread(target=request)
        worker.start()
        time.sleep(0.3)  # the request is being computed
        code = server.stop()
        worker.join(60)
    assert "r" in result and result["r"].as_numpy("grad").shape == (MAX_BATCH, 3, 224, 224)
    assert code == 0
    assert not server.workspace.exists()


def test_serve_command_starts_explains_and_stops_on_sigterm(artifact, photo_files, tmp_path):
    o = options()
    serve = subprocess.Popen([sys.executable, "-m", "salrt.cli", "serve", str(artifact), "--backend", "onnxruntime",
                              f"--http-port={o.http_port}", f"--grpc-port={o.grpc_port}",
                              f"--metrics-port={o.metrics_port}"], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("ready:" in line for line in lines):
            lines.append(serve.stderr.readline())
            assert serve.poll() is None, "".join(lines)
        paths = [str(p) for p in photo_files.values()]
        remote = subprocess.run([sys.executable, "-m", "salrt.cli", "explain", "resnet18", "--server",
                                 f"localhost:{o.http_port}", *paths, "--out", tmp_path / "remote"],
                                capture_output=True, text=True)
        local = subprocess.run([sys.executable, "-m", "salrt.cli", "explain", str(artifact), *paths, "--out",
                                tmp_path / "local", "--backend", "onnxruntime"], capture_output=True, text=True)
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout and len(remote.stdout.splitlines()) == 3
        assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == \
            sorted(p.name for p in (tmp_path / "local").iterdir())
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()


def test_serve_refuses_bad_options_and_a_missing_artifact(tmp_path, artifact, photo_files):
    with pytest.raises(salrt.errors.InputError, match="ports"):
        TritonServer(artifact, ServeOptions(http_port=9000, grpc_port=9000, metrics_port=9002))
    with pytest.raises(salrt.errors.InputError, match="queue-delay"):
        TritonServer(artifact, options(max_queue_delay_ms=float("nan")))
    with pytest.raises(salrt.errors.ArtifactError, match="not a salrt artifact"):
        TritonServer(tmp_path, options())
    with pytest.raises(salrt.errors.ArtifactError, match="has no aoti artifact"):
        TritonServer(artifact, options(backend="aoti"))
    with pytest.raises(salrt.errors.InputError, match="no CUDA device"):
        TritonServer(artifact, options(device="cuda"))
    result = subprocess.run([sys.executable, "-m", "salrt.cli", "explain", "resnet18", "--server",
                             f"127.0.0.1:{free_ports(1)[0]}", str(photo_files["chelsea"])], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: no salrt server answers"), result.stderr


def test_serves_whatever_method_the_artifact_holds(tmp_path):
    """An integrated-gradients artifact: its extra output (delta) is declared and served like the others."""
    method = salrt.Method("integrated_gradients", steps=4, chunk=2)
    artifact = salrt.export("resnet18", tmp_path / "ig", formats="torchscript", weights="random", image_size=64,
                            method=method)
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    expected = salrt.load(artifact).explain(image, [-1, 3])
    with TritonServer(artifact, options(backend="torchscript")) as server:
        client = http.InferenceServerClient(server.url)
        outputs = [o["name"] for o in client.get_model_metadata("resnet18")["outputs"]]
        result = client.infer("resnet18", tensor_request(http, image.numpy(), [-1, 3]))
        client.close()
    assert outputs == ["logits", "used_target", "saliency", "grad", "delta"]
    assert result.as_numpy("delta").shape == (2, 1)
    assert relative_l2(torch.from_numpy(result.as_numpy("grad").copy()), expected.attribution) <= 1e-5
    assert np.allclose(result.as_numpy("delta").ravel(), expected.delta.numpy(), atol=1e-5)


def test_serves_a_cam_artifact_and_its_uint8_image_model(gradcam_artifact, photos):
    """Grad-CAM's extra output (cam) is served; the image model's uint8 map, made from grad by the fused op, is
    round(255 * saliency): the CAM family's grad is its upsampled map in every channel."""
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    local = salrt.load(gradcam_artifact, backend="torchscript")
    expected, encoded = local.explain(image, [-1, 3]), encoded_photos(photos)
    with TritonServer(gradcam_artifact, options(backend="torchscript")) as server:
        client = http.InferenceServerClient(server.url)
        names = model_names(local.manifest)
        outputs = [o["name"] for o in client.get_model_metadata(names["tensor"])["outputs"]]
        result = client.infer(names["tensor"], tensor_request(http, image.numpy(), [-1, 3]))
        served = client.infer(names["image"], image_request(encoded)).as_numpy("saliency")
        client.close()
    assert outputs == ["logits", "used_target", "saliency", "grad", "cam"]
    assert relative_l2(torch.from_numpy(result.as_numpy("cam").copy()), expected.outputs["cam"]) <= 1e-5
    assert relative_l2(torch.from_numpy(result.as_numpy("saliency").copy()), expected.saliency) <= 1e-5
    uint8 = (local.explain(encoded).saliency * 255).round().numpy()
    assert served.dtype == np.uint8 and np.abs(served.astype(np.float32) - uint8).max() <= 1 and served.max() == 255


def _infer_all(url: str, model: str, requests: list[list]) -> list:
    """Each request's result, or its error message, sent at once so that Triton batches them together."""
    def one(inputs):
        try:
            return http.InferenceServerClient(url).infer(model, inputs)
        except InferenceServerException as err:
            return err.message()
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def _with(inputs: list, **tensors) -> list:
    """``inputs`` and the named tensors of a task (region, box: float32; query: int64)."""
    for name, value in tensors.items():
        dtype = np.int64 if name == "query" else np.float32
        inputs.append(http.InferInput(name, list(value.shape), "INT64" if dtype is np.int64 else "FP32"))
        inputs[-1].set_data_from_numpy(np.ascontiguousarray(value, dtype))
    return inputs


def _no_query(n: int) -> np.ndarray:
    """-1 per row: the query the box or the score picks (every input is required)."""
    return np.full((n, 1), -1)


def test_serves_a_segmentation_region_and_refuses_an_empty_one_alone(tmp_path, photo_files):
    """Requests batched together: one with a region and the default, one whose region is empty and one whose
    class is predicted nowhere. The empty ones get their own errors; the first gets in-process's outputs, on the
    tensor model, the photo model (its mask resized by the client) and ``salrt explain --server --region``."""
    from test_segmentation import CLASSES, Painted
    artifact = salrt.export(Painted(), tmp_path / "painted", formats="torchscript", categories=CLASSES, image_size=32)
    local = salrt.load(artifact)
    image = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32)
    region = np.full((2, 32, 32), -1, np.float32)
    region[0, 8:20, 4:30] = 1
    expected = local.explain(torch.from_numpy(image), [1, -1], region=torch.from_numpy(region))
    mask = np.zeros((300, 400), np.uint8)
    mask[:150] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    photo = photo_files["chelsea"].read_bytes()
    expected_photo = local.explain(photo, 2, region=tmp_path / "mask.png")
    with TritonServer(artifact, options(backend="torchscript")) as server:
        good, empty, nowhere = _infer_all(server.url, "Painted", [
            _with(tensor_request(http, image, [1, -1]), region=region),
            _with(tensor_request(http, image[:1], [1]), region=np.zeros((1, 32, 32))),
            _with(tensor_request(http, image[:1], [3]), region=np.full((1, 32, 32), -1))])
        served_photo = RemoteExplainer(server.url, "Painted").explain([photo], 2, region=tmp_path / "mask.png")
        cli = subprocess.run([sys.executable, "-m", "salrt.cli", "explain", "Painted", "--server", server.url,
                              str(photo_files["chelsea"]), "--target", "2", "--region", str(tmp_path / "mask.png"),
                              "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert "the region is empty at the model's output grid" in empty
    assert "predicts class 3 (bird) nowhere" in nowhere
    for name in ("logits", "saliency", "grad", "used_region", "score"):
        assert np.allclose(good.as_numpy(name).reshape(expected.outputs[name].shape), expected.outputs[name], atol=1e-6)
    assert good.as_numpy("used_target").ravel().tolist() == [1, 2]
    assert torch.equal(served_photo.used_region, expected_photo.used_region) and served_photo.used_target.tolist() == [2]
    assert (served_photo.saliency - expected_photo.saliency).abs().max() <= 1 / 255
    assert cli.returncode == 0, cli.stderr
    overlay = np.asarray(Image.open(tmp_path / "out" / "chelsea_overlay.png"))
    assert ((overlay == (0, 255, 255)).all(-1)).sum() > 16  # the region's outline


def test_serves_a_detection_box_on_tensors_and_photos(tmp_path, photo_files):
    from test_detection import CLASSES, TinyDetector
    torch.manual_seed(0)
    artifact = salrt.export(TinyDetector(), tmp_path / "detector", formats="torchscript", categories=CLASSES,
                            image_size=64)
    local = salrt.load(artifact)
    image = np.random.default_rng(4).normal(size=(2, 3, 64, 64)).astype(np.float32)
    box = np.array([[4, 4, 40, 30], [-1, -1, -1, -1]], np.float32)
    expected = local.explain(torch.from_numpy(image), box=box)
    photo = photo_files["coffee"].read_bytes()
    expected_photo = local.explain(photo, box=[10, 10, 50, 60])
    with TritonServer(artifact, options(backend="torchscript")) as server:
        client = http.InferenceServerClient(server.url)
        served = client.infer("TinyDetector", _with(tensor_request(http, image), box=box, query=_no_query(2)))
        outputs = [o["name"] for o in client.get_model_metadata("TinyDetector_image")["outputs"]]
        with pytest.raises(InferenceServerException, match=r"is not a box inside the model's 64x64 input"):
            client.infer("TinyDetector", _with(tensor_request(http, image[:1]), box=np.array([[0, 0, 80, 10]]),
                                               query=_no_query(1)))
        served_photo = RemoteExplainer(server.url, "TinyDetector").explain([photo], box=[10, 10, 50, 60])
    assert outputs == ["logits", "used_target", "saliency", "used_query", "used_box", "score"]
    assert served.as_numpy("used_query").ravel().tolist() == expected.used_query.tolist()
    for name in ("used_box", "score", "grad"):
        assert np.allclose(served.as_numpy(name).reshape(expected.outputs[name].shape), expected.outputs[name], atol=1e-5)
    assert served_photo.used_query.tolist() == expected_photo.used_query.tolist()
    assert torch.allclose(served_photo.used_box, expected_photo.used_box, atol=1e-4)
    assert (served_photo.saliency - expected_photo.saliency).abs().max() <= 1 / 255
