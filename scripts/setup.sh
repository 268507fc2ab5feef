#!/usr/bin/env bash
# Create .venv and install reptile-lab (editable) with its development extras.
#
# torch: an interpreter that already has torch keeps it (the venv sees its site-packages);
# otherwise torch==2.13.0 is installed (on the project's CI machines: the CPU wheel on disk).
# Elsewhere, to avoid a multi-GB CUDA download on a machine without a GPU, run:
#   REPTILE_TORCH_INDEX=https://download.pytorch.org/whl/cpu ./scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: using the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q ${REPTILE_TORCH_INDEX:+--index-url "$REPTILE_TORCH_INDEX"} "torch==2.13.0"
fi
.venv/bin/pip install -q -e ".[dev]"
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
