# Sourced by the pipeline scripts (quickstart.sh, stic.sh, multidelete.sh, slug.sh): the steps they share.

# parse_toy_flag "$@": TOY=1 with --toy (the only argument these scripts take); anything else: one error line, exit 2
parse_toy_flag() {
  TOY=0
  local a
  for a in "$@"; do
    case "$a" in
      --toy) TOY=1 ;;
      *) echo "error: unknown argument '$a' (valid: --toy)" >&2; exit 2 ;;
    esac
  done
}

# setup_python: PY = $PYTHON when set, else the project's .venv (created and installed if missing)
setup_python() {
  if [ -z "${PYTHON:-}" ]; then
    source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"
    PYTHON="$PYTHON_BIN"
  fi
  PY="$PYTHON"
}

# toy_models DATA CKPT SEED: the toy world and its pretrained toy models (both reused when up to date)
toy_models() {
  "$PY" -m common.toy generate --out "$1" --seed "$3"
  "$PY" -m common.toy pretrain --data "$1" --out "$2" --seed "$3"
}

# toy_setup: offline, DATA / CKPT default to the toy world's and its models, both made or reused (SEED, default 0)
toy_setup() {
  export HF_HUB_OFFLINE=1
  DATA="${DATA:-dataset/toy}"
  CKPT="${CKPT:-checkpoints/toy}"
  toy_models "$DATA" "$CKPT" "${SEED:-0}"
}

# results_for_models OUT CKPT: the skip-when-done steps would reuse results of other toy models, so OUT starts over
# when the models in CKPT changed since it was made (their stamp is kept in OUT/.toy_models_stamp.json)
results_for_models() {
  if [ -d "$1" ] && ! cmp -s "$2/stamp.json" "$1/.toy_models_stamp.json"; then
    echo "(toy models changed since $1 was made: starting it over)"
    rm -rf "$1"
  fi
  mkdir -p "$1" && cp "$2/stamp.json" "$1/.toy_models_stamp.json"
}

# step TEXT: a step's header; done_already FILE: say so (and succeed) when a step's output exists already
step() { echo; echo "== $*"; }
done_already() { [ -s "$1" ] && echo "(skipped: $1 exists from an earlier run; delete it to redo this step)"; }
