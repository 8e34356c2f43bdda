"""Run Triton Inference Server (the binary of the nvidia-pytriton wheel) on a generated model repository."""
from __future__ import annotations

import ctypes
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ..artifact import check_digest
from ..errors import InputError, SalrtError
from ..formats import AUTO, check_backend
from ..formats.triton_config import check_batching
from ..devices import checked_device
from .repository import pytriton_dir, write_serve_repository

# Clients may infer, read health, metadata, configs and statistics; these stay closed to them (with
# --model-control-mode=none, models cannot be loaded or unloaded by anyone).
# What ServeOptions(shared_memory=True) opens: clients on this host may then register system shared-memory
# regions and send tensors through them instead of the socket (measured on ResNet-18: ~1 ms less a request).
# Registering makes Triton map a /dev/shm object the client names, so any client that reaches the ports can
# make it read or write shared-memory objects of its user: opened only when asked.
SHARED_MEMORY_API = "shared-memory"
RESTRICTED_APIS = ("model-repository", SHARED_MEMORY_API, "trace", "logging")
ADMIN_HEADER = "salrt-admin-key"
# How long Triton's batcher holds a request for others while a model instance is idle. Requests that arrive
# while it computes are batched anyway. On the CPU a batch costs its images' time (measured: resnet18 N=8 on
# the server, 388 ms, equals in-process) so waiting only adds latency; a GPU runs a larger batch better.
QUEUE_DELAY_MS = {"cpu": 0.0, "cuda": 2.0}


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    backend: str = AUTO
    device: str = "cpu"
    max_batch: int = 16
    max_queue_delay_ms: Optional[float] = None  # None: QUEUE_DELAY_MS of the device
    instances: int = 1
    exit_timeout_s: int = 30  # in-flight requests get this long to finish after SIGINT/SIGTERM
    digest: Optional[str] = None  # `salrt info`'s digest of the reviewed artifact: any other is refused
    shared_memory: bool = False  # open Triton's system shared-memory API to clients (SHARED_MEMORY_API)

    def check(self) -> "ServeOptions":
        """The options with defaults resolved, or InputError."""
        check_backend(self.backend)
        device = checked_device(self.device)  # refused here, not after Triton has started
        if self.max_queue_delay_ms is None:
            return dataclasses.replace(self, max_queue_delay_ms=QUEUE_DELAY_MS[device.type]).check()
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(0 < port < 65536 for port in ports):
            raise InputError(f"HTTP, gRPC and metrics ports must be three different ports in 1-65535, got {ports}")
        check_batching(max_batch=self.max_batch, max_queue_delay_ms=self.max_queue_delay_ms, instances=self.instances,
                       label=lambda option: "--" + option.replace("_", "-"))  # salrt serve's flags
        return self


