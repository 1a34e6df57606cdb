#!/usr/bin/env bash
# STIC end to end: evaluate the base model -> self-generated preferences -> stage 1 (regularized DPO) -> evaluate ->
# stage-1 descriptions of the instruction data's images -> description-infused data -> stage 2 (SFT, continuing
# the stage-1 adapter) -> evaluate, without and with describe-and-respond (DaR). Every step is skipped when its
# output exists (delete it, or set OUT to a new dir, to redo); the generation steps resume where they stopped.
#
# Real data (LLaVA-1.6 Mistral-7B, HF layout; COCO train2014 as the unlabeled images, the 5k instruction subset):
#   PREF_IMAGES=/data/coco/train2014 STAGE2_DATA=data/mixed_5k.json STAGE2_IMAGES=/data/stage2 \
#   POPE_DIR=dataset/pope POPE_IMAGES=dataset/val2014 MME_DIR=dataset/MME bash scripts/stic.sh
# The toy world (pretrains the toy models first if needed; a few minutes more the first time):
#   bash scripts/stic.sh --toy
# Any variable below can be set in the environment; EXTRA_DPO_ARGS / EXTRA_SFT_ARGS go to the training scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pipeline.sh
parse_toy_flag "$@"
setup_python

if [ "$TOY" = 1 ]; then
  toy_setup
  : "${MODEL:=llava}" "${MODEL_PATH:=$CKPT/llava}"
  : "${PREF_IMAGES:=$DATA/images/train}" "${N_PREF:=1200}"
  # the toy LLaVA was pretrained on short description prompts and does not follow STIC's step-by-step one: its
  # best descriptions (the preferred answers) come from the prompt it knows
  : "${PREFERRED_PROMPT:=Please describe the image.}"
  : "${STAGE2_DATA:=$DATA/llava/llava_v1_5_mix665k.json}" "${STAGE2_IMAGES:=$DATA}" "${N_STAGE2:=1500}"
  : "${POPE_DIR:=$DATA/pope}" "${POPE_IMAGES:=$DATA/images/val}" "${MME_DIR:=$DATA/mme}"
  : "${CHAIR_ANNOTATIONS:=$DATA/annotations}" "${DESCRIBE_IMAGES:=$DATA/images/val}" "${N_DESCRIBE:=300}"
  chair_flags=(--synonyms "$DATA/synonyms.txt" --no_default_merges)
  : "${DPO_CONFIG:=configs/stic/toy_stage1.yaml}" "${SFT_CONFIG:=configs/stic/toy_stage2.yaml}"
  : "${GEN_TOKENS:=48}" "${GEN_BATCH:=64}" "${EVAL_BATCH:=64}" "${DAR_TOKENS:=48}"
  : "${OUT:=results/stic_toy}"
else
  DATA="${DATA:-dataset}"
  : "${MODEL:=llava_next}" "${MODEL_PATH:=llava-hf/llava-v1.6-mistral-7b-hf}"
  : "${PREF_IMAGES:=$DATA/coco/train2014}" "${N_PREF:=6000}" "${PREFERRED_PROMPT:=}"  # empty: STIC's own
  : "${STAGE2_DATA:=data/mixed_5k.json}" "${STAGE2_IMAGES:=$DATA/stage2_images}" "${N_STAGE2:=5000}"
  : "${POPE_DIR:=$DATA/pope}" "${POPE_IMAGES:=$DATA/val2014}" "${MME_DIR:=$DATA/MME}"
  # CHAIR of the describe step's descriptions: set CHAIR_ANNOTATIONS (COCO annotations dir) and DESCRIBE_IMAGES
  : "${CHAIR_ANNOTATIONS:=}" "${DESCRIBE_IMAGES:=$DATA/val2014}" "${N_DESCRIBE:=500}"
  chair_flags=()
  : "${DPO_CONFIG:=configs/stic/stage1.yaml}" "${SFT_CONFIG:=configs/stic/stage2.yaml}"
  : "${GEN_TOKENS:=1024}" "${GEN_BATCH:=8}" "${EVAL_BATCH:=16}" "${DAR_TOKENS:=512}"
  : "${OUT:=results/stic}"
fi
if [ "$TOY" = 1 ]; then results_for_models "$OUT" "$CKPT"; else mkdir -p "$OUT"; fi
model_flags=(--model "$MODEL" "--${MODEL}_path" "$MODEL_PATH")

