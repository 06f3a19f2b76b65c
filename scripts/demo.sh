#!/usr/bin/env bash
# The main job on the built-in default: audit the zoo digits CNN on its held-out digits (built-in threat model:
# white-box attacker, L∞ and L2 budgets, gradient-masking checks, randomized-smoothing certificate) and write the
# reports to sparring-report/ (report.html, report.json, summary.md, junit.xml).
# Extra arguments go to `sparring audit` (e.g. a threat model file, --out DIR, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sparring audit "$@"
