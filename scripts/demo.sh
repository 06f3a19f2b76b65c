#!/usr/bin/env bash
# The main job on the built-in default: attack the zoo digits CNN with PGD and print clean vs robust accuracy.
# Extra arguments go to `sparring attack pgd` (e.g. --eps 0.2 --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sparring attack pgd --model digits-cnn --eps 0.1 --n 256 "$@"
