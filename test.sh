#!/usr/bin/env bash
# Run the test suite (creates .venv with the dev requirements on first use). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh requirements-dev.txt
exec python -m pytest "$@"
