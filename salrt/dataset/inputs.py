"""Which files a `salrt explain` run reads, and the output names each one gets.

PATHs are files, directories (walked recursively for image files) or globs, plus the lines of ``--list``
files. Every input gets a path relative to one *input root*: the deepest directory holding all of them.
Distinct files therefore have distinct relative paths, and outputs mirror that tree under ``--out``
(``a/cat.jpg`` -> ``a/cat.jpg_saliency.png``), so no two inputs can share an output. Files named one by one
keep the flat names of earlier releases (``cat_saliency.png``) when their stems differ, and are refused
up front, naming both files, when two would write the same file.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                            ".pbm", ".jfif"})
GLOB_CHARACTERS = frozenset("*?[")
# The outputs of one input, by the --save choice that asks for them: (kind, file suffix).
OUTPUT_KINDS = {"png": (("saliency", ".png"), ("overlay", ".png")), "npy": (("saliency", ".npy"),),
                "grad": (("grad", ".npy"),)}


@dataclasses.dataclass(frozen=True)
class Input:
    path: Path      # as the user named it (or as found under a directory they named)
    relative: str   # POSIX path relative to the input root: the index's `path` column


@dataclasses.dataclass
class InputSet:
    """The inputs of a run, in order, and how their outputs are named."""
    inputs: list[Input]
    root: Path
    named_one_by_one: bool  # only files were given: flat output names, and bad files fail the run up front
    detections: int = 0     # --top-detections: maps per input, named _det1, _det2, ...; 0: one map, unnumbered

    def __len__(self) -> int:
        return len(self.inputs)

    def outputs(self, item: Input, save: Iterable[str]) -> list[list[tuple[str, str]]]:
        """Per map of ``item`` (one, or one per ranked detection), (kind, file name relative to --out) of each
        file it writes for the --save choices; kind is one of OUTPUT_KINDS' "saliency.png", "overlay.png",
        "saliency.npy", "grad.npy"."""
        base = self.output_base(item)
        if not self.detections:
            return [output_names(base, save)]
        return [output_names(f"{base}_det{rank}", save) for rank in range(1, self.detections + 1)]

    def output_base(self, item: Input) -> str:
        """What ``item``'s output names start with: its relative path, or its stem for files named one by one."""
        return Path(item.relative).stem if self.named_one_by_one else item.relative

    def check_outputs_are_distinct(self, save: Iterable[str]) -> None:
        """InputError naming the first two inputs that would write the same file."""
        save = list(save)
        writer_of: dict[str, Input] = {}
        for item in self.inputs:
            for _, name in (output for per_map in self.outputs(item, save) for output in per_map):
                first = writer_of.setdefault(name, item)
                if first is not item:
                    raise InputError(f"{first.path} and {item.path} would both write {name}; name their directory "
                                     f"instead (outputs then mirror the input tree), or rename one")


def output_names(base: str, save: Iterable[str]) -> list[tuple[str, str]]:
    """(kind, file name) of each output of the input whose outputs are named ``base`` (its relative path, or
    its stem when files are named one by one)."""
    return [(f"{kind}{suffix}", f"{base}_{kind}{suffix}") for choice in OUTPUT_KINDS if choice in save
            for kind, suffix in OUTPUT_KINDS[choice]]


def collect(paths: Sequence[Path], list_files: Sequence[str] = (), out_dir: Optional[Path] = None) -> InputSet:
    """The inputs that ``paths`` and the ``--list`` files name, in the order given (a directory's and a glob's
    files sorted); files under ``out_dir`` are skipped when walking, so a re-run never explains its own maps.
    Raises InputError for a path that does not exist, a glob or directory without images, or a file given
    twice."""
    skip = Path(os.path.abspath(out_dir)) if out_dir else None
    named_one_by_one = not list_files
    found: list[tuple[Path, Path]] = []  # (the file as named, the directory its relative path starts from)
    for path in paths:
        files, walked = _expand(Path(path), skip)
        named_one_by_one &= not walked
        found += files
    for list_file in list_files:
        found += [(line, line.parent) for line in _read_list(list_file)]
    if not found:
        raise InputError("no images given")
    root = Path(os.path.commonpath([os.path.abspath(start) for _, start in found]))
    inputs = [Input(file, Path(os.path.abspath(file)).relative_to(root).as_posix()) for file, _ in found]
    _refuse_duplicates(inputs)
    return InputSet(inputs, root, named_one_by_one)


def _expand(path: Path, skip: Optional[Path]) -> tuple[list[tuple[Path, Path]], bool]:
    """(files, whether path was a directory or glob) for one command-line PATH."""
    if path.is_dir():
        files = _images_under(path, skip)
        if not files:
            raise InputError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this directory")
        return [(file, path) for file in files], True
    if not path.exists() and GLOB_CHARACTERS & set(str(path)):
        return _glob(path, skip), True
    return [(path, path.parent)], False  # a missing file is refused when it is read, with the other bad inputs


def _glob(pattern: Path, skip: Optional[Path]) -> list[tuple[Path, Path]]:
    """A glob's image files (``**`` crosses directories), relative to its fixed leading directories."""
    leading = _leading_parts(pattern)
    fixed = Path(*leading) if leading else Path(".")
    files = []
    for match in sorted(glob.glob(str(pattern), recursive=True)):
        match = Path(match)
        files += _images_under(match, skip) if match.is_dir() else \
            ([match] if _is_image_name(match) and not _under(match, skip) else [])
    if not files:
        raise InputError(f"{pattern}: the pattern matches no image files")
    return [(file, fixed) for file in files]


def _leading_parts(pattern: Path) -> list[str]:
    parts = []
    for part in pattern.parts[:-1]:
        if GLOB_CHARACTERS & set(part):
            break
        parts.append(part)
    return parts


def _images_under(directory: Path, skip: Optional[Path]) -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if not _under(Path(folder) / d, skip))
        files += [Path(folder) / name for name in names if _is_image_name(Path(name))]
    return sorted(files, key=lambda file: file.parts)  # a/b/x.jpg before a/c.jpg: the order of the paths


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _under(path: Path, directory: Optional[Path]) -> bool:
    if directory is None:
        return False
    absolute = Path(os.path.abspath(path))
    return absolute == directory or directory in absolute.parents


def _read_list(list_file: str) -> list[Path]:
    """The paths of a --list file, one per line (blank lines skipped); ``-`` reads standard input."""
    try:
        text = sys.stdin.read() if list_file == "-" else Path(list_file).read_text()
    except OSError as err:
        raise InputError(f"--list {list_file}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"--list {list_file}: not a text file of paths") from None
    return [Path(line.strip()) for line in text.splitlines() if line.strip()]


def _refuse_duplicates(inputs: list[Input]) -> None:
    seen: dict[str, Input] = {}
    for item in inputs:
        first = seen.setdefault(item.relative, item)
        if first is not item:
            raise InputError(f"{item.path} is given twice (also as {first.path}): each input is explained once")
