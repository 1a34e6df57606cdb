#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the whole pytest suite (slow tests included).
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
export HF_HUB_OFFLINE=1
exec "$PYTHON_BIN" -m pytest -q "$@"
