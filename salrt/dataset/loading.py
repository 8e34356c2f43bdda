"""Decoding and preprocessing in a pool of DataLoader workers, a bounded number of batches ahead of the model.

Each worker reads, decodes and preprocesses whole images with salrt's own functions (``images.open_image``
and ``images.to_batch``, exactly what ``Explainer.preprocess`` runs), so only finished model inputs and the
small crops that overlays are drawn on travel to the main process. At most ``workers x prefetch`` batches
exist at once: memory stays flat however many images a run has.
"""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from ..images import (decode_reduced, displayed_image, mode_for, needed_size, open_image, read_file, region_mask,
                      to_batch)
from ..models import Preprocessing
from .stopping import ignore_in_workers

PREFETCH_BATCHES = 2  # per worker: enough to keep the model busy, few enough to bound memory
# Workers run at the lowest priority: where they share cores with the model, they decode in the time its
# threads leave idle instead of preempting one of them mid-operator (which stalls the others at that
# operator's end); when the model waits for a batch, they have the cores to themselves. Measured on 2 cores
# (ResNet-18, 640x480 JPEGs): 86% of the tensor rate at equal priority, 91% so.
WORKER_NICENESS = 19
# Freed image blocks (Pillow allocates images in 16 MB blocks) a worker keeps for the next photo: 8 hold a
# 24-megapixel RGB image. Without a cache each photo's blocks go back to malloc, whose reuse of them wanders
# (measured over 2,000 12-megapixel photos: a 171-313 MB band against 30 MB with it, and 8.50 against 7.23 img/s:
# no page faults for each photo's blocks).
PILLOW_BLOCKS_KEPT = 8


@dataclasses.dataclass
class Loaded:
    """One image as a worker leaves it: ready for the model, or the reason it is not."""
    position: int                                 # its place among the run's inputs
    error: Optional[str] = None
    size: Optional[tuple[int, int]] = None        # width, height of the file's image
    stat: Optional[tuple[int, int]] = None        # the file's (bytes, mtime_ns) when it was read
    image: Optional[torch.Tensor] = None          # [C,H,W] preprocessed
    shown: Optional[torch.Tensor] = None          # [H,W,3] uint8: the crop the model saw, for the overlay
    encoded: Optional[bytes] = None               # the file's bytes, for a server that decodes them itself
    region: Optional[torch.Tensor] = None         # [H,W]: its segmentation region, read from a mask file


@dataclasses.dataclass
class Batch:
    """The loaded images of one DataLoader batch (those that decoded) and the errors of the others."""
    loaded: list[Loaded]
    failed: list[Loaded]

    @property
    def images(self) -> torch.Tensor:
        return torch.stack([item.image for item in self.loaded])

    @property
    def regions(self) -> Optional[torch.Tensor]:
        """[N,H,W]: the loaded images' regions, where masks were read (``ImageFiles``'s ``masks``)."""
        return torch.stack([item.region for item in self.loaded]) if self.loaded and \
            self.loaded[0].region is not None else None

    def __len__(self) -> int:
        return len(self.loaded) + len(self.failed)


class ImageFiles(Dataset):
    """Image files read by position. Without ``preprocessing`` they are only decoded: a check that every
    file is readable, before a run that must not start otherwise. ``keep_shown``: also the crop overlays are
    drawn on; ``keep_encoded``: also the file's bytes; ``masks``: each path's region mask file (a missing or
    unreadable one fails that image)."""

    def __init__(self, paths: Sequence[Path], positions: Sequence[int], preprocessing: Optional[Preprocessing],
                 keep_shown: bool = True, keep_encoded: bool = False, jpeg_draft: bool = False,
                 masks: Optional[Sequence[Path]] = None):
        self.paths, self.positions, self.masks = paths, positions, masks
        self.preprocessing, self.keep_shown, self.keep_encoded = preprocessing, keep_shown, keep_encoded
        self.jpeg_draft = jpeg_draft

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Loaded:
        position = self.positions[i]
        loaded = load_image(position, Path(self.paths[position]), self.preprocessing, self.keep_shown,
                            self.keep_encoded, jpeg_draft=self.jpeg_draft)
        if self.masks is None or loaded.error is not None:
            return loaded
        mask = Path(self.masks[position])
        if not mask.is_file():
            return Loaded(position, error=f"{self.paths[position]}: no region mask at {mask}")
        try:
            loaded.region = region_mask(mask, self.preprocessing)
        except (InputError, OSError) as err:
            return Loaded(position, error=f"region mask {mask}: {err}")
        return loaded


def load_image(position: int, source: Union[Path, bytes, np.ndarray], preprocessing: Optional[Preprocessing],
               keep_shown: bool = True, keep_encoded: bool = False, name: str = "image bytes",
               jpeg_draft: bool = False) -> Loaded:
    """One image from a file, its encoded bytes (``name`` then names it in errors) or a decoded HW(C) uint8
    array, as ``ImageFiles`` and the Ray stage hand it to the model; never raises for a bad image.
    ``jpeg_draft``: JPEGs are decoded reduced to what the preprocessing needs (``images.decode_reduced``)."""
    try:
        data, stat = None, None
        if isinstance(source, np.ndarray):
            picture = open_image(source)
            size = picture.size
        else:
            if isinstance(source, Path):
                data, name = read_file(source), str(source)
                stat = os.stat(source)
            else:
                data = bytes(source)
            at_least = needed_size(preprocessing) if jpeg_draft and preprocessing is not None else None
            picture, size = decode_reduced(io.BytesIO(data), name, at_least=at_least)
        # the model's channels: grayscale for 1 (a model with 2 or 4+ takes tensors: every file fails so)
        mode = mode_for(preprocessing.channels) if preprocessing is not None else "RGB"
    except (InputError, OSError) as err:
        return Loaded(position, error=str(err) if isinstance(err, InputError) else f"{name}: {err.strerror}")
    loaded = Loaded(position, size=size, stat=(stat.st_size, stat.st_mtime_ns) if stat else None)
    if preprocessing is not None:
        loaded.image = to_batch([open_image(picture, mode)], preprocessing)[0]
        if keep_shown:
            loaded.shown = torch.from_numpy(np.array(displayed_image(picture, preprocessing).convert("RGB")))
        loaded.encoded = data if keep_encoded else None
    return loaded


def _collate(items: list[Loaded]) -> Batch:
    return Batch([item for item in items if item.error is None], [item for item in items if item.error is not None])


def batches(files: ImageFiles, batch_size: int, workers: int) -> Iterator[Batch]:
    """``files`` in order, ``batch_size`` at a time, loaded by ``workers`` processes (none for a single
    batch: starting a worker would cost more than it hides)."""
    workers = workers if len(files) > batch_size else 0
    loader = DataLoader(files, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        prefetch_factor=PREFETCH_BATCHES if workers else None, worker_init_fn=_start_worker)
    return iter(loader)


def _start_worker(worker_id: int) -> None:
    ignore_in_workers()
    if hasattr(os, "nice"):  # not on Windows
        os.nice(WORKER_NICENESS)
    Image.core.set_blocks_max(PILLOW_BLOCKS_KEPT)


def default_workers() -> int:
    """One loading process per core the run may use, at most 8 (decoding past that rarely keeps up a model)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))
