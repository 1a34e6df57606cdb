# Sourced by the README's commands: create .venv if missing and install the project (+dev extras) into it, with
# the versions pinned in constraints.txt (LETHE_CONSTRAINTS= installs the newest releases pyproject.toml allows).
# Re-installs only when pyproject.toml or the constraints changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
STAMP=.venv/.lethe-installed
CONSTRAINTS="${LETHE_CONSTRAINTS-constraints.txt}"
pin=(); [ -n "$CONSTRAINTS" ] && pin=(-c "$CONSTRAINTS")
WANT="$(cat pyproject.toml ${CONSTRAINTS:+"$CONSTRAINTS"} | sha256sum | cut -d' ' -f1)${LETHE_EXTRAS:-dev}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing lethe[${LETHE_EXTRAS:-dev}] into .venv (first time: a few minutes)"
  if ! .venv/bin/python -m pip install --quiet "${pin[@]}" -e ".[${LETHE_EXTRAS:-dev}]" > .venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log
    echo "[setup] pip install failed; full log: .venv/pip-install.log" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}"
# no WANDB_MODE here: transformers prints a banner in every process when it is set; finetune/train.py makes
# wandb offline itself when it reports to wandb without --wandb_user
export TOKENIZERS_PARALLELISM=false
PYTHON_BIN="$ROOT/.venv/bin/python"