class TritonServer:
    """A Triton process serving one artifact; ``with TritonServer(...) as server:`` returns once every model
    answers ready, and stops it (in-flight requests finish) on exit."""

    def __init__(self, artifact: Path, options: ServeOptions = ServeOptions(), log: Optional[Path] = None):
        self.artifact = Path(artifact)
        self.options = options = options.check()
        self.workspace = Path(tempfile.mkdtemp(prefix="salrt-serve-"))
        self.log = Path(log) if log else self.workspace / "triton.log"
        self.process: Optional[subprocess.Popen] = None
        self._admin_key = secrets.token_hex(16)  # for the restricted APIs: salrt's own use (``revive``) only
        try:
            if options.digest is not None:  # here, before Triton starts, and again as each model loads it
                check_digest(self.artifact, options.digest)
            _link_python_backend(self.workspace / "backends" / "python")
            self.models = write_serve_repository(
                self.artifact, self.workspace / "models", backend=options.backend, device=options.device,
                max_batch=options.max_batch, max_queue_delay_ms=options.max_queue_delay_ms,
                instances=options.instances, digest=options.digest)
        except BaseException:
            shutil.rmtree(self.workspace, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        """host:port of the HTTP endpoint, as tritonclient takes it."""
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host
        return f"{host}:{self.options.http_port}"

    def start(self) -> "TritonServer":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self._command(), env=_environment(), stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout_s: float = 600, progress: Callable[[str], None] = lambda message: None) -> None:
        """Returns once the server and every model answer ready; raises if Triton exits or time runs out."""
        paths = ["/v2/health/ready"] + [f"/v2/models/{name}/ready" for name in self.models.values()]
        deadline = time.monotonic() + timeout_s
        progress(f"loading {', '.join(self.models.values())} (Triton's log: {self.log})")
        while not all(self._answers_200(path) for path in paths):
            if self.process.poll() is not None:
                raise SalrtError(f"Triton exited with code {self.process.returncode} while loading:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                message = f"Triton was not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
                self.stop()
                raise SalrtError(message)
            time.sleep(0.25)

    def stop(self) -> Optional[int]:
        """SIGTERM: Triton stops taking requests, lets in-flight ones finish, unloads; then the workspace goes."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(self.options.exit_timeout_s + 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        shutil.rmtree(self.workspace, ignore_errors=True)
        return code

    def dead_models(self) -> list[str]:
        """The models with fewer live Python-backend stubs than instances: a stub was killed (out of memory, by
        hand) or crashed. Triton does not start it again, and keeps answering ready while each request to the
        model fails ("Stub process ... is not healthy")."""
        live = [command for _, command, state in children(self.process.pid) if state != "Z"]
        return [name for name in self.models.values()
                if sum(f"/models/{name}/1/model.py" in command for command in live) < self.options.instances]

    def revive(self, name: str) -> None:
        """Loads model ``name`` again (its stubs start anew), through the repository API only salrt holds the
        key to; returns once it is loaded."""
        request = urllib.request.Request(f"http://{self.url}/v2/repository/models/{name}/load", data=b"",
                                         method="POST", headers={ADMIN_HEADER: self._admin_key})
        with urllib.request.urlopen(request, timeout=self.options.exit_timeout_s + 600):
            pass

    def live(self) -> bool:
        """Whether Triton answers its liveness endpoint."""
        return self._answers_200("/v2/health/live", timeout_s=LIVENESS_TIMEOUT_S)

    def log_tail(self, lines: int = 12) -> str:
        """Triton's error lines (E...), or else its last lines: what to show when it fails."""
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        errors = [line for line in text if line[:1] == "E" and line[1:5].isdigit()]
        return "\n".join((errors or text)[-lines:])

    def __enter__(self) -> "TritonServer":
        try:
            self.start().wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _answers_200(self, path: str, timeout_s: float = 2) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}{path}", timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _command(self) -> list[str]:
        o = self.options
        closed = [api for api in RESTRICTED_APIS if not (o.shared_memory and api == SHARED_MEMORY_API)]
        restricted = f"{','.join(closed)}:{ADMIN_HEADER}={self._admin_key}"
        # explicit control: every model loads at start, and salrt alone (holding the key) can load one again
        return [str(pytriton_dir() / "bin" / "tritonserver"),
                f"--model-repository={self.workspace / 'models'}", "--model-control-mode=explicit",
                "--load-model=*",
                f"--backend-directory={self.workspace / 'backends'}", "--strict-readiness=true",
                f"--http-address={o.host}", f"--http-port={o.http_port}",
                f"--grpc-address={o.host}", f"--grpc-port={o.grpc_port}",
                f"--metrics-address={o.host}", f"--metrics-port={o.metrics_port}",
                f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}",
                "--allow-gpu-metrics=false", f"--exit-timeout-secs={o.exit_timeout_s}",
                # a prefix of its own: two servers on one machine must not share Python-backend memory
                f"--backend-config=python,shm-region-prefix-name=salrt{os.getpid()}{secrets.token_hex(4)}",
                "--backend-config=python,shm-default-byte-size=16777216",
                "--backend-config=python,shm-growth-byte-size=16777216"]


