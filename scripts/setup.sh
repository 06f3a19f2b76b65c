#!/usr/bin/env bash
# Create .venv (if needed) and install sparring with pinned dependencies. Idempotent: a stamp file holds the hash
# of the lock files, so a second run with nothing changed returns in well under a second.
#   scripts/setup.sh          runtime dependencies (demo)
#   scripts/setup.sh --dev    plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
want_dev=0
[[ "${1:-}" == "--dev" ]] && want_dev=1
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "sparring needs Python >= 3.11 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
files=(requirements.lock pyproject.toml)
(( want_dev )) && files+=(requirements-dev.lock)
stamp=".venv/.sparring-setup-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" ]]; then exit 0; fi
echo "sparring: installing pinned dependencies into .venv (first run only)..." >&2
pip_args=(--disable-pip-version-check -q)
.venv/bin/python -m pip install "${pip_args[@]}" -r requirements.lock
(( want_dev )) && .venv/bin/python -m pip install "${pip_args[@]}" -r requirements-dev.lock
.venv/bin/python -m pip install "${pip_args[@]}" --no-deps --no-build-isolation -e .
touch "$stamp"
