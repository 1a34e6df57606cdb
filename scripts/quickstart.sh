#!/usr/bin/env bash
# The README's main job. Sets up .venv if needed, then runs end to end on this machine.
# Today: a smoke run of the shared model layer on a tiny LLaVA checkpoint (build → load → batched captions).
set -euo pipefail
source "$(dirname "$0")/_setup.sh"
export HF_HUB_OFFLINE=1
OUT="${OUT:-results/quickstart}"
CKPT="${CKPT:-checkpoints/tiny/llava}"
mkdir -p "$OUT"
if [ ! -f "$CKPT/config.json" ]; then
  "$PYTHON_BIN" -m common.tiny --family llava --out "$CKPT" --seed 0
fi
"$PYTHON_BIN" - "$OUT" <<'PY'
import sys
from pathlib import Path
from PIL import Image, ImageDraw
out = Path(sys.argv[1]) / "images"; out.mkdir(parents=True, exist_ok=True)
for i, colour in enumerate(["red", "green", "blue", "yellow"]):
    im = Image.new("RGB", (64, 64), "white"); ImageDraw.Draw(im).ellipse((16, 16, 48, 48), fill=colour)
    im.save(out / f"img_{i}.png")
PY
rm -f "$OUT/captions.jsonl"
"$PYTHON_BIN" -m common.generate --model llava --llava_path "$CKPT" --image "$OUT"/images/img_*.png \
  --prompt "Please describe the image." --max_new_tokens 16 --output_jsonl "$OUT/captions.jsonl"
echo "quickstart: wrote $(wc -l < "$OUT/captions.jsonl") captions to $OUT/captions.jsonl"
