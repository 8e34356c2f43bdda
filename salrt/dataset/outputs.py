"""Output files written whole or not at all: a killed run leaves no half-written PNG or array behind."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image

from ..errors import OutputError, SalrtError

TEMPORARY_PREFIX = ".salrt-tmp-"


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> tuple[int, int]:
    """Writes ``path`` through a temporary file in its directory and ``os.replace`` (atomic on one file
    system); returns the new file's (bytes, mtime_ns), which ``--resume`` checks it by."""
    temporary = path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, SalrtError):
            raise unwritable(path, err) from None
        raise
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def unwritable(path: Path, err: OSError) -> OutputError:
    """``err`` as one line naming ``path``; for a full disk (or quota), with the space left there."""
    message = f"cannot write {path}: {err.strerror or err}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        message += f" ({_space_left(path)} left on its file system)"
    return OutputError(message)


def _space_left(path: Path) -> str:
    folder = next((folder for folder in (path, *path.parents) if folder.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    return f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free / 2**10:.0f} KiB"


def save_png(path: Path, picture: Image.Image) -> tuple[int, int]:
    return write_atomically(path, lambda file: picture.save(file, format="PNG"))


def save_npy(path: Path, array: np.ndarray) -> tuple[int, int]:
    return write_atomically(path, lambda file: np.save(file, array, allow_pickle=False))


def remove_leftover_temporaries(out_dir: Path) -> None:
    """Deletes the temporary files a killed run left (a SIGKILL skips every clean-up)."""
    for folder, _, names in os.walk(out_dir):
        for name in names:
            if name.startswith(TEMPORARY_PREFIX):
                Path(folder, name).unlink(missing_ok=True)
