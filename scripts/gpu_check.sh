#!/usr/bin/env bash
# GPU readiness check: on a CUDA machine, run the CUDA test subset (pytest -m cuda), `reptile verify
# --device cuda` (when this checkout's verify has --device) and the GPU benchmark table
# (benchmarks/bench_gpu.py -> benchmarks/results/gpu.csv). Each step has a time limit so that the whole
# check ends within 12.5 minutes (limits 120 + 210 + 420 s) on an H100/H200. On a machine without CUDA it says so and exits 0.
#
# Usage: scripts/gpu_check.sh            (PYTHON=/path/to/python to choose the interpreter)
# Exit status: 0 when every step that ran passed (or there is no GPU), 1 otherwise.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU available here (torch.cuda.is_available() is False); nothing to check."
    exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
start=$SECONDS
status=0
step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || status=1
}

step "CUDA tests" 120 "$PY" -m pytest -q -m cuda tests -p no:cacheprovider
if "$PY" -m reptile verify --help 2>/dev/null | grep -q -- "--device"; then
    step "reptile verify --device cuda" 210 "$PY" -m reptile verify --device cuda
else
    echo "== reptile verify --device cuda: skipped (this checkout's 'reptile verify' has no --device flag)"
fi
step "GPU benchmark table" 420 "$PY" -m benchmarks.bench_gpu --device cuda --out benchmarks/results/gpu.csv
echo "gpu_check: done in $((SECONDS - start)) s, status $status"
exit $status
