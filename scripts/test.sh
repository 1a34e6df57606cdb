#!/usr/bin/env bash
# The README's test command: set up .venv if needed (with the dev and demo extras: pytest, Gradio, Playwright), put
# Debian's Chromium on the machine for the browser test where it is missing, then run the whole pytest suite (slow
# tests included).
set -euo pipefail
export LETHE_EXTRAS="${LETHE_EXTRAS:-dev,demo}"
source "$(dirname "$0")/_setup.sh"
if ! command -v chromium > /dev/null 2>&1 && [ -z "${LETHE_CHROMIUM:-}" ]; then
  echo "[setup] installing Debian's chromium for the browser test (apt-get)"
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo -n)
  if ! { "${SUDO[@]}" apt-get install -y -qq chromium > /dev/null 2>&1 || \
         { "${SUDO[@]}" apt-get update -qq > /dev/null 2>&1 && \
           "${SUDO[@]}" apt-get install -y -qq chromium > /dev/null 2>&1; }; }; then
    echo "[setup] could not install chromium (apt-get); the browser test will say so" >&2
  fi
fi
export HF_HUB_OFFLINE=1
exec "$PYTHON_BIN" -m pytest -q "$@"
