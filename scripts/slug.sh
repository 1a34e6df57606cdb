#!/usr/bin/env bash
# SLUG (Single Layer Unlearning Gradient) on one concept: forget set -> gradients -> layer choice + step-size
# search -> evaluation, beside the `ft` baseline (contrastive fine-tuning without the concept), in one table.
# Every step is skipped when its output exists (delete it, or set OUT to a new dir, to redo).
#
# Real data (the paper's setup; configs/slug/celeb.yaml names the paths; build the forget set first, see there):
#   CFG=configs/slug/celeb.yaml bash scripts/slug.sh            (BASELINE=0 skips the ft baseline)
# The toy world (pretrains the toy models first if needed, as the quickstart does), forgetting "clock":
#   bash scripts/slug.sh --toy                                  (VLM=0 skips the toy LLaVA's VLM mode)
# UNLEARN_ARGS, FT_ARGS and EVAL_ARGS add flags to those steps.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pipeline.sh
parse_toy_flag "$@"
setup_python
START=$(date +%s)

if [ "$TOY" = 1 ]; then
  toy_setup
  : "${CFG:=configs/slug/toy.yaml}" "${OUT:=results/slug_toy}" "${CONCEPT:=clock}" "${VLM:=1}" "${BASELINE:=1}"
  results_for_models "$OUT" "$CKPT"
  # the config with its toy paths re-rooted on DATA / CKPT / OUT (every slug CLI takes its own keys from it)
  mkdir -p "$OUT/data"
  "$PY" - "$CFG" "$OUT/config.yaml" "$DATA" "$CKPT" "$OUT" "$CONCEPT" <<'EOF'
import sys
import yaml
src, dst, data, ckpt, out, concept = sys.argv[1:]
cfg = yaml.safe_load(open(src))
cfg.update(clip_path=f"{ckpt}/clip", concept=concept, forget=f"{out}/data/{concept}.tar",
           retain=f"{out}/data/retain.tar", grads_dir=f"{out}/grads",
           forget_images=f"{data}/classification/val/{concept}", class_names=f"{data}/classification/classes.json",
           retain_folder=f"{data}/classification/val")
open(dst, "w").write(yaml.safe_dump(cfg, sort_keys=False))
EOF
  CFG="$OUT/config.yaml"
  MIA=(--mia_members "$OUT/data/$CONCEPT.tar" --mia_holdout "$OUT/data/${CONCEPT}_val.tar")
  step "1/5 forget set: train pairs naming '$CONCEPT' (+ 1000 other pairs as the retain set, val pairs for the MIA)"
  done_already "$OUT/data/$CONCEPT.tar" || "$PY" slug/create_forget_set.py --name "$CONCEPT" \
    --source "toy:$DATA:train" --n_imgs 0 --out "$OUT/data/$CONCEPT.tar" --exclude_out "$OUT/data/retain.tar" \
    --n_retain 1000
  done_already "$OUT/data/${CONCEPT}_val.tar" || "$PY" slug/create_forget_set.py --name "$CONCEPT" \
    --source "toy:$DATA:val" --n_imgs 0 --out "$OUT/data/${CONCEPT}_val.tar"
else
  : "${CFG:=configs/slug/celeb.yaml}" "${OUT:=results/slug}" "${VLM:=0}" "${BASELINE:=1}"
  mkdir -p "$OUT"
  MIA=()
fi

step "2/5 gradients (one pass over the forget set, one over the retain set) -> $OUT/grads"
# shellcheck disable=SC2086
done_already "$OUT/grads/stats.json" || "$PY" slug/compute_grad.py --config "$CFG" --grads_dir "$OUT/grads"

step "3/5 layer importance, Pareto fronts, step-size search -> $OUT/slug"
# shellcheck disable=SC2086
done_already "$OUT/slug/trace.json" || "$PY" slug/unlearn.py --config "$CFG" --grads_dir "$OUT/grads" \
  --output_dir "$OUT/slug" ${UNLEARN_ARGS:-}

step "4/5 evaluation: original and SLUG"
mkdir -p "$OUT/original"
# shellcheck disable=SC2086
done_already "$OUT/original/report.json" || "$PY" slug/eval.py --config "$CFG" "${MIA[@]}" \
  --output_json "$OUT/original/report.json" ${EVAL_ARGS:-}
