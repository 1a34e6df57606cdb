"""Toy pretraining: deterministic, cached, and its checkpoints load like real ones."""
from __future__ import annotations

import pytest
import torch

from common.toy.pretrain import PretrainConfig, auroc, load_toy_data, pretrain


@pytest.fixture(scope="module")
def small_world(toy_world):
    return toy_world


def _cfg(root, out, **kw):
    base = dict(data=str(root), out=str(out), seed=0, clip_steps=3, clip_batch=16, llava_steps=3, llava_batch=8,
                clip_width=64, clip_layers=1, llm_hidden=64, llm_layers=1, vocab_size=400, eval_batch=32,
                eval_max_new_tokens=8)
    base.update(kw)
    return PretrainConfig(**base)


def test_auroc_known_answers():
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert auroc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 1, 1])) == 1.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([0, 1])) == 0.5  # a tie counts one half


def test_same_seed_same_first_batch_loss_and_cache(small_world, tmp_path):
    logs: list[str] = []
    m1 = pretrain(_cfg(small_world, tmp_path / "a"), log=logs.append)
    m2 = pretrain(_cfg(small_world, tmp_path / "b"), log=lambda *_: None)
    assert m1["clip_first_loss"] == m2["clip_first_loss"]
    assert m1["llava_first_loss"] == m2["llava_first_loss"]
    m3 = pretrain(_cfg(small_world, tmp_path / "c", seed=1), log=lambda *_: None)
    assert m3["clip_first_loss"] != m1["clip_first_loss"]
    for key in ("clip_auroc", "recall", "chair_i", "chair_s", "bias_share"):
        assert 0.0 <= m1[key] <= 1.0
    # a second run with the same seed, data and code reuses the checkpoints
    again: list[str] = []
    assert pretrain(_cfg(small_world, tmp_path / "a"), log=again.append) == m1
    assert any("reusing" in line for line in again)


def test_cache_stamp_follows_the_model_layer_code_and_the_releases(small_world, tmp_path, monkeypatch):
    """Cached toy models are reused only with the same prompts / forward map and the same library releases."""
    import importlib.metadata
    from pathlib import Path

    from common.toy import pretrain as P

    cfg = _cfg(small_world, tmp_path)
    base = P._stamp(cfg, small_world)
    assert {"models/base.py", "models/llava.py", "tiny.py", "toy/pretrain.py"} <= set(P.STAMP_FILES)
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda p: "0.0-other" if p == "transformers" else real_version(p))
    assert P._stamp(cfg, small_world) != base
    monkeypatch.setattr(importlib.metadata, "version", real_version)
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: real_read(self) + (b"#" if self.name == "base.py" else b""))
    assert P._stamp(cfg, small_world) != base  # e.g. a changed default prompt


def test_toy_checkpoints_load_like_real_ones(small_world, tmp_path, images):
    from common.models import load_model

    pretrain(_cfg(small_world, tmp_path / "m"), log=lambda *_: None)
    clip = load_model("clip", str(tmp_path / "m" / "clip"))
    vlm = load_model("llava", str(tmp_path / "m" / "llava"), dtype="float32")
    assert clip.backend == "open_clip"
    # the LLaVA vision tower is the CLIP's tower (weights copied before LLaVA training, then frozen)
    hf = clip.to_hf_vision_model()
    assert all(torch.equal(a, b) for a, b in zip(hf.state_dict().values(),
                                                  vlm.model.model.vision_tower.state_dict().values()))
    assert len(vlm.generate(images[:2], ["Please describe the image."] * 2, max_new_tokens=4)) == 2


def test_qa_answers_are_true(small_world):
    import random

    from common.toy.pretrain import qa_pairs

    data = load_toy_data(small_world)
    cats = {c["id"]: c for c in data.categories}
    rng = random.Random(0)
    for i in range(60):
        q, a = qa_pairs(rng, data, i % len(data.train_files))
        present = {cats[c]["name"] for c in data.train_objects[i % len(data.train_files)]}
        if q.startswith("Is there a "):
            name = q[len("Is there a "):].split(" in ")[0]
            assert (a == "Yes") == (name in present)
        elif q.startswith("What color"):
            name = q[len("What color is the "):].split("?")[0]
            assert name in present and a.lower() == next(c["color"] for c in cats.values() if c["name"] == name)


def test_sample_mean_loss_weighs_a_one_word_answer_like_a_caption():
    """The toy LLaVA's loss: each sample's labelled tokens averaged first, then the samples (known answer)."""
    from common.toy.pretrain import _sample_mean_nll

    # vocab 2, uniform logits except where stated; sample 0 has 3 labelled tokens, sample 1 has 1
    logits = torch.zeros(2, 4, 2)
    logits[1, 2] = torch.tensor([0.0, 2.0])  # predicts the label of position 3 of sample 1
    labels = torch.tensor([[-100, 0, 1, 0], [-100, -100, -100, 1]])
    ln2 = torch.log(torch.tensor(2.0))
    nll_1 = torch.log1p(torch.exp(torch.tensor(-2.0)))  # -log softmax([0, 2])[1]
    expected = (ln2 + nll_1) / 2  # sample 0: mean of three ln2's; sample 1: one token
    assert torch.allclose(_sample_mean_nll(logits, labels), expected)
    token_mean = (3 * ln2 + nll_1) / 4  # what HF's default (one mean over all tokens) gives instead
    assert not torch.allclose(expected, token_mean)
    # a sample without labels is left out of the mean, not counted as zero
    labels_empty = torch.tensor([[-100, 0, 1, 0], [-100, -100, -100, -100]])
    assert torch.allclose(_sample_mean_nll(logits, labels_empty), ln2)


def test_unknown_llava_loss_is_refused(small_world, tmp_path):
    from common.errors import LetheError

    with pytest.raises(LetheError, match="llava_loss"):
        _cfg(small_world, tmp_path / "x", llava_loss="tokens")
