#!/usr/bin/env bash
# salrt's GPU check: ONE script for a bare lent GPU machine (torch already there, no network), and CI's dry run.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] [--out DIR]
#
# --device cuda (the default) first builds the extension in place against the machine's own torch
# (SALRT_CUDA=1, TORCH_CUDA_ARCH_LIST from the GPU found, default 9.0), installing salrt with --no-deps: its pins
# name torch 2.14.1, which such a machine neither has nor can download. --device cpu uses the extension
# already built (CI's `make test` built it). Then benchmarks/gpu_check.py runs every step and writes
# results.json and results.md; this script adds log.txt. Output: --out DIR, else $OUT (the device tool's), else
# ./gpu-check. Exit status: 0 when no step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda QUICK=() OUT_DIR="${OUT:-gpu-check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=(--quick); shift ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--quick] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "--device is cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/log.txt") 2>&1

echo "gpu_check: device $DEVICE ${QUICK[*]:-} -> $OUT_DIR ($(date -u +%FT%TZ))"
"$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| GPU', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

if [ "$DEVICE" = cuda ]; then
  ARCH="$("$PYTHON" -c "import torch; m, n = torch.cuda.get_device_capability(0); print(f'{m}.{n}')" 2>/dev/null || echo 9.0)"
  echo "== build: the extension for sm_${ARCH/./} against this torch"
  started=$SECONDS
  if ! SALRT_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" \
       "$PYTHON" -m pip install --quiet --no-build-isolation --no-deps -e .; then
    echo "== build: failed after $((SECONDS - started)) s (the steps below then test the pure-torch fallback)"
  else
    echo "== build: ok in $((SECONDS - started)) s"
  fi
fi

"$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" "${QUICK[@]}" --out "$OUT_DIR"
