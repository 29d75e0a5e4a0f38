#!/usr/bin/env bash
# Evaluate in the Docker image, or locally without Docker: ./evaluate.sh --dataset SMAP --protocol paper
exec "$(dirname "$0")/scripts/launch.sh" evaluate.py "$@"