# shellcheck disable=SC2086
done_already "$OUT/slug/report.json" || "$PY" slug/eval.py --config "$CFG" "${MIA[@]}" \
  --clip_ckpt_load_path "$OUT/slug" --run_info "$OUT/slug/trace.json" --output_json "$OUT/slug/report.json" \
  ${EVAL_ARGS:-}
rows=("original=$OUT/original/report.json" "slug=$OUT/slug/report.json")

if [ "$BASELINE" = 1 ]; then
  step "5/5 baseline ft: contrastive fine-tuning on the pairs without '${CONCEPT:-the concept}' -> $OUT/ft"
  if [ "$TOY" = 1 ]; then
    # shellcheck disable=SC2086
    done_already "$OUT/ft/report.json" || "$PY" multidelete/unlearn.py --cfg-path configs/clip/retrieval_toy.yaml \
      --unlearn_method ft --data_path "$DATA" --clip_path "$CKPT/clip" --forget_concepts "$CONCEPT" \
      --output_dir "$OUT/ft" ${FT_ARGS:---learning_rate 1e-4}
  else
    echo "(the real-data ft baseline: run multidelete/unlearn.py --unlearn_method ft on your retain pairs with" \
         "--output_dir $OUT/ft, then re-run this script)"
  fi
  if [ -s "$OUT/ft/report.json" ]; then
    # shellcheck disable=SC2086
    done_already "$OUT/ft/slug_report.json" || "$PY" slug/eval.py --config "$CFG" "${MIA[@]}" \
      --clip_ckpt_load_path "$OUT/ft" --run_info "$OUT/ft/report.json" --output_json "$OUT/ft/slug_report.json" \
      ${EVAL_ARGS:-}
    rows+=("ft=$OUT/ft/slug_report.json")
  fi
fi

step "all runs -> $OUT/summary.{json,md}"
"$PY" slug/eval.py --table "${rows[@]}" --summary_json "$OUT/summary.json" --output_md "$OUT/summary.md"
"$PY" - "$OUT/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
if "ft" in s and s["slug"].get("wall_s") and s["ft"].get("wall_s"):
    print(f"SLUG took {s['slug']['wall_s']:.1f} s, ft {s['ft']['wall_s']:.1f} s: "
          f"{s['ft']['wall_s'] / s['slug']['wall_s']:.1f}x shorter")
EOF

if [ "$TOY" = 1 ] && [ "$VLM" = 1 ]; then
  step "VLM mode: the same search on the toy LLaVA's vision tower (its CLIP) -> $OUT/vlm"
  # shellcheck disable=SC2086
  done_already "$OUT/vlm/trace.json" || "$PY" slug/unlearn.py --config "$CFG" --grads_dir "$OUT/grads" \
    --vlm llava --vlm_path "$CKPT/llava" --output_dir "$OUT/vlm" ${UNLEARN_ARGS:-}
  POPE_DIR="$DATA/pope"
  for phase in before after; do
    ck=(); [ "$phase" = after ] && ck=(--llava_ckpt_load_path "$OUT/vlm/vlm")
    mkdir -p "$OUT/vlm/$phase"
    done_already "$OUT/vlm/$phase/captions.jsonl" || "$PY" evaluate/eval_caption.py --model llava \
      --llava_path "$CKPT/llava" "${ck[@]}" --image_dir "$DATA/images/val" --num_images "${N_EVAL:-300}" \
      --prompt "Please describe the image." --max_new_tokens 40 --batch_size 64 \
      --caption_eval_path "$OUT/vlm/$phase/captions.jsonl"
    done_already "$OUT/vlm/$phase/pope.json" || "$PY" evaluate/eval_pope.py --model llava \
      --llava_path "$CKPT/llava" "${ck[@]}" --question_file "$POPE_DIR/llava_pope_test.jsonl" \
      --annotation_dir "$POPE_DIR" --image_dir "$DATA/images/val" --answers_file "$OUT/vlm/$phase/pope_answers.jsonl" \
      --output_json "$OUT/vlm/$phase/pope.json" --batch_size 64 --max_new_tokens 8
  done
  "$PY" slug/vlm_report.py --concept "$CONCEPT" --before "$OUT/vlm/before" --after "$OUT/vlm/after" \
    --coco_annotation_dir "$DATA/annotations" --synonyms "$DATA/synonyms.txt" --no_default_merges \
    --question_file "$POPE_DIR/llava_pope_test.jsonl" \
    --annotation_dir "$POPE_DIR" --output_json "$OUT/vlm/summary.json"
fi
echo "slug: $OUT/summary.json ($(( $(date +%s) - START )) s)"
