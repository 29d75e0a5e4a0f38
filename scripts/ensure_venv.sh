#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: create ./.venv from the pinned requirements on first use,
# then put it first on PATH. Set ANOMALY_PYTHON to use another interpreter to build it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements-installed"
requirements="${1:-requirements.txt}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (first run only)"
  "${ANOMALY_PYTHON:-python3}" -m venv "$venv"
fi
# Reinstall only when the requirements files change.
wanted="$(cat "$root/requirements.txt" "$root/$requirements" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$root/$requirements"
  echo "$wanted" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
