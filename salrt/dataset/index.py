"""results.parquet (pyarrow) or results.csv: one row per input, in input order. The columns are documented in
the README ("Explaining a dataset") and in ``COLUMNS``."""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError
from .outputs import write_atomically

FORMATS = ("parquet", "csv")
ROW_GROUP = 4096  # rows per parquet row group: what is held in memory while the index is written
COLUMNS = {
    "path": "the input's path relative to the input root (POSIX separators)",
    "width": "the image's width in pixels, as decoded",
    "height": "its height",
    "class_index": "the class explained: --target, else the top class",
    "class_name": "that class's name",
    "probability": "its softmax probability",
    "top5": "the 5 most probable classes: [{index, name, probability}] (CSV: as JSON)",
    "detections": "a detector's explained detections, the first the class and files above (--top-detections K: "
                  "K of them, ranked): [{query, class_index, class_name, probability, box: [x0, y0, x1, y1] in "
                  "input pixels, score: the class logit explained, files}] (CSV: as JSON); null for other models",
    "files": "the files written for it, relative to --out (CSV: as JSON)",
    "backend": "the backend that computed it",
    "error": "why it failed; null when it was explained",
}


def require_pyarrow() -> None:
    """InputError, before any work, when the default parquet index cannot be written."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise InputError("results.parquet needs pyarrow (a dependency of salrt): pip install pyarrow==21.0.0 "
                         "(or --index-format csv, or leave index out of --save)") from None


def file_name(index_format: str) -> str:
    return f"results.{index_format}"


def write_index(rows: Iterable[dict], path: Path, index_format: str) -> None:
    """Writes ``rows`` (dicts with the COLUMNS keys) atomically to ``path``."""
    write = _write_parquet if index_format == "parquet" else _write_csv
    write_atomically(path, lambda file: write(rows, file))


def schema():
    """The index's arrow schema: COLUMNS with their types."""
    import pyarrow as pa
    top = pa.struct([("index", pa.int64()), ("name", pa.string()), ("probability", pa.float64())])
    detection = pa.struct([("query", pa.int64()), ("class_index", pa.int64()), ("class_name", pa.string()),
                           ("probability", pa.float64()), ("box", pa.list_(pa.float64())), ("score", pa.float64()),
                           ("files", pa.list_(pa.string()))])
    return pa.schema([("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                      ("class_index", pa.int64()), ("class_name", pa.string()), ("probability", pa.float64()),
                      ("top5", pa.list_(top)), ("detections", pa.list_(detection)), ("files", pa.list_(pa.string())),
                      ("backend", pa.string()), ("error", pa.string())])


def _write_parquet(rows: Iterable[dict], file) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    columns = schema()
    rows = iter(rows)
    with pq.ParquetWriter(file, columns) as writer:
        while chunk := list(itertools.islice(rows, ROW_GROUP)):
            writer.write_table(pa.Table.from_pylist(chunk, schema=columns))


def _write_csv(rows: Iterable[dict], file) -> None:
    import io
    text = io.TextIOWrapper(file, encoding="utf-8", newline="")
    writer = csv.DictWriter(text, fieldnames=list(COLUMNS))
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **{key: "" if row[key] is None else json.dumps(row[key])
                                   for key in ("top5", "detections", "files")}})
    text.flush()
    text.detach()  # the caller closes the file


def listed_files(path: Path) -> Iterator[str]:
    """The ``files`` an index at ``path`` lists (results.csv, results.parquet, or the directory of parquet files a
    Ray run writes), relative to its --out; nothing where it cannot be read."""
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as file:
                for row in csv.DictReader(file):
                    yield from json.loads(row.get("files") or "[]")
            return
        import pyarrow.dataset
        for batch in pyarrow.dataset.dataset(str(path), format="parquet").to_batches(columns=["files"]):
            for files in batch.column("files").to_pylist():
                yield from files or []
    except (OSError, ValueError, KeyError, ImportError):  # a damaged index: its files are not known
        return
