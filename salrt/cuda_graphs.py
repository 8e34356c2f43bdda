"""CUDA graphs around a run: on a GPU a saliency call launches hundreds of small kernels, and at small batch
sizes the CPU's launch overhead, not the GPU, sets the latency. A graph captured once per batch size replays
every kernel with one launch.

The captured run must not synchronize with the host (salrt checks inputs before the run, outside the graph)
and must keep to the current stream (the fused op does). Inputs are copied into the graph's static buffers
and outputs copied out, so a caller never holds memory a later replay overwrites.
"""
from __future__ import annotations

import collections
import threading
from typing import Callable

import torch

MAX_GRAPHS = 8  # batch sizes kept captured (each holds its activations); the least recently used goes first
WARMUP_CALLS = 3  # eager calls before capture: lazy initialisation (cuDNN plans, allocator) must not be captured


class GraphedRun:
    """``run(image, target) -> outputs``, replayed from a CUDA graph captured for each batch size."""

    def __init__(self, run: Callable[[torch.Tensor, torch.Tensor], tuple], device: torch.device):
        self._run = run
        self._device = device
        self._graphs: collections.OrderedDict = collections.OrderedDict()
        self._pool = None  # one memory pool shared by every graph of this run
        self._lock = threading.Lock()  # a replay reuses static buffers: one call at a time

    def __call__(self, image: torch.Tensor, target: torch.Tensor) -> tuple:
        with self._lock:
            graph, (static_image, static_target), outputs = self._graph_for(image, target)
            static_image.copy_(image)
            static_target.copy_(target)
            graph.replay()
            return tuple(output.clone() for output in outputs)

    def _graph_for(self, image: torch.Tensor, target: torch.Tensor):
        key = tuple(image.shape)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            if len(self._graphs) >= MAX_GRAPHS:
                self._graphs.popitem(last=False)
            self._graphs[key] = self._capture(image.clone(), target.clone())
        return self._graphs[key]

    def _capture(self, image: torch.Tensor, target: torch.Tensor):
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph's docs require
            for _ in range(WARMUP_CALLS):
                self._run(image, target)
        torch.cuda.current_stream(self._device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = self._run(image, target)
        return graph, (image, target), tuple(outputs)
