"""Loads the compiled library ``salrt._C``, which registers ``torch.ops.salrt.*`` on CPU (and CUDA).

Without it, salrt still works: ``abs_channel_max_normalize`` falls back to torch ops (slower), after one
warning. Where the fast path is a must (CI, a deployment), set ``SALRT_REQUIRE_EXTENSION=1``: importing
salrt then fails instead.
"""
from __future__ import annotations

import importlib
import os
import warnings

REQUIRE_VARIABLE = "SALRT_REQUIRE_EXTENSION"
_BUILD_HINT = "build it with: pip install --no-build-isolation -e ."

try:
    importlib.import_module("salrt._C")  # loading the library runs its TORCH_LIBRARY registrations

    HAS_EXTENSION = True
except ImportError as _err:  # pragma: no cover - depends on the build
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        raise ImportError(f"salrt: the C++ extension salrt._C is required ({REQUIRE_VARIABLE}=1) but cannot be "
                          f"loaded ({_err}); {_BUILD_HINT}") from _err
    HAS_EXTENSION = False
    warnings.warn(f"salrt: the C++ extension salrt._C is not available ({_err}); abs_channel_max_normalize "
                  f"falls back to a slower pure-torch implementation; {_BUILD_HINT}", RuntimeWarning, stacklevel=2)
