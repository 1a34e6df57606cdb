"""Shared pieces of the model-family tests (imported by test_models.py and test_native_families.py)."""
from __future__ import annotations

import math

from common.models import Sample, load_model

PROMPTS = ["Please describe the image.", "Is there a cat?", "What color is the ball on the left side?", "Count."]


def load(tiny_dir, family, **kw):
    return load_model(family, tiny_dir(family), dtype="float32", device="cpu", **kw)


def samples(images):
    return [Sample(images[0], PROMPTS[0], target="a red ball and a blue box.", spans=[(2, 10, 2.0)]),
            Sample(images[1], PROMPTS[1], context="Yes,", target=" there is one", add_eos=False),
            Sample(images[2], PROMPTS[2], target="red")]


def grad_check(vlm, samples_, scope, **kw) -> tuple[set[str], set[str]]:
    """Train-mode loss on ``samples_`` with ``scope`` trainable: finite, and gradients only inside the scope.

    Returns (trainable names, names that received a non-zero gradient)."""
    names = set(vlm.set_trainable(scope, **kw))
    assert names, f"scope {scope} has no parameters"
    vlm.model.train()
    vlm.model.zero_grad(set_to_none=True)
    batch = vlm.build_batch(samples_)
    loss = vlm.per_sample_nll(batch).mean()
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    with_grad = {n for n, p in vlm.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad, "no gradient reached the trainable scope"
    assert with_grad <= names, f"gradient outside scope {scope}: {sorted(with_grad - names)[:3]}"
    assert not [n for n, p in vlm.model.named_parameters() if not p.requires_grad and p.grad is not None]
    return names, with_grad


def check_labels_are_the_targets(vlm, samples_, batch) -> None:
    """Each sample's labels decode to its target, followed by EOS exactly when it asks for one."""
    from common.models import IGNORE_INDEX

    tok = vlm.tokenizer
    for i, s in enumerate(samples_):
        got = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        assert (got[-1] == tok.eos_token_id) == s.add_eos
        assert tok.decode(got[:-1] if s.add_eos else got).strip() == s.target.strip()
