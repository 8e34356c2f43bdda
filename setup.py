"""Builds the ``salrt._C`` extension; package metadata lives in pyproject.toml.

Environment:
  SALRT_CUDA=0|1          force a CPU-only or a CUDA build (unset: CUDA when nvcc and a CUDA torch exist)
  TORCH_CUDA_ARCH_LIST    CUDA architectures (default "8.0;9.0+PTX")
  MAX_JOBS                parallel compile jobs (read by torch's BuildExtension)
"""
import glob
import os
import sys

from setuptools import setup

# torch guesses CUDA_HOME from the nvcc on PATH when it is unset (a wrapper in /usr/local/bin on some
# machines, and linking then fails on -lcudart); point it at the real toolkit before torch reads it.
if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit(
        "salrt builds a C++ extension against your installed torch. "
        "Install torch first, then run: pip install --no-build-isolation -e ."
    )

CSRC = "csrc"  # relative: setuptools wants source paths relative to setup.py
# The module init (csrc/ops.cpp) uses only CPython's stable ABI and no pybind11, so one wheel serves every
# CPython >= 3.10 (tagged abi3, like pytorch/extension-cpp); it is still tied to the torch it was built with.
PY_LIMITED_API = "cp310"


def _want_cuda() -> bool:
    forced = os.environ.get("SALRT_CUDA", "").strip()
    if forced in ("0", "1"):
        if forced == "1" and torch.version.cuda is None:
            sys.exit("SALRT_CUDA=1 but the installed torch is a CPU-only build")
        return forced == "1"
    if forced:
        sys.exit(f"SALRT_CUDA must be 0 or 1, got {forced!r}")
    home = cpp_extension.CUDA_HOME
    return torch.version.cuda is not None and home is not None and os.path.exists(os.path.join(home, "bin", "nvcc"))


def _extension():
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    # -g0: no debug info (12 MB -> 0.5 MB). -fopenmp: otherwise at::parallel_for runs on one thread.
    # No -ffast-math: the kernels rely on IEEE NaN/Inf semantics and exact float rounding.
    cxx = ["-O3", "-g0", "-fopenmp", "-DPy_LIMITED_API=0x030A0000"]
    link = ["-fopenmp"]
    if not _want_cuda():
        return cpp_extension.CppExtension(
            "salrt._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link, py_limited_api=True
        )
    sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    # No --use_fast_math: it flushes subnormals and approximates 1/x, which would make CUDA results
    # differ from the CPU kernel (the contract is bit-identical normalisation on both devices).
    return cpp_extension.CUDAExtension(
        "salrt._C",
        sources,
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        extra_link_args=link,
        py_limited_api=True,
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)},
    options={"bdist_wheel": {"py_limited_api": PY_LIMITED_API}},
)
