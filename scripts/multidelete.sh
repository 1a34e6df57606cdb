#!/usr/bin/env bash
# CLIP unlearning on one retrieval task: the original model (trained, or evaluated as given), then every method
# (vlul = MultiDelete, erase, delete, ft, neggrad) from it, then one table of efficacy, utility, AUROC, MIA and
# wall time. Every step is skipped when its report exists (delete it, or set OUT to a new dir, to redo).
#
# Real data (SALMUBench; unlearning starts from the config's clip_path, e.g. the SALMU Compromised model):
#   CFG=configs/clip/retrieval_salmu.yaml bash scripts/multidelete.sh
#   (TRAIN_ORIGINAL=1 first trains the original model on the task, MultiDelete's step 1)
# The toy world (pretrains the toy models first if needed, as the quickstart does):
#   bash scripts/multidelete.sh --toy
# METHODS="vlul erase" runs a subset; VLUL_ARGS, ERASE_ARGS, DELETE_ARGS, FT_ARGS, NEGGRAD_ARGS, ORIGINAL_ARGS and
# EXTRA_ARGS add flags (EXTRA_ARGS to every run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pipeline.sh
parse_toy_flag "$@"
setup_python
START=$(date +%s)

if [ "$TOY" = 1 ]; then
  toy_setup
  : "${CFG:=configs/clip/retrieval_toy.yaml}" "${OUT:=results/multidelete_toy}" "${TRAIN_ORIGINAL:=1}"
  # the toy CLIP was pretrained for object presence; MultiDelete's step 1 makes it a retrieval model
  : "${ORIGINAL_ARGS:=--learning_rate 1e-4 --per_device_train_batch_size 64 --num_train_epochs 2}"
  # per method, the toy settings that came closest to forgetting with utility kept (README, "CLIP unlearning")
  : "${VLUL_ARGS:=--learning_rate 3e-4 --beta 50 --gamma 50}" "${ERASE_ARGS:=--learning_rate 1e-3}"
  : "${DELETE_ARGS:=--learning_rate 3e-4 --num_train_epochs 5}" "${FT_ARGS:=--learning_rate 1e-4}"
  : "${NEGGRAD_ARGS:=--learning_rate 1e-5}"
  EXTRA_ARGS="${EXTRA_ARGS:-} --data_path $DATA --clip_path $CKPT/clip"
else
  : "${CFG:=configs/clip/retrieval_salmu.yaml}" "${OUT:=results/multidelete}" "${TRAIN_ORIGINAL:=0}"
  : "${ORIGINAL_ARGS:=}" "${VLUL_ARGS:=}" "${ERASE_ARGS:=}" "${DELETE_ARGS:=}" "${FT_ARGS:=}" "${NEGGRAD_ARGS:=}"
  EXTRA_ARGS="${EXTRA_ARGS:-}"
fi
: "${METHODS:=vlul erase delete ft neggrad}"
if [ "$TOY" = 1 ]; then results_for_models "$OUT" "$CKPT"; else mkdir -p "$OUT"; fi

original=()
if [ "$TRAIN_ORIGINAL" = 1 ]; then
  step "original model: contrastive training on the task's train pairs -> $OUT/original"
  # shellcheck disable=SC2086
  done_already "$OUT/original/report.json" || "$PY" multidelete/train.py --cfg-path "$CFG" \
    --output_dir "$OUT/original" $EXTRA_ARGS $ORIGINAL_ARGS
  original=(--clip_ckpt_load_path "$OUT/original")
else
  step "original model: evaluation -> $OUT/original/report.json"
  mkdir -p "$OUT/original"
  # shellcheck disable=SC2086
  done_already "$OUT/original/report.json" || "$PY" multidelete/eval.py --cfg-path "$CFG" \
    --output_json "$OUT/original/report.json" $EXTRA_ARGS
fi

rows=("original=$OUT/original/report.json")
for m in $METHODS; do
  var="$(echo "$m" | tr '[:lower:]' '[:upper:]')_ARGS"
  step "$m -> $OUT/$m"
  # shellcheck disable=SC2086
  done_already "$OUT/$m/report.json" || "$PY" multidelete/unlearn.py --cfg-path "$CFG" --unlearn_method "$m" \
    "${original[@]}" --output_dir "$OUT/$m" $EXTRA_ARGS ${!var:-}
  rows+=("$m=$OUT/$m/report.json")
done

step "all runs -> $OUT/summary.{json,md,png}"
"$PY" multidelete/eval.py --table "${rows[@]}" --output_md "$OUT/summary.md" --output_png "$OUT/summary.png" \
  --summary_json "$OUT/summary.json"
echo "multidelete: $OUT/summary.json ($(( $(date +%s) - START )) s)"
