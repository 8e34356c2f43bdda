"""What a run has finished, kept on disk as it goes, so that ``--resume`` continues a killed run.

Rows live in an SQLite database in --out (``.salrt-journal.sqlite``): each batch's rows are one transaction,
committed after that batch's files are written, so a SIGKILL at any point leaves every committed row's files
complete, and SQLite's own journal keeps the database whole. The index (results.parquet) is written from it
at the end, in input order, a chunk at a time, so neither the rows nor the index are held in memory.

An input counts as finished when its row was written with the same settings (model, method, target, saved
outputs), the input file still has the size and mtime it had when read, and every output file it lists has
the size and mtime it had when written. Anything else is explained again.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterator, Optional

from .inputs import Input
from .outputs import unwritable

FILE_NAME = ".salrt-journal.sqlite"
SQLITE_FULL = 13  # sqlite3's result code for "database or disk is full"
READ_CHUNK = 1024  # rows fetched at a time when the index is written


class Journal:
    def __init__(self, out_dir: Path, settings: str, resume: bool):
        self.out_dir, self.settings = out_dir, settings
        # written from the one thread that writes outputs, read from the main thread before and after it
        self._db = sqlite3.connect(out_dir / FILE_NAME, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing; only an OS crash could
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (path TEXT PRIMARY KEY, position INTEGER, settings TEXT,"
                         " input_size INTEGER, input_mtime_ns INTEGER, outputs TEXT, row TEXT)")
        # position: the input's place in this run; rows of inputs this run does not name get none
        self._db.execute("UPDATE rows SET position = NULL" if resume else "DELETE FROM rows")
        self._db.commit()

    def finished(self, position: int, item: Input) -> bool:
        """Whether ``item``'s row and outputs are already complete; if so, the row joins this run's index."""
        found = self._db.execute("SELECT settings, input_size, input_mtime_ns, outputs, row FROM rows WHERE path = ?",
                                 (item.relative,)).fetchone()
        if found is None:
            return False
        settings, size, mtime_ns, outputs, row = found
        if settings != self.settings or json.loads(row)["error"] is not None or _stat(item.path) != (size, mtime_ns):
            return False
        if any(_stat(self.out_dir / name) != tuple(stat) for name, stat in json.loads(outputs).items()):
            return False
        self._db.execute("UPDATE rows SET position = ? WHERE path = ?", (position, item.relative))
        return True

    def record(self, entries: list[tuple[int, Input, Optional[tuple[int, int]], dict, dict]]) -> None:
        """(position, input, its (bytes, mtime_ns) when read, {output: (bytes, mtime_ns)}, index row) for each
        image of a batch, in one transaction."""
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(item.relative, position, self.settings, *(stat or (None, None)), json.dumps(outputs),
                  json.dumps(row)) for position, item, stat, outputs, row in entries])
            self._db.commit()
        except sqlite3.Error as err:  # SQLite rolls the batch back: the rows committed before stay
            full = getattr(err, "sqlite_errorcode", None) == SQLITE_FULL
            raise unwritable(self.out_dir / FILE_NAME, OSError(errno.ENOSPC if full else errno.EIO, str(err))) \
                from None

    def done(self) -> int:
        """How many of this run's inputs have their row: finished, or failed to load."""
        return self._db.execute("SELECT COUNT(*) FROM rows WHERE position IS NOT NULL").fetchone()[0]

    def rows(self) -> Iterator[dict]:
        """This run's index rows in input order."""
        cursor = self._db.execute("SELECT row FROM rows WHERE position IS NOT NULL ORDER BY position")
        while chunk := cursor.fetchmany(READ_CHUNK):
            for (row,) in chunk:
                yield json.loads(row)

    def close(self) -> None:
        try:  # finished() marks resumed rows uncommitted; after a failed write there may be nothing to commit
            self._db.commit()
        except sqlite3.Error:
            pass
        self._db.close()


def recorded(out_dir: Path) -> tuple[int, list[str]]:
    """(rows, output files) that the journal in ``out_dir`` records, without opening it for a run; (0, []) where
    there is none or it cannot be read."""
    path = out_dir / FILE_NAME
    if not path.is_file():
        return 0, []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            outputs = [name for (listed,) in db.execute("SELECT outputs FROM rows") for name in json.loads(listed)]
            return db.execute("SELECT COUNT(*) FROM rows").fetchone()[0], outputs
    except (sqlite3.Error, ValueError, TypeError):  # not a journal salrt can read: its files are not known
        return 0, []


def _stat(path: Path) -> Optional[tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
