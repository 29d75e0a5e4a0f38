#!/usr/bin/env bash
# Train in the Docker image (GPU when available), or locally without Docker: ./train.sh --dataset MSL --epochs 5
exec "$(dirname "$0")/scripts/launch.sh" train.py "$@"
