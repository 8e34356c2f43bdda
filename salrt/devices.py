"""Where salrt runs: the devices it takes, one refusal for a device this machine lacks, and timing that
waits for the device (CUDA runs asynchronously: a host clock alone measures the launch, not the work)."""
from __future__ import annotations

import time
from typing import Callable, Union

import torch

from .errors import InputError

DEVICE_TYPES = ("cpu", "cuda")


def checked_device(device: Union[str, torch.device]) -> torch.device:
    """A torch.device salrt runs on, on this machine, or an InputError saying why not."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"--device {device}: {err}; use one of {', '.join(DEVICE_TYPES)} (cuda:INDEX)") from None
    if device.type not in DEVICE_TYPES:
        raise InputError(f"--device {device}: unsupported; use one of {', '.join(DEVICE_TYPES)} (cuda:INDEX)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: this machine has no CUDA device "
                             "(torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device) -> float:
    """Seconds ``call`` takes on ``device``, queued work included."""
    synchronize(device)
    started = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - started


def describe(device: torch.device) -> str:
    """The hardware behind ``device``, for benchmark reports: the CPU model and its bf16/AMX flags, or the
    GPU's name and compute capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return cpu_description()


CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")  # what bf16/fp16 speed depends on


def cpu_info() -> dict:
    """The CPU's model, which of ``CPU_FLAGS`` it has, torch's vector ISA and thread count."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, **{flag: flag in flags for flag in CPU_FLAGS},
            "torch_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def cpu_description() -> str:
    """"AMD EPYC ... (AVX2; bf16: none)": what CPU figures depend on (its vector ISA and bf16 support)."""
    info = cpu_info()
    bf16 = [flag for flag in ("avx512_bf16", "amx_bf16", "amx_tile") if info[flag]]
    return f"{info['model']} ({info['torch_capability']}; bf16: {', '.join(bf16) or 'none'})"
