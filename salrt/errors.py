"""salrt's exceptions. The CLI prints any ``SalrtError`` as one ``error:`` line and exits 1.

Catch ``SalrtError`` for all of them, or one subclass for one kind of problem.
"""


class SalrtError(Exception):
    """A problem salrt can explain in one sentence; its message says what happened and what to do."""


class InputError(SalrtError, ValueError):
    """Bad input from the caller: an unknown model or backend, unreadable weights or images, a tensor of the
    wrong shape, dtype or values, a target out of range, an unwritable output path."""


class ArtifactError(SalrtError):
    """An artifact directory that cannot be used: missing or tampered files, another artifact format
    version, a file that its runtime refuses to load, a format that does not run on the device."""


class ExportError(SalrtError):
    """A model whose saliency graph cannot be built or written in a format; names the model, format and op."""


class OutputError(SalrtError, OSError):
    """An output that could not be written: a full disk, a read-only or vanished directory. Names the path and,
    for a full disk, the space left."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) or SIGTERM. A KeyboardInterrupt, so that code catching Exception does not
    swallow it; the CLI prints its message and exits with ``exit_code`` (128 + the signal's number, as a shell
    reports a process the signal ended)."""

    def __init__(self, signal_number: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signal_number
