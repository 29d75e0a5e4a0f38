#!/usr/bin/env bash
# The cvl train_msl preset: train on MSL; extra flags pass through (./train_msl.sh --epochs 3).
exec "$(dirname "$0")/scripts/launch.sh" train.py --dataset MSL "$@"