evaluate() {  # evaluate PHASE [adapter dir] [extra eval flags...]
  local phase="$1" adapter="${2:-}"; shift 2 || shift $#
  local lora=(); [ -n "$adapter" ] && lora=(--lora_path "$adapter")
  mkdir -p "$OUT/$phase"
  if [ -n "$CHAIR_ANNOTATIONS" ] && [ $# = 0 ]; then  # what the describe step of DaR writes (stage 1's target)
    step "[$phase] descriptions of $N_DESCRIBE images with the DaR prompt -> CHAIR"
    done_already "$OUT/$phase/chair.json" || {
      "$PY" evaluate/eval_caption.py "${model_flags[@]}" "${lora[@]}" --image_dir "$DESCRIBE_IMAGES" \
        --num_images "$N_DESCRIBE" --prompt "Detail the composition and subjects within the frame." \
        --max_new_tokens "$DAR_TOKENS" --batch_size "$EVAL_BATCH" --caption_eval_path "$OUT/$phase/captions.jsonl"
      "$PY" evaluate/eval_auto.py --caption_eval_path "$OUT/$phase/captions.jsonl" \
        --coco_annotation_dir "$CHAIR_ANNOTATIONS" "${chair_flags[@]}" --output_json "$OUT/$phase/chair.json"; }
  fi
  step "[$phase] POPE"
  done_already "$OUT/$phase/pope.json" || "$PY" evaluate/eval_pope.py "${model_flags[@]}" "${lora[@]}" "$@" \
    --question_file "$POPE_DIR/llava_pope_test.jsonl" --annotation_dir "$POPE_DIR" --image_dir "$POPE_IMAGES" \
    --answers_file "$OUT/$phase/pope_answers.jsonl" --output_json "$OUT/$phase/pope.json" \
    --batch_size "$EVAL_BATCH" --max_new_tokens 8
  step "[$phase] MME"
  done_already "$OUT/$phase/mme.json" || "$PY" evaluate/eval_mme.py "${model_flags[@]}" "${lora[@]}" "$@" \
    --mme_data_dir "$MME_DIR" --mme_results_dir "$OUT/$phase/mme_results" \
    --answers_file "$OUT/$phase/mme_answers.jsonl" --output_json "$OUT/$phase/mme.json" \
    --batch_size "$EVAL_BATCH" --max_new_tokens 8
}

evaluate before ""

step "1/5 preferences of $N_PREF unlabeled images -> $OUT/pref.jsonl"
"$PY" stic/generate_pref.py "${model_flags[@]}" --image_dir "$PREF_IMAGES" --save_dir "$OUT/pref.jsonl" \
  --max_images "$N_PREF" --max_new_tokens "$GEN_TOKENS" --batch_size "$GEN_BATCH" \
  ${PREFERRED_PROMPT:+--preferred_prompt "$PREFERRED_PROMPT"}
done_already "$OUT/pref.json" || "$PY" stic/convert_jsonl_to_json.py --input "$OUT/pref.jsonl" --output "$OUT/pref.json"

step "2/5 stage 1: regularized DPO -> $OUT/stage1_adapter"
done_already "$OUT/stage1_adapter/adapter_model.safetensors" || "$PY" stic/train_dpo.py --config "$DPO_CONFIG" \
  "${model_flags[@]}" --data_path "$OUT/pref.json" --image_folder "$PREF_IMAGES" \
  --output_dir "$OUT/stage1_adapter" --report_to none ${EXTRA_DPO_ARGS:-}
evaluate stage1 "$OUT/stage1_adapter"

step "3/5 stage-1 descriptions of the images of $N_STAGE2 instruction samples -> $OUT/image_description.jsonl"
done_already "$OUT/instruct.json" || "$PY" - "$STAGE2_DATA" "$N_STAGE2" "$OUT/instruct.json" <<'EOF'
import sys
from common.io import atomic_write_json, read_json
rows = read_json(sys.argv[1])
atomic_write_json(sys.argv[3], rows[: int(sys.argv[2])])
print(f"{sys.argv[3]}: the first {min(len(rows), int(sys.argv[2]))} of {len(rows)} samples of {sys.argv[1]}")
EOF
"$PY" stic/generate_des_stage2.py "${model_flags[@]}" --lora_path "$OUT/stage1_adapter" \
  --image_dir "$STAGE2_IMAGES" --data_path "$OUT/instruct.json" --save_dir "$OUT/image_description.jsonl" \
  --max_new_tokens "$GEN_TOKENS" --batch_size "$GEN_BATCH"

step "4/5 description-infused data -> $OUT/des_instr_data.json; stage 2 -> $OUT/stage2_adapter"
done_already "$OUT/des_instr_data.json" || "$PY" stic/add_des_to_data.py --data_path "$OUT/instruct.json" \
  --des_path "$OUT/image_description.jsonl" --save_path "$OUT/des_instr_data.json"
done_already "$OUT/stage2_adapter/adapter_model.safetensors" || "$PY" stic/train_sft.py --config "$SFT_CONFIG" \
  "${model_flags[@]}" --load_peft "$OUT/stage1_adapter" --data_path "$OUT/des_instr_data.json" \
  --image_folder "$STAGE2_IMAGES" --output_dir "$OUT/stage2_adapter" --report_to none ${EXTRA_SFT_ARGS:-}
evaluate stage2 "$OUT/stage2_adapter"
evaluate stage2_dar "$OUT/stage2_adapter" --dar --dar_max_new_tokens "$DAR_TOKENS"

step "5/5 before / stage 1 / stage 2 / stage 2 + DaR"
"$PY" evaluate/report.py "$OUT/before" "$OUT/stage1" "$OUT/stage2" "$OUT/stage2_dar" \
  --output_md "$OUT/summary.md" --output_png "$OUT/summary.png" --summary_json "$OUT/summary.json"
cat "$OUT/summary.md"
echo "STIC: $OUT/summary.json, $OUT/summary.md, $OUT/summary.png"
