#!/usr/bin/env bash
# Score new data with a checkpoint in the Docker image, or locally without Docker:
# ./detect.sh --checkpoint artifacts/SYNTH_checkpoint.pth --input new.csv
exec "$(dirname "$0")/scripts/launch.sh" detect.py "$@"
