#!/usr/bin/env bash
# EFUF end to end: captions -> objects -> CLIP scores -> pos_neg.json -> unlearning -> captions/CHAIR and POPE,
# before and after. Every step is skipped when its output exists (delete it, or set OUT to a new dir, to redo).
#
# Real data (COCO 2014 + LLaVA-1.5; the layout of dataset/README.md):
#   MODEL_PATH=llava-hf/llava-1.5-7b-hf CLIP_PATH=openai/clip-vit-base-patch32 bash scripts/efuf.sh
# The toy world (what scripts/quickstart.sh runs): PRESET=toy bash scripts/efuf.sh
# Any variable below can be set in the environment; EXTRA_TRAIN_ARGS is passed on to finetune/train.py.
# Objects (step 2): OBJECT_BACKEND=vocab (default: CHAIR's synonym matcher; SYNONYMS=file for any other vocabulary,
# "category, synonym, ..." per line) or OBJECT_BACKEND=llm LLM_PATH=meta-llama/Llama-2-13b-chat-hf (EFUF's way: an
# LLM lists the objects, open vocabulary). SYNONYMS also sets the vocabulary CHAIR scores with (step 6).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

if [ "${PRESET:-coco}" = "toy" ]; then
  DATA="${DATA:-dataset/toy}"
  : "${MODEL:=llava}" "${MODEL_PATH:=checkpoints/toy/llava}" "${CLIP_PATH:=checkpoints/toy/clip}"
  : "${TRAIN_IMAGES:=$DATA/images/train}" "${N_TRAIN_CAPTIONS:=1500}"
  : "${EVAL_IMAGES:=$DATA/images/val}" "${EVAL_ANNOTATIONS:=$DATA/annotations}" "${N_EVAL:=300}"
  : "${SYNONYMS:=$DATA/synonyms.txt}" "${DEFAULT_MERGES:=false}"
  : "${CLIP_CONFIG:=configs/efuf/toy_clip.yaml}"
  : "${TRAIN_CONFIG:=configs/efuf/toy.yaml}" "${GOLD:=$DATA/llava/llava_v1_5_mix665k.json}" "${GOLD_IMAGES:=$DATA}"
  : "${POPE_DIR:=$DATA/pope}" "${POPE_IMAGES:=$DATA/images/val}"
  : "${CAPTION_PROMPT:=Please describe the image.}" "${EVAL_PROMPT:=Please describe the image.}"
  : "${MAX_NEW_TOKENS:=40}" "${NUM_BEAMS:=1}" "${EVAL_BEAMS:=1}" "${LENGTH_PENALTY:=1.0}" "${BATCH_SIZE:=64}"
  : "${OUT:=results/efuf-toy}"
else
  DATA="${DATA:-dataset}"
  : "${MODEL:=llava}" "${MODEL_PATH:=llava-hf/llava-1.5-7b-hf}" "${CLIP_PATH:=openai/clip-vit-base-patch32}"
  : "${TRAIN_IMAGES:=$DATA/images}" "${N_TRAIN_CAPTIONS:=30000}"
  : "${EVAL_IMAGES:=$DATA/images}" "${EVAL_ANNOTATIONS:=$DATA/annotations}" "${N_EVAL:=1600}"
  : "${SYNONYMS:=}" "${DEFAULT_MERGES:=true}"
  : "${CLIP_CONFIG:=}"  # EFUF's defaults: 48 px patches, 4x4 windows, top-4 mean, "A photo containing {}."
  : "${TRAIN_CONFIG:=configs/efuf/coco_llava.yaml}" "${GOLD:=$DATA/llava/llava_v1_5_mix665k.json}"
  : "${GOLD_IMAGES:=$DATA/llava}" "${POPE_DIR:=$DATA/pope}" "${POPE_IMAGES:=$DATA/val2014}"
  : "${CAPTION_PROMPT:=Please describe the image.}"
  : "${EVAL_PROMPT:=Please describe the image in great detail. Your response should have at least 100 words.}"
  # EFUF's evaluation captions: beam 5 with length_penalty 0 (its eval_caption.py); training captions greedy
  : "${MAX_NEW_TOKENS:=200}" "${NUM_BEAMS:=1}" "${EVAL_BEAMS:=5}" "${LENGTH_PENALTY:=0}" "${BATCH_SIZE:=16}"
  : "${OUT:=results/efuf}"
fi
: "${OBJECT_BACKEND:=vocab}" "${LLM_PATH:=}"
RUN_NAME="${RUN_NAME:-efuf}"
mkdir -p "$OUT"
step() { echo; echo "== $*"; }
# true (and says so) when a step's output exists: the step is skipped
done_already() { [ -s "$1" ] && echo "(skipped: $1 exists from an earlier run; delete it to redo this step)"; }
model_flags=(--model "$MODEL" "--${MODEL}_path" "$MODEL_PATH")
vocab_flags=()
[ -n "$SYNONYMS" ] && vocab_flags+=(--synonyms "$SYNONYMS")
chair_flags=(); [ "$DEFAULT_MERGES" = "false" ] && chair_flags+=(--no_default_merges)
object_flags=(--backend "$OBJECT_BACKEND")
case "$OBJECT_BACKEND" in
  vocab) object_flags+=("${vocab_flags[@]}" --default_merges "$DEFAULT_MERGES") ;;
  llm) [ -n "$LLM_PATH" ] || { echo "error: OBJECT_BACKEND=llm needs LLM_PATH (a causal LM dir or hub id)" >&2; exit 2; }
       object_flags+=(--llm_path "$LLM_PATH") ;;
  *) echo "error: OBJECT_BACKEND must be vocab or llm (got '$OBJECT_BACKEND')" >&2; exit 2 ;;
