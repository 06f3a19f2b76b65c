#!/usr/bin/env bash
# Peer benchmarks. `bash scripts/bench.sh [ARGS]`: FGSM and PGD-20, sparring vs torchattacks, foolbox, ART and a
# hand-written loop (benchmarks/bench_evasion.py). `bash scripts/bench.sh autoattack [ARGS]`: AutoAttack, sparring vs
# torchattacks vs ART (benchmarks/bench_autoattack.py). `bash scripts/bench.sh drift-peers|drift-ert [ARGS]`: drift
# tests vs alibi-detect and frouros, online ERT per reference on MNIST (benchmarks/bench_drift_peers.py, bench_drift_ert.py).
# Builds a separate .venv-bench (the peers never enter .venv): torch==2.13.0 (the CPU wheel on disk) and
# requirements.lock, the peers from requirements-bench.lock with --no-deps (so none of them can pull another torch or
# a torchvision), and sparring itself, editable. Idempotent: a stamp file holds the hash of the inputs, so a second
# run goes straight to the benchmark. Arguments go to benchmarks/bench_evasion.py, e.g.
#   bash scripts/bench.sh --rounds 5 --json benchmarks/results/evasion-cpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "sparring needs Python >= 3.11 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
venv=.venv-bench
[[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
files=(requirements.lock requirements-bench.lock pyproject.toml scripts/bench.sh)
stamp="$venv/.sparring-bench-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "bench: installing torch, sparring and the pinned peers into $venv (first run only)..." >&2
  pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install torch==2.13.0 -r requirements.lock
  "${pip[@]}" install --no-deps -r requirements-bench.lock
  "${pip[@]}" install --no-deps --no-build-isolation -e .
  "$venv/bin/python" - <<'PY'
import importlib.util, sys
import torch
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"bench: expected torch 2.13.0 in .venv-bench, found {torch.__version__}")
if importlib.util.find_spec("torchvision") is not None:
    sys.exit("bench: torchvision got installed into .venv-bench; the peers must run without it")
PY
  rm -f "$venv"/.sparring-bench-*
  touch "$stamp"
fi
export GIT_PYTHON_REFRESH=quiet  # foolbox imports GitPython (for its model zoo); no git binary needed here
script=benchmarks/bench_evasion.py
if [[ "${1:-}" == "autoattack" ]]; then
  script=benchmarks/bench_autoattack.py
  shift
elif [[ "${1:-}" == "drift-peers" ]]; then  # drift tests vs alibi-detect and frouros (benchmarks/bench_drift_peers.py)
  script=benchmarks/bench_drift_peers.py
  shift
elif [[ "${1:-}" == "drift-ert" ]]; then  # online ERT per reference on full MNIST / Fashion-MNIST
  script=benchmarks/bench_drift_ert.py
  shift
fi
exec "$venv/bin/python" "$script" "$@"
