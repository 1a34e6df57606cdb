#!/usr/bin/env bash
# The README's main job: EFUF on the toy world, end to end, on this machine (CPU is enough).
# Sets up .venv if needed, then:
#   1. generates the toy world (dataset/toy: COCO-format images/annotations/captions, POPE/MME/GQA/SQA/Q-Bench)
#   2. pretrains the toy CLIP and the toy LLaVA (checkpoints/toy; cached: a second run reuses them)
#   3. runs scripts/efuf.sh on it: captions -> CHAIR before -> objects -> CLIP scores -> pos_neg.json ->
#      EFUF training -> captions -> CHAIR and POPE after; writes results/quickstart/summary.{json,md,png}
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
source scripts/_pipeline.sh
export HF_HUB_OFFLINE=1
SEED="${SEED:-0}"
export DATA="${DATA:-dataset/toy}"
CKPT="${CKPT:-checkpoints/toy}"
export OUT="${OUT:-results/quickstart}"
start=$(date +%s)
"$PYTHON_BIN" -c "import sys, importlib.metadata as m; print('versions:', ', '.join([f'python {sys.version.split()[0]}'] + [f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'trl', 'peft', 'accelerate', 'open_clip_torch', 'tokenizers')]))"

echo "== toy world -> $DATA"
"$PYTHON_BIN" -m common.toy generate --out "$DATA" --seed "$SEED"
echo "== toy models -> $CKPT"
"$PYTHON_BIN" -m common.toy pretrain --data "$DATA" --out "$CKPT" --seed "$SEED"
echo "== EFUF on the toy world -> $OUT"
results_for_models "$OUT" "$CKPT"
PRESET=toy PYTHON="$PYTHON_BIN" MODEL_PATH="$CKPT/llava" CLIP_PATH="$CKPT/clip" bash scripts/efuf.sh

echo
echo "quickstart finished in $(( $(date +%s) - start )) s"
cat "$OUT/summary.md"
