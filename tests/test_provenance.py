"""Provenance: lethe_config.json beside every EFUF checkpoint (the resolved config, model arguments, data paths,
package versions, git state), and the line a method-checkpoint load prints."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from safetensors.torch import load_file

from common.checkpoint import PROVENANCE_FILE, git_state, run_provenance
from common.models import load_model
from test_efuf import _argv, _original_format_data

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "open_clip_torch", "tokenizers")


def _head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def run(tiny_dir, images, tmp_path_factory):
    """One tiny EFUF run: 3 steps, a checkpoint every 2 → checkpoint-2, checkpoint-3 and the run dir."""
    from finetune.train import main

    root = tmp_path_factory.mktemp("prov")
    data = _original_format_data(root / "d", images)
    out = root / "run"
    head_before = _head()
    assert main(_argv(tiny_dir("llava"), data, out, "--max_steps", "3", "--per_device_train_batch_size", "2")) == 0
    return {"out": out, "data": data, "tiny": tiny_dir("llava"), "heads": {head_before, _head()}}


def test_the_run_dir_and_every_checkpoint_hold_the_resolved_config(run):
    from finetune.train import EfufConfig

    out, data = run["out"], run["data"]
    for where, step in ((out, 3), (out / "checkpoint-2", 2), (out / "checkpoint-3", 3)):
        cfg = json.loads((where / PROVENANCE_FILE).read_text())
        assert cfg["method"] == "efuf" and cfg["global_step"] == step
        assert not [p.name for p in where.iterdir() if p.name.startswith(f".{PROVENANCE_FILE}")]  # atomic: no temp
        train = cfg["training"]
        # every EFUF and Trainer field, as resolved for this run
        assert set(train) == {f.name for f in dataclasses.fields(EfufConfig) if f.init}
        assert (train["learning_rate"], train["per_device_train_batch_size"], train["max_steps"], train["seed"],
                train["save_steps"], train["logging_steps"]) == (1e-3, 2, 3, 3, 2, 1)
        assert train["pos_neg_data_path"] == data["pos_neg"] and train["llava_data_path"] == data["gold"]
        assert (train["hal_clip_thres"], train["neg_w_start"], train["scope"]) == (23.0, 0.3, "projector")
        assert train["output_dir"] == str(out) and train["lr_scheduler_type"] == "constant"
        assert cfg["model"]["model"] == "llava" and cfg["model"]["model_path"] == run["tiny"]
        assert cfg["data"] == {"pos_neg_data_path": data["pos_neg"], "sentence_data_path": data["sentences"],
                               "image_dir_path": data["images"], "llava_data_path": data["gold"],
                               "vqa_image_dir": data["gold_images"]}
        assert cfg["trainable"]["scope"] == "projector" and cfg["world_size"] == 1
        assert {k: cfg["versions"][k] for k in PACKAGES} == {k: metadata.version(k) for k in PACKAGES}
        import transformers

        assert cfg["versions"]["transformers"] == transformers.__version__
        assert cfg["git"]["commit"] in run["heads"] and isinstance(cfg["git"]["dirty"], bool)
    assert (out / "model_config.yaml").is_file()


def test_loading_the_checkpoint_prints_one_line(run, capsys):
    capsys.readouterr()
    load_model("llava", run["tiny"], dtype="float32", device="cpu", ckpt_load_path=str(run["out"]))
    err = capsys.readouterr().err
    n = len(load_file(str(run["out"] / "trainable.safetensors")))
    lines = [ln for ln in err.splitlines() if ln.startswith("loaded ")]
    assert lines == [f"loaded {n} tensors from {run['out'] / 'trainable.safetensors'}"] and n == 4


def test_git_state_of_a_checkout_clean_dirty_and_none(tmp_path):
    assert git_state(tmp_path) is None  # not a git checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert git_state(repo) is None  # no commit yet
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "untracked.txt").write_text("u")
    assert git_state(repo) == {"commit": head, "dirty": False}  # untracked files do not count
    (repo / "a.txt").write_text("b")
    assert git_state(repo) == {"commit": head, "dirty": True}
    (repo / "sub").mkdir()
    assert git_state(repo / "sub") is None  # only the top of a checkout: a copy inside another repo is not one


def test_provenance_hides_secrets_of_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--hub_token", "hf_s3cret", "--api_key=k3y", "--learning_rate", "1"])
    prov = run_provenance("efuf", {"training": {"hub_token": "<HUB_TOKEN>"}})
    assert prov["command"][1:] == ["train.py", "--hub_token", "<hidden>", "--api_key=<hidden>", "--learning_rate", "1"]
    assert "s3cret" not in json.dumps(prov) and "k3y" not in json.dumps(prov)
