#!/usr/bin/env bash
# Build garak's own environment for benchmarks/bench_garak.py (never inside sparring's .venv: garak 0.17.1
# pins its own transformers/torch ranges). Usage: benchmarks/setup_garak_venv.sh [/work/garak-venv]
set -euo pipefail
VENV="${1:-/work/garak-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# CPU torch first so garak's torch requirement does not pull the CUDA wheels (several GB).
"$VENV/bin/pip" install --quiet torch --index-url https://download.pytorch.org/whl/cpu || true
"$VENV/bin/pip" install garak==0.17.1 'transformers<5.20'
"$VENV/bin/python" -m garak --version