esac

step "1/7 captions of $N_TRAIN_CAPTIONS training images -> $OUT/train_captions.jsonl"
done_already "$OUT/train_captions.done" || {
  "$PY" evaluate/eval_caption.py "${model_flags[@]}" --image_dir "$TRAIN_IMAGES" --num_images "$N_TRAIN_CAPTIONS" \
    --prompt "$CAPTION_PROMPT" --max_new_tokens "$MAX_NEW_TOKENS" --num_beams "$NUM_BEAMS" \
    --batch_size "$BATCH_SIZE" --caption_eval_path "$OUT/train_captions.jsonl"
  echo ok > "$OUT/train_captions.done"; }

step "2/7 objects ($OBJECT_BACKEND back end) -> $OUT/objects.jsonl"
done_already "$OUT/objects.done" || {
  "$PY" insight/object.py --captions_path "$OUT/train_captions.jsonl" --output_path "$OUT/objects.jsonl" \
    "${object_flags[@]}"
  echo ok > "$OUT/objects.done"; }

step "3/7 CLIP image-object scores -> $OUT/clip_scores.jsonl"
done_already "$OUT/clip_scores.done" || {
  "$PY" insight/clip.py ${CLIP_CONFIG:+--config "$CLIP_CONFIG"} --objects_path "$OUT/objects.jsonl" \
    --image_dir "$TRAIN_IMAGES" --clip_path "$CLIP_PATH" --output_path "$OUT/clip_scores.jsonl"
  echo ok > "$OUT/clip_scores.done"; }

step "4/7 unlearning data -> $OUT/pos_neg.json, $OUT/sentences.json"
done_already "$OUT/pos_neg.json" || "$PY" finetune/format_data.py --scores_path "$OUT/clip_scores.jsonl" \
  --pos_neg_data_path "$OUT/pos_neg.json" --sentence_data_path "$OUT/sentences.json"

step "5/7 EFUF training -> $OUT/ckpt/$RUN_NAME"
done_already "$OUT/ckpt/$RUN_NAME/trainable.safetensors" || "$PY" finetune/train.py --config "$TRAIN_CONFIG" \
  "${model_flags[@]}" "--${MODEL}_ckpt_save_path" "$OUT/ckpt" --run_name "$RUN_NAME" \
  --pos_neg_data_path "$OUT/pos_neg.json" --sentence_data_path "$OUT/sentences.json" \
  --image_dir_path "$TRAIN_IMAGES" --llava_data_path "$GOLD" --vqa_image_dir "$GOLD_IMAGES" ${EXTRA_TRAIN_ARGS:-}

for phase in before after; do
  ck=(); [ "$phase" = after ] && ck=("--${MODEL}_ckpt_load_path" "$OUT/ckpt/$RUN_NAME")
  step "6/7 [$phase] captions of $N_EVAL held-out images -> CHAIR"
  mkdir -p "$OUT/$phase"
  done_already "$OUT/$phase/chair.json" || {
    "$PY" evaluate/eval_caption.py "${model_flags[@]}" "${ck[@]}" --image_dir "$EVAL_IMAGES" \
      --objects_file "$OUT/objects.jsonl" --num_images "$N_EVAL" --prompt "$EVAL_PROMPT" \
      --max_new_tokens "$MAX_NEW_TOKENS" --num_beams "$EVAL_BEAMS" --length_penalty "$LENGTH_PENALTY" \
      --batch_size "$BATCH_SIZE" --caption_eval_path "$OUT/$phase/captions.jsonl"
    "$PY" evaluate/eval_auto.py --caption_eval_path "$OUT/$phase/captions.jsonl" \
      --coco_annotation_dir "$EVAL_ANNOTATIONS" "${vocab_flags[@]}" "${chair_flags[@]}" \
      --output_json "$OUT/$phase/chair.json"; }
  step "7/7 [$phase] POPE"
  done_already "$OUT/$phase/pope.json" || "$PY" evaluate/eval_pope.py "${model_flags[@]}" "${ck[@]}" \
    --question_file "$POPE_DIR/llava_pope_test.jsonl" --annotation_dir "$POPE_DIR" --image_dir "$POPE_IMAGES" \
    --answers_file "$OUT/$phase/pope_answers.jsonl" --output_json "$OUT/$phase/pope.json" \
    --batch_size "$BATCH_SIZE" --max_new_tokens 8
done

step "before / after"
"$PY" evaluate/report.py "$OUT/before" "$OUT/after" --output_md "$OUT/summary.md" \
  --output_png "$OUT/summary.png" --summary_json "$OUT/summary.json"
echo "EFUF: $OUT/summary.json, $OUT/summary.md, $OUT/summary.png"
