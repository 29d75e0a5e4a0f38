#!/usr/bin/env bash
# Build the image (tag: $CVL_IMAGE, default anomaly_transformer) from this folder, wherever it is called from.
# Extra args go to docker build (./build.sh --no-cache).
set -euo pipefail
cd "$(dirname "$0")"
image="${CVL_IMAGE:-anomaly_transformer}"
if ! command -v docker >/dev/null 2>&1; then
  echo "build.sh: docker is not installed; without it, ./train.sh and ./evaluate.sh run locally in .venv" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "build.sh: no Docker engine is reachable; start it, or run ./train.sh and ./evaluate.sh locally in .venv" >&2
  exit 1
fi
exec docker build -t "$image" "$@" .
