#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: `reptile verify`, which measures each claim
# of the Reptile paper's theory on the embedded defaults and says whether it holds.
# Extra arguments go to `reptile verify` (e.g. --quick, --full, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/reptile verify "$@"
