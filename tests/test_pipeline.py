"""scripts/efuf.sh end to end on a small toy world with tiny pretrained toy models (the quickstart's path)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_efuf_pipeline_script_runs_every_step_and_skips_what_is_done(toy_world, tmp_path):
    from common.toy.pretrain import PretrainConfig, pretrain

    ck = tmp_path / "toyck"
    pretrain(PretrainConfig(data=str(toy_world), out=str(ck), clip_steps=40, clip_batch=16, llava_steps=200,
                            llava_batch=16, clip_width=64, clip_layers=1, llm_hidden=64, llm_layers=1, vocab_size=400,
                            eval_batch=32, eval_max_new_tokens=12), log=lambda *_: None)
    out = tmp_path / "efuf"
    env = {**os.environ, "PRESET": "toy", "PYTHON": sys.executable, "DATA": str(toy_world),
           "MODEL_PATH": str(ck / "llava"), "CLIP_PATH": str(ck / "clip"), "OUT": str(out),
           "N_TRAIN_CAPTIONS": "60", "N_EVAL": "24", "MAX_NEW_TOKENS": "12", "BATCH_SIZE": "32",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.run(["bash", str(ROOT / "scripts" / "efuf.sh")], env=env, capture_output=True, text=True,
                           timeout=900, cwd=ROOT)
    assert (out / "pos_neg.json").is_file(), first.stderr[-3000:]
    scores = sorted(e["score"] for e in json.loads((out / "pos_neg.json").read_text()))
    assert scores, "no scored objects"
    if first.returncode != 0:  # the toy thresholds do not fit these barely-trained models: split at the median
        assert "no negative" in first.stderr or "no pos" in first.stderr, first.stderr[-3000:]
    done = {f: (out / f).stat().st_mtime_ns for f in ("train_captions.jsonl", "objects.jsonl", "clip_scores.jsonl",
                                                       "pos_neg.json")}
    med = statistics.median(scores)
    env["EXTRA_TRAIN_ARGS"] = f"--hal_clip_thres {med} --norm_clip_thres {med - 1e-6} --max_steps 3"
    second = subprocess.run(["bash", str(ROOT / "scripts" / "efuf.sh")], env=env, capture_output=True, text=True,
                            timeout=900, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    # steps 1-4 were skipped the second time: their outputs existed and were not rewritten
    assert {f: (out / f).stat().st_mtime_ns for f in done} == done
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"before", "after"}
    for phase in summary.values():
        assert {"CHAIRs", "CHAIRi", "Recall", "f1"} <= phase.keys()
    assert (out / "summary.png").stat().st_size > 1000
    assert (out / "ckpt" / "efuf" / "trainable.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "after" / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 24
