#!/usr/bin/env bash
# Build salrt's wheel with the project venv's torch, install it into a fresh venv that holds only torch and
# torchvision (pip then brings salrt's other dependencies), and smoke-test it outside the source tree:
# the version, the compiled op on a tensor, an export of resnet18 with random weights.
#   bash benchmarks/check_wheel.sh          (make wheel-check; SALRT_CUDA=1 to include the CUDA kernels)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export SALRT_CUDA="${SALRT_CUDA:-0}"  # the CPU build takes ~1 min on 2 cores, the CUDA one ~3

echo "== building the wheel"
"$root/.venv/bin/pip" wheel --quiet --no-build-isolation --no-deps --wheel-dir "$work/dist" "$root"
wheel="$(ls "$work"/dist/salrt-*.whl)"
echo "   $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
case "$wheel" in *-abi3-*) ;; *) echo "expected a py_limited_api (abi3) wheel"; exit 1 ;; esac

echo "== fresh venv: torch + torchvision, then the wheel"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
"$work/venv/bin/pip" install --quiet "$wheel"

echo "== smoke test (in $work, away from the source tree)"
cd "$work"
export SALRT_REQUIRE_EXTENSION=1
"$work/venv/bin/salrt" --version
"$work/venv/bin/python" - <<'PY'
import torch
import salrt
from salrt import ops
assert ops.HAS_EXTENSION and "site-packages" in salrt.__file__, salrt.__file__
saliency = ops.abs_channel_max_normalize(torch.randn(2, 3, 16, 16))
assert saliency.shape == (2, 16, 16) and saliency.amax() == 1
print("op: ok", tuple(saliency.shape))
PY
"$work/venv/bin/salrt" export resnet18 --weights random --out "$work/r18"
"$work/venv/bin/salrt" info "$work/r18" > "$work/info.txt" && grep -q "^model  *resnet18" "$work/info.txt"
echo "wheel check passed"
