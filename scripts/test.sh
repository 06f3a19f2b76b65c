#!/usr/bin/env bash
# The test suite (fast tier; `-m slow` selects the long checks). Also runs ruff and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# The HTML report is checked in Debian's headless Chromium; install it when we can (else that one test skips).
if ! command -v chromium >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "sparring: installing Debian's chromium for the HTML report test (first run only)..." >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "sparring: could not install chromium; the browser test will be skipped" >&2
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