def _link_python_backend(directory: Path) -> None:
    """Triton's Python backend with the stub built for this interpreter's Python version, which Triton looks
    for next to the backend (the wheel keeps one stub per version elsewhere)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton_dir() / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise InputError(f"nvidia-pytriton has no Triton Python-backend stub for Python {version}")
    directory.mkdir(parents=True)
    for file in (pytriton_dir() / "backends" / "python").iterdir():
        if file.is_file():
            (directory / file.name).symlink_to(file)
    (directory / stub.name).symlink_to(stub)


# glibc malloc settings for Triton and the Python-backend stubs it starts (each a fresh process): a request's
# activations (3 MB and more each) then come from, and go back to, the heap instead of fresh mmap'd pages.
# With glibc's defaults a fresh process faulted ~2,100 pages in per ResNet-18 call, the stub's explain taking
# 51.2 ms against 47.7 ms so (in-process 48.7). 32 MB is the highest threshold glibc accepts; kept memory
# is bounded by the largest request's peak. A value the user set wins.
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024**2), "MALLOC_TRIM_THRESHOLD_": str(4 * 1024**3)}


def _environment() -> dict:
    """The stub links libpython dynamically: point it at this interpreter's library, not the system's."""
    env = {**MALLOC_SETTINGS, **os.environ}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [sysconfig.get_config_var("LIBDIR"),
                                                           env.get("LD_LIBRARY_PATH")]))
    return env


def _die_with_parent() -> None:
    """Linux: Triton gets SIGTERM if this process dies first, so no server outlives a crashed salrt."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def serve(artifact: Path, options: ServeOptions, progress: Callable[[str], None], log: Optional[Path] = None) -> int:
    """Runs Triton until SIGINT or SIGTERM, which it passes on (in-flight requests finish); returns the exit code."""
    server = TritonServer(artifact, options, log)
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        try:
            server.wait_ready(progress=progress)
        except SalrtError:
            if stopping:  # stopped while loading
                return 0
            raise
        names = ", ".join(server.models.values())
        progress(f"ready: {names} on http://{server.url} (gRPC :{options.grpc_port}, metrics "
                 f":{options.metrics_port}); Ctrl-C stops")
        code = _supervise(server, stopping, progress)
        if not stopping:  # a supervisor (systemd, Kubernetes) restarts a salrt serve that exits non-zero
            raise SalrtError(f"Triton {_ended(code)}: nothing is served any more" +
                             (_last_error(server) if code >= 0 else ""))
        return 0
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


SUPERVISE_S = 0.5        # how often salrt serve looks at Triton and its stubs
LIVENESS_TIMEOUT_S = 10  # a liveness probe unanswered this long fails
LIVENESS_FAILURES = 3    # consecutive failed probes, one a SUPERVISE_S apart at least: Triton is deaf, stopped
LIVENESS_EVERY_S = 5.0


def _supervise(server: TritonServer, stopping: list, progress: Callable[[str], None]) -> int:
    """Waits for Triton to exit and returns its code. Meanwhile a model whose stub died is loaded again, and a
    Triton that stops answering its liveness probe is killed: salrt serve is never alive and deaf."""
    failures, probed = 0, time.monotonic()
    while True:
        try:
            return server.process.wait(SUPERVISE_S)
        except subprocess.TimeoutExpired:
            pass
        if stopping:
            continue
        for name in server.dead_models():
            started = time.monotonic()
            progress(f"{name}: its backend process died; loading it again")
            try:
                server.revive(name)
                progress(f"{name}: serving again after {time.monotonic() - started:.1f} s")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if not stopping and server.process.poll() is None:
                    progress(f"{name}: loading it again failed ({err}); trying again")
        if time.monotonic() - probed >= LIVENESS_EVERY_S:
            probed = time.monotonic()
            failures = 0 if server.live() else failures + 1
            if failures >= LIVENESS_FAILURES and not stopping:
                server.process.kill()
                server.process.wait()
                raise SalrtError(f"Triton stopped answering (no reply to {LIVENESS_FAILURES} liveness probes of "
                                 f"{LIVENESS_TIMEOUT_S} s): killed it; nothing is served any more")


def _ended(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited on its own with code {code}"


def _last_error(server: TritonServer) -> str:
    tail = server.log_tail(1)
    return f" (its log's last error: {tail.strip()[:300]})" if tail.strip() else ""


def children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, command line, state) of each child process of ``pid`` (Linux's /proc; none elsewhere)."""
    found, pids = [], []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that started it
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            pass
    for child in pids:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        found.append((int(child), command, state))
    return found
