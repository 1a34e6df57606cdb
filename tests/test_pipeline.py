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
    # steps 1-4 were skipped the second time: their outputs existed and were not rewritten, and it said so
    assert {f: (out / f).stat().st_mtime_ns for f in done} == done
    for f in ("train_captions.done", "objects.done", "clip_scores.done", "pos_neg.json"):
        assert f"(skipped: {out / f} exists" in second.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"before", "after"}
    for phase in summary.values():
        assert {"chair_s", "chair_i", "chair_recall", "pope_f1", "pope_accuracy"} <= phase.keys()
        assert not {"CHAIRs", "CHAIRi", "Recall", "f1"} & phase.keys()  # explicit names only
    assert "| chair_s |" in (out / "summary.md").read_text()
    assert (out / "summary.png").stat().st_size > 1000
    assert (out / "ckpt" / "efuf" / "trainable.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "after" / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 24


def _efuf_sh_calls(tmp_path, **env_vars) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run scripts/efuf.sh with a stand-in interpreter that records each command line (the wiring, not the work)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    stub = tmp_path / "py"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "OUT": str(tmp_path / "out"), **env_vars}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "efuf.sh")], env=env, capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return run, calls


def test_efuf_script_object_back_ends(tmp_path):
    run, calls = _efuf_sh_calls(tmp_path / "llm", OBJECT_BACKEND="llm", LLM_PATH="meta-llama/Llama-2-13b-chat-hf")
    assert run.returncode == 0, run.stderr
    obj = next(c for c in calls if c[0] == "insight/object.py")
    assert obj[obj.index("--backend") + 1] == "llm" and obj[obj.index("--llm_path") + 1] == \
        "meta-llama/Llama-2-13b-chat-hf"
    assert "--synonyms" not in obj
    clip = next(c for c in calls if c[0] == "insight/clip.py")
    assert clip[clip.index("--clip_path") + 1] == "openai/clip-vit-base-patch32"  # the CLIP EFUF scored with
    caps = [c for c in calls if c[0] == "evaluate/eval_caption.py"]
    assert caps[0][caps[0].index("--num_beams") + 1] == "1"  # training captions: greedy
    for c in caps[1:]:  # evaluation captions before / after: EFUF's beam 5 with length_penalty 0
        assert (c[c.index("--num_beams") + 1], c[c.index("--length_penalty") + 1]) == ("5", "0")
    train = next(c for c in calls if c[0] == "finetune/train.py")
    assert train[train.index("--config") + 1] == "configs/efuf/coco_llava.yaml"

    run, calls = _efuf_sh_calls(tmp_path / "vocab", SYNONYMS="my_vocab.txt")
    obj = next(c for c in calls if c[0] == "insight/object.py")
    assert run.returncode == 0 and obj[obj.index("--backend") + 1] == "vocab"
    assert obj[obj.index("--synonyms") + 1] == "my_vocab.txt"
    chair = next(c for c in calls if c[0] == "evaluate/eval_auto.py")
    assert chair[chair.index("--synonyms") + 1] == "my_vocab.txt"

    # a re-run says which steps it skips (here: all of them, every output is present)
    out = tmp_path / "vocab" / "out"
    for f in ("train_captions.done", "objects.done", "clip_scores.done", "pos_neg.json",
              "ckpt/efuf/trainable.safetensors", "before/chair.json", "before/pope.json", "after/chair.json",
              "after/pope.json"):
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        (out / f).write_text("x")
    run, calls = _efuf_sh_calls(tmp_path / "vocab", SYNONYMS="my_vocab.txt")
    assert run.returncode == 0 and run.stdout.count("(skipped: ") == 9
    assert [c[0] for c in calls] == ["evaluate/report.py"]

    run, calls = _efuf_sh_calls(tmp_path / "nollm", OBJECT_BACKEND="llm")
    assert run.returncode == 2 and "OBJECT_BACKEND=llm needs LLM_PATH" in run.stderr and not calls


def test_pipeline_helpers_restart_results_of_other_toy_models_and_refuse_unknown_arguments(tmp_path):
    """scripts/_pipeline.sh (quickstart, stic, multidelete): an OUT made with other toy models starts over, one made
    with these is kept; an argument other than --toy is one error line with status 2."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    ckpt.mkdir()
    (ckpt / "stamp.json").write_text('{"stamp": "a"}')

    def run(script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/_pipeline.sh; {script}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    assert run(f"results_for_models {out} {ckpt}").returncode == 0
    (out / "done.json").write_text("{}")
    kept = run(f"results_for_models {out} {ckpt}")
    assert kept.stdout == "" and (out / "done.json").is_file()
    (ckpt / "stamp.json").write_text('{"stamp": "b"}')
    redone = run(f"results_for_models {out} {ckpt}")
    assert "toy models changed" in redone.stdout and not (out / "done.json").exists()
    assert (out / ".toy_models_stamp.json").read_text() == '{"stamp": "b"}'
    assert run('parse_toy_flag --toy; echo "TOY=$TOY"').stdout.strip() == "TOY=1"
    bad = run("parse_toy_flag --tyo")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: unknown argument '--tyo' (valid: --toy)"
