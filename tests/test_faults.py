"""Safe under faults and bad input (issue #10, points 5-8): a training run killed while the Trainer writes a
checkpoint, file permissions of checkpoints, and bad training data refused before any model loads.

(The evaluation side, empty captions and partial POPE answers, is tested in test_eval_chair.py, test_eval_pope.py
and test_eval_io.py.)"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_efuf import _argv, _original_format_data

ROOT = Path(__file__).resolve().parents[1]

# Runs finetune/train.py's main() with the Trainer paused inside the save of checkpoint-4: after the trainable
# tensors, optimizer, scheduler and RNG state are written and before trainer_state.json is, it touches a marker
# file and sleeps, so the test can kill -9 it exactly there.
PAUSING_RUN = """
import sys, time
sys.path.insert(0, {root!r})
from finetune import train

real = train.EfufTrainer._save_rng_state

def paused(self, output_dir):
    real(self, output_dir)
    if output_dir.rstrip("/").endswith("checkpoint-4"):
        open({marker!r}, "w").close()
        time.sleep(3600)

train.EfufTrainer._save_rng_state = paused
sys.exit(train.main(sys.argv[1:]))
"""


def _kill_while_saving(tmp_path: Path, argv: list[str]) -> None:
    marker = tmp_path / "paused"
    script = tmp_path / "pausing_run.py"
    script.write_text(PAUSING_RUN.format(root=str(ROOT), marker=str(marker)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not marker.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_tail = (tmp_path / "run.log").read_text()[-3000:]
                    pytest.fail(f"the run never reached the checkpoint-4 save:\n{log_tail}")
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_a_kill_while_writing_a_checkpoint_resumes_from_the_previous_complete_one(tiny_dir, images, tmp_path,
                                                                                  capsys):
    from finetune import train

    data = _original_format_data(tmp_path / "d", images)
    tiny = tiny_dir("llava")
    full = tmp_path / "full"
    assert train.main(_argv(tiny, data, full, "--max_steps", "6")) == 0  # the uninterrupted reference

    killed = tmp_path / "killed"
    _kill_while_saving(tmp_path, _argv(tiny, data, killed, "--max_steps", "6"))
    partial = killed / "checkpoint-4"
    assert (killed / "checkpoint-2" / "trainer_state.json").is_file()
    assert (partial / "trainable.safetensors").is_file() and (partial / "rng_state.pth").is_file()
    assert not (partial / "trainer_state.json").exists() and not (killed / "trainable.safetensors").exists()
    assert train.checkpoint_problem(partial) == "no trainer_state.json"
    assert train.checkpoint_problem(killed / "checkpoint-2") is None

    capsys.readouterr()
    assert train.main(_argv(tiny, data, killed, "--max_steps", "6")) == 0  # no person has to delete anything
    out, err = capsys.readouterr()
    assert f"resuming from {killed / 'checkpoint-2'}" in out
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert warnings == [f"warning: {partial} is an incomplete checkpoint (no trainer_state.json: a run was "
                        f"interrupted while writing it); not resuming from it; moved to "
                        f"{killed / 'incomplete-checkpoint-4'}"]
    a, b = load_file(str(full / "trainable.safetensors")), load_file(str(killed / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same final weights
    # the partial folder is out of the way: checkpoint-4 was written anew, and save_total_limit 2 rotated only real
    # checkpoints (checkpoint-2 went, the moved-aside folder stays for inspection)
    assert sorted(p.name for p in killed.iterdir() if p.is_dir()) == ["checkpoint-4", "checkpoint-6",
                                                                     "incomplete-checkpoint-4"]
    assert json.loads((killed / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert json.loads((killed / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_checkpoint_files_get_ordinary_permissions_and_truncated_checkpoints_are_skipped(tiny_dir, images,
                                                                                         tmp_path, capsys):
    from finetune import train

    data = _original_format_data(tmp_path / "d", images)
    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        assert train.main(_argv(tiny_dir("llava"), data, out, "--max_steps", "4")) == 0
    finally:
        os.umask(old)
    # safetensors' save_file writes 0600; the result must be what open() gives under the umask: 0666 & ~027
    for f in (out / "checkpoint-2" / "trainable.safetensors", out / "checkpoint-4" / "trainable.safetensors",
              out / "trainable.safetensors"):
        assert f.stat().st_mode & 0o777 == 0o640, f

    # every way a checkpoint can be cut short is recognised, and the newest complete one is chosen
    good = out / "checkpoint-4"
    assert train.checkpoint_problem(good) is None
    cases = {
        "checkpoint-10": ("trainer_state.json", lambda b: b[: len(b) // 2], "trainer_state.json is not whole JSON"),
        "checkpoint-12": ("trainable.safetensors", lambda b: b[:-7], "trainable.safetensors is truncated or corrupt"),
        "checkpoint-14": ("optimizer.pt", lambda b: b[: len(b) // 2], "optimizer.pt is truncated or corrupt"),
        "checkpoint-16": ("trainable.safetensors", None, "no trainable.safetensors"),
        "checkpoint-18": ("trainer_state.json", lambda b: b"{}", "trainer_state.json has no global_step"),
    }
    for name, (file, cut, _) in cases.items():
        shutil.copytree(good, out / name)
        f = out / name / file
        if cut is None:
            f.unlink()
        else:
            f.write_bytes(cut(f.read_bytes()))
    for name, (_, _, why) in cases.items():
        assert train.checkpoint_problem(out / name) == why
    capsys.readouterr()
    assert train.last_complete_checkpoint(out, move_aside=False) == str(good)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(cases) and all(ln.startswith("warning: ") for ln in err)
    assert all(any(f"{out / name} " in ln and why in ln for ln in err) for name, (_, _, why) in cases.items())
    assert all((out / name).is_dir() for name in cases)  # move_aside=False: only reported
    assert train.last_complete_checkpoint(out) == str(good)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("incomplete-")) == \
        sorted(f"incomplete-{n}" for n in cases)


# ------------------------------------------------------------------------------------------------- bad data
@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if finetune/train.py gets as far as loading a model."""
    from common.args import ModelArguments

    def load(self, **kw):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(ModelArguments, "load", load)


