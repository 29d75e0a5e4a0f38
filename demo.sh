#!/usr/bin/env bash
# Train and evaluate on the built-in SYNTH dataset on a CPU in a few minutes (creates .venv on first use).
# Extra args go to train.py, e.g. ./demo.sh --epochs 5
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh requirements.txt
python train.py --dataset SYNTH --preset small --epochs 3 --no-progress "$@"
python evaluate.py --dataset SYNTH
