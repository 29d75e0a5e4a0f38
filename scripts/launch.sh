#!/usr/bin/env bash
# Run one of the project's Python entry points in the Docker image, or in the local .venv when
# Docker cannot be used. Usage: scripts/launch.sh ENTRY.py [ARGS...]
# Every argument after ENTRY.py reaches it unchanged, spaces included; a leading `--` (cvl adds
# one) is dropped.
#
# Environment:
#   CVL_IMAGE            image tag (default anomaly_transformer)
#   CVL_NO_DOCKER=1      always run locally
#   CVL_CONTAINER_NAME   container name (cvl sets it)
#   CVL_CACHE_DIR        host cache mounted as the container's ~/.cache/cvlization
#                        (default ~/.cache/cvlization): datasets download once
#   CVL_SHM_SIZE         shared memory for DataLoader workers (default 8g)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
entry="$1"
shift
if [ "${1:-}" = "--" ]; then
  shift
fi

image="${CVL_IMAGE:-anomaly_transformer}"
reason=""
if [ "${CVL_NO_DOCKER:-0}" = "1" ]; then
  reason="CVL_NO_DOCKER=1"
elif ! command -v docker >/dev/null 2>&1; then
  reason="docker is not installed"
elif ! docker info >/dev/null 2>&1; then
  reason="no Docker engine is reachable"
elif ! docker image inspect "$image" >/dev/null 2>&1; then
  reason="image $image is not built (./build.sh builds it)"
fi

if [ -n "$reason" ]; then
  echo "running $entry locally in .venv: $reason" >&2
  # shellcheck source=scripts/ensure_venv.sh
  source "$root/scripts/ensure_venv.sh" requirements.txt
  cd "$root"
  exec python "$entry" "$@"
fi

container_home=/home/app
cache="${CVL_CACHE_DIR:-$HOME/.cache/cvlization}"
mkdir -p "$cache"
options=(--rm --shm-size "${CVL_SHM_SIZE:-8g}" --user "$(id -u):$(id -g)"
  -v "$root:/workspace" -w /workspace
  -v "$cache:$container_home/.cache/cvlization"
  -e "HOME=$container_home")
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  options+=(--gpus all)
fi
if [ -n "${CVL_CONTAINER_NAME:-}" ]; then
  options+=(--name "$CVL_CONTAINER_NAME")
fi
for variable in CUDA_VISIBLE_DEVICES TELEMANOM_DATA_URL TELEMANOM_LABELS_URL SMD_BASE_URL PSM_BASE_URL \
    ANOMALY_TRANSFORMER_MALLOC; do
  if [ -n "${!variable:-}" ]; then
    options+=(-e "$variable=${!variable}")
  fi
done
# -i keeps stdin open, so `detect.py --input -` can read a pipe; -t only for a real terminal.
options+=(-i)
if [ -t 0 ] && [ -t 1 ]; then
  options+=(-t)
fi
exec docker run "${options[@]}" "$image" python "$entry" "$@"
