#!/usr/bin/env bash
# The performance checks that need a CUDA GPU, in one run (about 5-8 minutes on an H100 / H200; nothing downloaded):
#   1. EFUF training steps at LLaVA-1.5-7B's shape (random weights, bf16; projector trained as in the paper):
#      old path vs new path, steps/s, tokens/s, padding, host reads per step, model FLOP utilisation (MFU)
#   2. caption generation at that shape: the per-sample loop (timed on 8 prompts, scaled) vs batched, tokens/s;
#      then batched with the static KV cache (the decoding step compiled)
#   3. EFUF's sliding-window CLIP scores at real size (ViT-B-32, 640x480 images): windows/s, preprocessing share
# and prints one table (also written to $OUT_DIR/table.md, with every benchmark's log beside it).
#
#   bash benchmarks/gpu_check.sh             # on a CUDA machine
#   bash benchmarks/gpu_check.sh --smoke     # the same script on the CPU with the tiny models (seconds): a dry run
#   ONLY="train_step generate" RUNS=1 bash benchmarks/gpu_check.sh    # some checks only; timed runs of train_step
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT_DIR="${OUT_DIR:-results/gpu_check}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ "${1:-}" = "--smoke" ]; then
  ARCH=tiny DEV=cpu CLIP_ARCH=tiny
  TRAIN=(--steps 2 --batch_size 2 --runs 1 --workers 1 --image_size 64x48)
  GEN=(--n 8 --batch_size 4 --max_new_tokens 8 --runs 1 --naive_n 4)
  CLIP=(--images 8 --width 80 --height 60 --patch_size 10 --repeat 1)
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --smoke for a dry run')"
  ARCH=llava-1.5-7b DEV=cuda CLIP_ARCH=ViT-B-32
  TRAIN=(--steps 8 --batch_size 4 --runs "${RUNS:-2}" --workers 8 --threads 0 --group_by_length)
  GEN=(--n 64 --batch_size 32 --max_new_tokens 64 --runs 1 --naive_n 8 --threads 0 --image_size 480)
  CLIP=(--images 64 --width 640 --height 480 --patch_size 48 --window_size 4 --average_top_k 4 --repeat 2
        --threads 0)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
fi

ONLY="${ONLY:-train_step generate clip_score generate_static}"
run() {  # run NAME CMD...: its output shown and kept in $OUT_DIR/NAME.log (skipped when NAME is not in $ONLY)
  local name=$1; shift
  case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT_DIR/$name.log" || true  # a failed check leaves its log and "no result" in the table
  echo "== $name took $((SECONDS - t0)) s"
}

run train_step "$PY" benchmarks/bench_train_step.py --arch "$ARCH" --device "$DEV" "${TRAIN[@]}"
run generate "$PY" benchmarks/bench_generate.py --arch "$ARCH" --device "$DEV" "${GEN[@]}"
run clip_score "$PY" benchmarks/bench_clip_score.py --arch "$CLIP_ARCH" --device "$DEV" "${CLIP[@]}"
run generate_static "$PY" benchmarks/bench_generate.py --arch "$ARCH" --device "$DEV" "${GEN[@]}" --static_cache

"$PY" benchmarks/_table.py "$OUT_DIR" --gpu | tee "$OUT_DIR/table.md"
