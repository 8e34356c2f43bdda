"""index.html: a static gallery of a run's overlays, to review in a browser without a server.

The rows travel as JSON inside the page and a short script lays out one card per image; thumbnails are the
overlay PNGs with ``loading="lazy"``, so a page of 10,000 images opens without fetching them all. The filter
(by class) and the order (by probability) live in the URL's fragment (``#class=tabby&sort=probability-desc``):
a view can be bookmarked or shared, and a test can open one directly.
"""
from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from .outputs import write_atomically

FILE_NAME = "index.html"
FAILED = "(failed)"  # the class the filter shows failed inputs under

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>salrt: {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px system-ui, sans-serif; margin: 0; background: #f6f6f6; }}
header {{ position: sticky; top: 0; background: #fff; padding: 8px 16px; border-bottom: 1px solid #ddd;
  display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }}
h1 {{ font-size: 16px; margin: 0; }}
#gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(176px, 1fr)); gap: 8px; padding: 16px; }}
figure {{ margin: 0; background: #fff; border: 1px solid #ddd; padding: 8px; }}
figure img {{ width: 160px; height: 160px; object-fit: cover; display: block; background: #eee; }}
figcaption {{ margin-top: 4px; overflow-wrap: anywhere; }}
.class {{ font-weight: 600; }} .file {{ color: #555; font-size: 12px; }} .error {{ color: #a00; font-size: 12px; }}
</style></head>
<body>
<header><h1>{title}</h1>
<label>class <select id="class"><option value="">all classes</option></select></label>
<label>order <select id="sort"><option value="">input order</option>
<option value="probability-desc">probability, highest first</option>
<option value="probability-asc">probability, lowest first</option></select></label>
<span id="count"></span></header>
<main id="gallery"></main>
<script id="rows" type="application/json">"""

# Each row: [path, class, probability or null, overlay URL or null, error or null].
_SCRIPT = """</script>
<script>
"use strict";
const rows = JSON.parse(document.getElementById("rows").textContent);
const classChoice = document.getElementById("class"), sortChoice = document.getElementById("sort");
const counts = new Map();
for (const row of rows) counts.set(row[1], (counts.get(row[1]) || 0) + 1);
for (const [name, count] of [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) {
  classChoice.add(new Option(`${name} (${count})`, name));
}
function view() {
  const hash = new URLSearchParams(location.hash.slice(1));
  return {cls: hash.get("class") || "", sort: hash.get("sort") || ""};
}
function card(row) {
  const [path, cls, probability, overlay, error] = row;
  const figure = document.createElement("figure");
  if (overlay) {
    const img = document.createElement("img");
    img.loading = "lazy"; img.width = 160; img.height = 160; img.src = overlay; img.alt = path;
    const link = document.createElement("a");
    link.href = overlay; link.append(img); figure.append(link);
  }
  const caption = document.createElement("figcaption");
  const title = document.createElement("div");
  title.className = "class";
  title.textContent = probability === null ? cls : `${cls} ${probability.toFixed(3)}`;
  const file = document.createElement("div");
  file.className = "file"; file.textContent = path;
  caption.append(title, file);
  if (error) { const e = document.createElement("div"); e.className = "error"; e.textContent = error; caption.append(e); }
  figure.append(caption);
  return figure;
}
function render() {
  const {cls, sort} = view();
  classChoice.value = cls; sortChoice.value = sort;
  let shown = cls ? rows.filter(row => row[1] === cls) : rows.slice();
  if (sort) {
    const sign = sort === "probability-asc" ? 1 : -1;
    shown.sort((a, b) => sign * ((a[2] ?? -1) - (b[2] ?? -1)));
  }
  const cards = document.createDocumentFragment();
  for (const row of shown) cards.append(card(row));
  document.getElementById("gallery").replaceChildren(cards);
  document.getElementById("count").textContent = `${shown.length} of ${rows.length} images`;
}
function choose() {
  const hash = new URLSearchParams();
  if (classChoice.value) hash.set("class", classChoice.value);
  if (sortChoice.value) hash.set("sort", sortChoice.value);
  location.hash = hash.toString();
}
classChoice.addEventListener("change", choose);
sortChoice.addEventListener("change", choose);
window.addEventListener("hashchange", render);
render();
</script>
</body></html>
"""


def write_gallery(rows: Iterable[dict], out_dir: Path, title: str) -> Path:
    """Writes ``out_dir/index.html`` from index rows (as results.parquet holds them), one row at a time."""
    path = out_dir / FILE_NAME

    def write(file) -> None:
        text = io.TextIOWrapper(file, encoding="utf-8")
        text.write(_HEAD.format(title=html.escape(title)))
        text.write("[")
        for i, row in enumerate(rows):
            text.write(("," if i else "") + _embedded_json(_gallery_row(row)) + "\n")
        text.write("]")
        text.write(_SCRIPT)
        text.flush()
        text.detach()  # write_atomically closes the file
    write_atomically(path, write)
    return path


def _gallery_row(row: dict) -> list:
    overlay = next((name for name in row["files"] if name.endswith("_overlay.png")), None)
    cls = FAILED if row["error"] is not None else row["class_name"]
    return [row["path"], cls, row["probability"], overlay and quote(overlay), row["error"]]


def _embedded_json(value) -> str:
    """JSON that cannot end the <script> element it sits in (a file named "</script>.jpg" is legal)."""
    return json.dumps(value).replace("<", "\\u003c")
