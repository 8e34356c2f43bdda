"""Ctrl-C and SIGTERM during a run. The first stops the run at the next batch boundary: the batches explained
are written and committed, and the run ends with ``Interrupted``, whose message says how to resume. A second
stops it at once: the batch being written finishes (no file is ever half-written: ``outputs`` writes whole
files), batches waiting to be written are dropped, their inputs left to ``--resume``."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Optional

from tqdm import tqdm

from ..errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """Within ``with``, SIGINT and SIGTERM set ``requested`` (the first signal's number) instead of killing the
    process; a second one raises ``Interrupted``. Outside the main thread, where Python cannot take signals, it
    does nothing."""

    def __init__(self):
        self.requested: Optional[int] = None
        self._previous: dict = {}
        self._deferring = False
        self._deferred: Optional[int] = None  # a second signal that came while deferring

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(self, *error) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @contextlib.contextmanager
    def deferred(self):
        """Within, a second signal waits until the end: for clean-up that must not be cut short (stopping the
        loading processes: an exception inside their shutdown would leave them running)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._deferred is not None:
                self._stop_at_once(self._deferred)

    def _handle(self, number: int, frame) -> None:
        if self.requested is None:
            self.requested = number
            tqdm.write(f"{signal.Signals(number).name}: stopping after this batch (again to stop at once)",
                       file=sys.stderr)
        elif self._deferring:
            self._deferred = number
        else:
            self._stop_at_once(number)

    @staticmethod
    def _stop_at_once(number: int) -> None:
        raise Interrupted(number, f"stopped at once by {signal.Signals(number).name}")


def ignore_in_workers() -> None:
    """For loading processes: a terminal's Ctrl-C (and a service manager's SIGTERM) reaches the whole process
    group, and a worker it killed would fail the batch the main process is waiting for. The main process stops
    its workers itself; when it does so mid-transfer (a second Ctrl-C), the thread through which a worker hands
    over a batch's tensors finds its connection gone, which is expected then and not worth a traceback."""
    for number in SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    threading.excepthook = _quiet_when_torn_down


def _quiet_when_torn_down(args) -> None:
    if not issubclass(args.exc_type, (ConnectionResetError, BrokenPipeError, EOFError)):
        threading.__excepthook__(args)
