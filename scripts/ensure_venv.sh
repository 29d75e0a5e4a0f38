#!/usr/bin/env bash
# Sourced by the launch scripts: create ./.venv from the pinned requirements on first use, then
# put it first on PATH. Usage: source scripts/ensure_venv.sh [requirements.txt|requirements-dev.txt]
# ANOMALY_PYTHON picks the interpreter that builds the venv (default python3).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="${1:-requirements.txt}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (first run only)" >&2
  "${ANOMALY_PYTHON:-python3}" -m venv "$venv"
fi
# One stamp per requirements file, holding the hash of what was installed: reinstall only on change.
# requirements-dev.txt includes requirements.txt, so installing it refreshes both stamps.
fingerprint() { cat "$root/requirements.txt" "$root/$1" | sha256sum | cut -d' ' -f1; }
stamp="$venv/.installed-$requirements"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(fingerprint "$requirements")" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/$requirements"
  fingerprint "$requirements" > "$stamp"
  if [ "$requirements" = "requirements-dev.txt" ]; then
    fingerprint requirements.txt > "$venv/.installed-requirements.txt"
  fi
fi
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
