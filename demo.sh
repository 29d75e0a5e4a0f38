#!/usr/bin/env bash
# Train and evaluate on the built-in SYNTH dataset on a CPU in a few minutes (creates .venv on first use).
# The demo shortens training (small preset, lr 1e-3, every 5th training window, 3 epochs) so that it
# finishes quickly; extra args go to train.py and override these, e.g. ./demo.sh --epochs 5
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh requirements.txt
python train.py --dataset SYNTH --preset small --epochs 3 --lr 1e-3 --train-stride 5 --no-progress "$@"
echo
python evaluate.py --dataset SYNTH
echo
echo "The same model scored by the paper's criterion (every channel, unsmoothed):"
python evaluate.py --dataset SYNTH --score paper --checkpoint artifacts/SYNTH_checkpoint.pth \
  --output-dir artifacts/SYNTH_paper_score
