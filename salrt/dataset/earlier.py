"""What a run owns in --out, and what an earlier run left there.

A run owns its journal (``journal.FILE_NAME``), its index (results.parquet, a file or the directory a Ray run
writes, or results.csv), its gallery (index.html) and the output files its rows list. Nothing else in --out is
salrt's, and no run deletes it.

A new run replaces an earlier run's results (``remove``: what it owned, said in one line) unless ``--resume``
continues that run. Either way the index and the gallery go before any image is explained: they are rewritten
from the journal when the run ends, and an interrupted run must not leave an earlier run's complete index
behind, which a reader would take for its own.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

from . import gallery, index, journal


@dataclasses.dataclass
class EarlierRun:
    out_dir: Path
    rows: int               # rows its journal records
    derived: list[Path]     # its index and gallery
    outputs: list[str]      # the files its journal and index list, relative to out_dir

    def describe(self) -> str:
        """e.g. ``12 images, results.parquet, index.html``."""
        parts = [f"{self.rows:,} image{'s' * (self.rows != 1)}"] if self.rows else []
        return ", ".join(parts + [path.name for path in self.derived])


def find(out_dir: Path) -> Optional[EarlierRun]:
    """The earlier run whose results ``out_dir`` holds, if any."""
    if not out_dir.is_dir():
        return None
    rows, outputs = journal.recorded(out_dir)
    derived = [path for path in derived_files(out_dir) if path.exists()]
    if not rows and not derived:
        return None
    for path in derived:
        if path.name != gallery.FILE_NAME:
            outputs += index.listed_files(path)
    return EarlierRun(out_dir, rows, derived, list(dict.fromkeys(outputs)))


def derived_files(out_dir: Path) -> list[Path]:
    """The index (either format) and the gallery: written from a run's rows when it ends."""
    return [out_dir / index.file_name(kind) for kind in index.FORMATS] + [out_dir / gallery.FILE_NAME]


def remove_derived(out_dir: Path) -> None:
    for path in derived_files(out_dir):
        remove_path(path)


def remove(run: EarlierRun) -> None:
    """Deletes what ``run`` owned: the index and gallery first (a deletion cut short leaves a journal whose missing
    files ``--resume`` explains again, never an index of files that are gone), then its files, then its journal."""
    remove_derived(run.out_dir)
    root = run.out_dir.resolve()
    for name in run.outputs:
        path = (run.out_dir / name).resolve()
        if path.is_relative_to(root) and path.is_file():  # a damaged journal names nothing outside --out
            path.unlink()
            _remove_empty_folders(path.parent, root)
    for name in (journal.FILE_NAME, journal.FILE_NAME + "-journal"):  # with SQLite's rollback journal, if any
        remove_path(run.out_dir / name)


def _remove_empty_folders(folder: Path, root: Path) -> None:
    """The folders a mirrored tree made, once their last file is gone."""
    while folder != root and folder.is_relative_to(root) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
