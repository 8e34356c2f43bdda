"""Helpers of the Triton tests, not of salrt: free ports for a test server and a ``config.pbtxt`` read back.
Shared by tests/test_serve.py, tests/test_triton_format.py and benchmarks/bench_serve.py (which puts tests/
on its path, as the other benchmarks that reuse the tests' code do)."""
import socket

from salrt.formats.triton_config import model_config_pb2


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (another process may take one before Triton binds it)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_config(path):
    """A ``config.pbtxt`` parsed back into a ``ModelConfig`` (a malformed file raises)."""
    from google.protobuf import text_format
    return text_format.Parse(path.read_text(), model_config_pb2().ModelConfig())
