#!/usr/bin/env bash
# Every CPU benchmark with its defaults (one torch thread each), one after the other, then one table of their RESULT
# lines: what the README's performance table shows. About 6 minutes on a 2-core machine with nothing else running.
#
#   bash benchmarks/run_all.sh [NAME ...]     # NAME: generate chair clip_score train_step dpo_memory unlearn slug
#                                             #       stethoscope (default: all); logs in $OUT_DIR (results/benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT_DIR="${OUT_DIR:-results/benchmarks}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(generate chair clip_score train_step dpo_memory unlearn slug stethoscope)
for name in "${names[@]}"; do
  [ -f "benchmarks/bench_$name.py" ] || { echo "error: no benchmarks/bench_$name.py" >&2; exit 2; }
  echo "== bench_$name"
  "$PY" "benchmarks/bench_$name.py" 2>&1 | grep -v "^Writing model shards" | tee "$OUT_DIR/$name.log"
done
"$PY" benchmarks/_table.py "$OUT_DIR" | tee "$OUT_DIR/table.md"
