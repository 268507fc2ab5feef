#!/usr/bin/env bash
# Set up (scripts/setup.sh), install what the tests need, and run the whole test suite.
# Optional system packages (installed when running as root with apt-get): fonts-noto-core
# (glyph dataset scripts) and chromium (browser demo tests); tests that need them skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  fc-list 2>/dev/null | grep -qi "NotoSans" || need+=(fonts-noto-core)
  command -v chromium >/dev/null || need+=(chromium)
  if [ ${#need[@]} -gt 0 ]; then
    (apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null 2>&1; }) \
      || echo "test: could not install ${need[*]}; the tests that need them will skip"
  fi
fi
.venv/bin/python -c "import playwright" 2>/dev/null || .venv/bin/pip install -q playwright || echo "test: playwright not installed; browser tests will skip"
exec .venv/bin/python -m pytest -q "$@"
