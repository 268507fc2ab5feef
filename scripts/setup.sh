#!/usr/bin/env bash
# Create .venv and install reptile-lab (editable) with its development extras.
#
# torch, in this order:
#   1. a torch the venv can already import is kept (an interpreter that has torch gives the venv
#      its site-packages, so a user's own CUDA or CPU build stays);
#   2. REPTILE_TORCH_INDEX=URL: torch==2.13.0 from that index (e.g. a CUDA build of your choice);
#   3. Linux without a GPU (no `nvidia-smi`, or REPTILE_DEVICE=cpu): the CPU wheel,
#      torch==2.13.0+cpu (about 200 MB instead of several GB of CUDA libraries): first from the
#      sources pip is configured with (local wheels of an offline machine), else from PyPI plus
#      https://download.pytorch.org/whl/cpu as an extra index;
#   4. otherwise (a GPU, macOS): torch==2.13.0 from PyPI (the CUDA build on Linux).
# REPTILE_DEVICE=cuda forces case 4 on Linux; PYTHON=python3.x picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: using the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi

cpu_only() {  # Linux and no GPU in sight, or the user said so
  case "${REPTILE_DEVICE:-}" in
    cpu) return 0 ;;
    cuda*) return 1 ;;
  esac
  [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1
}

if .venv/bin/python -c "import torch" 2>/dev/null; then
  :  # keep it
elif [ -n "${REPTILE_TORCH_INDEX:-}" ]; then
  echo "setup: torch==$TORCH from $REPTILE_TORCH_INDEX"
  .venv/bin/pip install -q --index-url "$REPTILE_TORCH_INDEX" "torch==$TORCH"
elif cpu_only; then
  echo "setup: no GPU found (or REPTILE_DEVICE=cpu): installing the CPU build of torch $TORCH"
  # first from what pip is configured to use (an offline machine's local wheels), quietly; the
  # CPU index only when nothing there fits (PyPI itself has no +cpu build)
  if ! .venv/bin/pip install -q "torch==$TORCH+cpu" >/dev/null 2>&1; then
    .venv/bin/pip install -q --extra-index-url "$CPU_INDEX" "torch==$TORCH+cpu"
  fi
else
  echo "setup: installing torch $TORCH from PyPI (the CUDA build on Linux; REPTILE_DEVICE=cpu for the CPU one)"
  .venv/bin/pip install -q "torch==$TORCH"
fi
.venv/bin/pip install -q -e ".[dev]"
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "| CUDA available:", torch.cuda.is_available())'))"