def _run_bad(tmp_path, capsys, data, *extra) -> str:
    from finetune import train

    rc = train.main(_argv("no/such/model", data, tmp_path / "run", "--max_steps", "1", *extra))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "trainable.safetensors").exists()
    return err


@pytest.mark.parametrize("bad", [
    {1: -1e6}, {3: float("nan")}, {0: float("inf"), 2: -float("inf")}, {4: 100.5}, {5: "high"}, {6: None},
    {0: True},
])
def test_scores_outside_the_clip_scale_are_refused_before_the_model_loads(tmp_path, images, capsys,
                                                                           no_model_load, bad):
    data = _original_format_data(tmp_path / "d", images)
    rows = json.loads(Path(data["pos_neg"]).read_text())
    for i, v in bad.items():
        rows[i]["score"] = v
    Path(data["pos_neg"]).write_text(json.dumps(rows))  # NaN / Infinity as Python's json writes them
    err = _run_bad(tmp_path, capsys, data)
    assert data["pos_neg"] in err and f"{len(bad)} entries have a score" in err and "[-100, 100]" in err
    for i, v in bad.items():
        assert f"entry {i} score={v!r}" in err


def test_many_bad_scores_name_the_first_few_and_the_count(tmp_path, images, capsys, no_model_load):
    data = _original_format_data(tmp_path / "d", images)
    rows = json.loads(Path(data["pos_neg"]).read_text()) * 3  # 21 entries
    for i in range(0, 21, 2):
        rows[i] = {**rows[i], "score": -1e6}
    Path(data["pos_neg"]).write_text(json.dumps(rows))
    err = _run_bad(tmp_path, capsys, data)
    assert "11 entries have a score" in err and "and 6 more" in err
    assert [f"entry {i} " in err for i in range(0, 21, 2)] == [True] * 5 + [False] * 6


def test_edges_of_the_clip_scale_are_scores(tmp_path, images):
    from finetune.data import CLIP_SCORE_BOUND, load_pos_neg

    assert CLIP_SCORE_BOUND == 100.0
    data = _original_format_data(tmp_path / "d", images)
    rows = json.loads(Path(data["pos_neg"]).read_text())
    rows[0]["score"], rows[1]["score"], rows[2]["score"] = -100, 100.0, "21.5"
    Path(data["pos_neg"]).write_text(json.dumps(rows))
    pos, neg = load_pos_neg(data["pos_neg"], data["images"], "p", 23, 32)
    assert 100.0 in [p.score for p in pos] and {-100.0, 21.5} <= {n.score for n in neg}


@pytest.mark.parametrize("field, value", [("mean", float("nan")), ("min", -1e6), ("mean", 1e9), ("min", "x")])
def test_bad_sentence_scores_are_refused_before_the_model_loads(tmp_path, images, capsys, no_model_load, field,
                                                                 value):
    data = _original_format_data(tmp_path / "d", images)
    rows = [{"image": "COCO_train2014_000000000000.jpg", "sentence": "A cat on a couch.", "mean": 30.0, "min": 25.0},
            {"image": "COCO_train2014_000000000001.jpg", "sentence": "A man and a kite.", "mean": 26.0, "min": 24.0}]
    rows[1][field] = value
    Path(data["sentences"]).write_text(json.dumps(rows))
    err = _run_bad(tmp_path, capsys, data, "--sent_w", "0.5")
    assert data["sentences"] in err and "1 entries have a score" in err and f"entry 1 {field}={value!r}" in err


def test_missing_images_are_refused_before_the_model_loads(tmp_path, images, capsys, no_model_load):
    data = _original_format_data(tmp_path / "d", images)
    (Path(data["images"]) / "COCO_train2014_000000000001.jpg").unlink()
    err = _run_bad(tmp_path, capsys, data)
    assert data["pos_neg"] in err and "1 images not found" in err and "COCO_train2014_000000000001.jpg" in err


def test_nan_is_never_a_silently_dropped_entry(tmp_path):
    """Before: NaN failed both threshold comparisons, so the entry simply vanished from training."""
    from common.errors import LetheError
    from finetune.data import load_pos_neg

    assert not (math.nan > 32) and not (math.nan < 23)
    path = tmp_path / "pos_neg.json"
    path.write_text('[{"image": "a.jpg", "sentence": "a dog", "position": 0, "score": NaN}]')
    with pytest.raises(LetheError, match=r"entry 0 score=nan"):
        load_pos_neg(path, "i", "p", 23, 32)
