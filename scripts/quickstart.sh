#!/usr/bin/env bash
# The README's main job. Sets up .venv if needed, then runs end to end on this machine, on the toy world:
#   1. generate the toy world (dataset/toy: COCO-format images, captions, POPE/MME/GQA/ScienceQA/Q-Bench layouts)
#   2. pretrain the toy CLIP and the toy LLaVA on CPU (checkpoints/toy; cached: a second run reuses them)
#   3. caption a few val images with the toy LLaVA through the shared model layer
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
export HF_HUB_OFFLINE=1
SEED="${SEED:-0}"
DATA="${DATA:-dataset/toy}"
CKPT="${CKPT:-checkpoints/toy}"
OUT="${OUT:-results/quickstart}"
mkdir -p "$OUT"

echo "== toy world -> $DATA"
"$PYTHON_BIN" -m common.toy generate --out "$DATA" --seed "$SEED"
echo "== toy models -> $CKPT"
"$PYTHON_BIN" -m common.toy pretrain --data "$DATA" --out "$CKPT" --seed "$SEED"
echo "== captions of four val images"
rm -f "$OUT/captions.jsonl"
"$PYTHON_BIN" -m common.generate --model llava --llava_path "$CKPT/llava" \
  --image $(ls "$DATA"/images/val/*.png | head -4) --prompt "Please describe the image." \
  --max_new_tokens 40 --output_jsonl "$OUT/captions.jsonl"
echo "quickstart: metrics in $CKPT/metrics.json, captions in $OUT/captions.jsonl"
