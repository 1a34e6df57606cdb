"""Foundation acceptance for every HF family: load, loss + trainable scope, batched generation, checkpoints."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.errors import LetheError
from common.models import IGNORE_INDEX, Sample, VisionLanguageModel

from vlm_checks import PROMPTS, check_labels_are_the_targets, grad_check, load
from vlm_checks import samples as _samples

HF_FAMILIES = ["llava", "llava_next", "blip2", "instructblip", "hf"]
VLM_FAMILIES = HF_FAMILIES + ["minigpt4", "owl", "share4v"]
EXPECTED_CLASS = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration",
                  "blip2": "Blip2ForConditionalGeneration", "instructblip": "InstructBlipForConditionalGeneration",
                  "hf": "LlavaForConditionalGeneration", "minigpt4": "MiniGPT4ForConditionalGeneration",
                  "owl": "OwlForConditionalGeneration", "share4v": "LlavaForConditionalGeneration"}
CONNECTOR = {"llava": ("multi_modal_projector",), "llava_next": ("multi_modal_projector",),
             "hf": ("multi_modal_projector",), "share4v": ("multi_modal_projector",),
             "blip2": ("language_projection",), "instructblip": ("language_projection",),
             "minigpt4": ("llama_proj",), "owl": ("abstractor", "query_tokens")}
_load = load


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_tiny_checkpoint_loads_through_load_model(tiny_dir, family):
    vlm = _load(tiny_dir, family)
    assert isinstance(vlm, VisionLanguageModel)
    assert type(vlm.model).__name__ == EXPECTED_CLASS[family]
    assert vlm.family == family


def test_tiny_checkpoint_is_deterministic_for_a_seed(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    from common.tiny import main

    main(["--family", "llava", "--out", str(tmp_path / "again"), "--seed", "0"])
    a = load_file(f"{tiny_dir('llava', 0)}/model.safetensors")
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    c = load_file(f"{tiny_dir('llava', 1)}/model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_training_loss_reaches_only_the_projector(tiny_dir, images, family):
    vlm = _load(tiny_dir, family)
    names, with_grad = grad_check(vlm, _samples(images), "projector")
    for part in CONNECTOR[family]:
        assert any(n == part or n.startswith(part + ".") or f".{part}." in n for n in with_grad), part
    assert not any("language_model" in n or "vision" in n for n in names)


@pytest.mark.parametrize("scope,inside,outside", [
    ("llm", ["language_model", "lm_head"], ["vision_tower", "multi_modal_projector"]),
    ("full", ["language_model", "vision_tower", "multi_modal_projector"], []),
    ("lora", ["lora_A", "lora_B"], ["vision_tower", "multi_modal_projector", "base_layer"]),
])
def test_training_scopes(tiny_dir, images, scope, inside, outside):
    vlm = _load(tiny_dir, "llava")
    names, _ = grad_check(vlm, _samples(images), scope)
    for part in inside:
        assert any(part in n for n in names), part
    for part in outside:
        assert not any(part in n for n in names), part
    if scope == "lora":
        assert all(".language_model." in n for n in names)


def test_vision_layers_scope_selects_exactly_the_given_layer(tiny_dir, images):
    vlm = _load(tiny_dir, "llava")
    names = vlm.set_trainable("vision_layers", vision_layers=[0])
    assert names and all(".layers.0." in n and "vision_tower" in n for n in names)
    with pytest.raises(LetheError, match="out of range"):
        vlm.set_trainable("vision_layers", vision_layers=[7])
    with pytest.raises(LetheError, match="unknown trainable scope"):
        vlm.set_trainable("everything")


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_batched_greedy_generation_equals_batch_size_one(tiny_dir, images, family):
    vlm = _load(tiny_dir, family)
    batched = vlm.generate(images, PROMPTS, max_new_tokens=12, batch_size=4)
    single = [vlm.generate([im], [p], max_new_tokens=12)[0] for im, p in zip(images, PROMPTS)]
    assert batched == single
    assert len(batched) == 4 and all(isinstance(t, str) for t in batched)
    # more prompts than a batch: generated in order of length, returned in the given order
    assert vlm.generate(images[::-1], PROMPTS[::-1], max_new_tokens=12, batch_size=3) == single[::-1]


def test_generation_sorts_by_length_and_static_cache_changes_nothing(tiny_dir, images, monkeypatch):
    vlm = _load(tiny_dir, "llava")
    prompts = ["Is there a cat?", "Please describe the image in great detail, every object.", "Color?",
               "What is on the table next to the red couch?", "Describe it.", "How many people?"]
    ims = [images[i % len(images)] for i in range(len(prompts))]
    want = [vlm.generate([im], [p], max_new_tokens=8)[0] for im, p in zip(ims, prompts)]
    widths: list[int] = []
    inner = vlm.model.generate

    def spy(**kw):
        widths.append(kw["input_ids"].shape[1])
        return inner(**kw)

    monkeypatch.setattr(vlm.model, "generate", spy)
    assert vlm.generate(ims, prompts, max_new_tokens=8, batch_size=2) == want
    assert widths == sorted(widths) and len(widths) == 3  # short prompts first: batches of similar length
    assert vlm.generate(ims, prompts, max_new_tokens=8, batch_size=4, static_cache=True) == want


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_saved_method_checkpoint_reloads_to_identical_outputs(tiny_dir, images, tmp_path, family):
    vlm = _load(tiny_dir, family)
    vlm.set_trainable("projector")
    with torch.no_grad():
        for p in vlm.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    batch = vlm.build_batch(_samples(images))
    with torch.no_grad():
        want = vlm.model_forward(batch).logits
    want_text = vlm.generate(images, PROMPTS, max_new_tokens=8)
    path = vlm.save_checkpoint(tmp_path / "ckpt")
    assert path.name == "trainable.safetensors" and path.is_file()

    fresh = _load(tiny_dir, family)
    with torch.no_grad():
        assert not torch.equal(fresh.model_forward(batch).logits, want)
    again = _load(tiny_dir, family, ckpt_load_path=str(tmp_path / "ckpt"))
    with torch.no_grad():
        assert torch.equal(again.model_forward(batch).logits, want)
    assert again.generate(images, PROMPTS, max_new_tokens=8) == want_text


@pytest.mark.parametrize("family", ["llava", "llava_next", "minigpt4"])
def test_hf_prompt_style_keeps_labels_and_batched_generation(tiny_dir, images, family):
    """prompt_style="hf" (the processor's chat template, one tokenizer pass) keeps the forward-map and generation
    guarantees of the default official style."""
    vlm = _load(tiny_dir, family, prompt_style="hf")
    samples = _samples(images)
    check_labels_are_the_targets(vlm, samples, vlm.build_batch(samples))
    batched = vlm.generate(images, PROMPTS, max_new_tokens=8, batch_size=4)
    assert batched == [vlm.generate([im], [p], max_new_tokens=8)[0] for im, p in zip(images, PROMPTS)]


def test_lora_checkpoint_reapplies_the_adapter(tiny_dir, images, tmp_path):
    vlm = _load(tiny_dir, "llava")
    vlm.set_trainable("lora", lora_r=4)
    with torch.no_grad():
        for n, p in vlm.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.3)
    batch = vlm.build_batch(_samples(images))
    with torch.no_grad():
        want = vlm.model_forward(batch).logits
        with vlm.adapter_disabled():
            base = vlm.model_forward(batch).logits
    assert not torch.equal(want, base)
    vlm.save_checkpoint(tmp_path / "lora.safetensors")
    again = _load(tiny_dir, "llava", ckpt_load_path=str(tmp_path / "lora.safetensors"))
    with torch.no_grad():
        assert torch.equal(again.model_forward(batch).logits, want)


# ---------------------------------------------------------------- forward map: numbers against known answers
def test_labels_are_exactly_the_target_tokens(tiny_dir, images):
    vlm = _load(tiny_dir, "llava")
    samples = _samples(images)
    batch = vlm.build_batch(samples)
    tok = vlm.tokenizer
    eos = tok.eos_token_id
    for i, s in enumerate(samples):
        got = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        # joint tokenisation of "...ASSISTANT: <context><target>" — the target's tokens are the tail
        full = tok(batch.texts[i])["input_ids"]
        n_tail = len(tok(" " + s.target if not s.context else s.target, add_special_tokens=False)["input_ids"])
        n_tail += int(s.add_eos)
        assert got == full[-n_tail:]
        assert (got[-1] == eos) == s.add_eos
    # context "Yes," is conditioning only
    assert "Yes" not in tok.decode(batch.labels[1][batch.labels[1] != IGNORE_INDEX])
    assert tok.decode(batch.labels[1][batch.labels[1] != IGNORE_INDEX]) == " there is one"


def test_span_weights_mark_the_span_tokens(tiny_dir, images):
    vlm = _load(tiny_dir, "llava")
    s = Sample(images[0], "describe", target="a red ball and a blue box.", spans=[(2, 10, 2.5)],
               default_weight=0.5, add_eos=False)
    b = vlm.build_batch([s])
    m = b.labels[0] != IGNORE_INDEX
    toks = [vlm.tokenizer.decode([t]) for t in b.labels[0][m].tolist()]
    weights = b.weights[0][m].tolist()
    # the weighted tokens are exactly the ones covering "red ball"; the rest keep the default weight
    assert "".join(t for t, w in zip(toks, weights) if w == 2.5) == " red ball"
    assert "".join(t for t, w in zip(toks, weights) if w == 0.5) == " a and a blue box."
    assert set(weights) == {0.5, 2.5}
    assert b.weights[0][~m].abs().sum() == 0


def test_per_sample_nll_matches_cross_entropy_and_padding_side(tiny_dir, images):
    vlm = _load(tiny_dir, "llava")
    samples = _samples(images)
    right = vlm.build_batch(samples, padding_side="right")
    left = vlm.build_batch(samples, padding_side="left")
    with torch.no_grad():
        logits = vlm.model_forward(right).logits
        nll = vlm.per_sample_nll(right, logits=logits)
        ref = torch.stack([F.cross_entropy(logits[i, :-1], right.labels[i, 1:], ignore_index=IGNORE_INDEX)
                           for i in range(len(samples))])
        assert torch.allclose(nll, ref, atol=1e-5)
        assert torch.allclose(vlm.per_sample_nll(left), nll, atol=1e-4)
        lp = vlm.token_logprobs(right, logits=logits)
        full = torch.log_softmax(logits.float(), -1)
        i, t = 0, int((right.labels[0] != IGNORE_INDEX).nonzero()[0])
        assert torch.isclose(lp[i, t], full[i, t - 1, right.labels[i, t]])
        assert lp[right.labels == IGNORE_INDEX].abs().sum() == 0
        # weighted: Σ w·nll / n — span weights 2.0 raise the first sample's loss
        w = vlm.per_sample_nll(right, weighted=True, logits=logits)
        mask = right.labels[0] != IGNORE_INDEX
        manual = -(lp[0] * right.weights[0]).sum() / mask.sum()
        assert torch.isclose(w[0], manual)
        assert torch.isclose(w[2], nll[2])


def test_token_positions_partition_the_sequence(tiny_dir, images):
    vlm = _load(tiny_dir, "llava")
    b = vlm.build_batch(_samples(images))
    pos = vlm.token_positions(b)
    assert int(pos["image"][0].sum()) == 16  # (32 / 8)^2 patches
    assert not (pos["image"] & pos["answer"]).any() and not (pos["question"] & pos["answer"]).any()
    assert torch.equal(pos["answer"], b.labels != IGNORE_INDEX)
    q = b.inputs["input_ids"][0][pos["question"][0]]
    assert "describe" in vlm.tokenizer.decode(q)


@pytest.mark.parametrize("family", ["llava", "blip2", "instructblip"])
def test_introspection(tiny_dir, family):
    vlm = _load(tiny_dir, family)
    groups = vlm.attention_modules()
    assert len(groups["vision"]) == 2 and len(groups["llm"]) == 2
    assert len(groups["bridge"]) == (0 if family == "llava" else 4)  # Q-Former: self + cross per layer
    assert type(vlm.final_norm).__name__.endswith("Norm")
    assert vlm.lm_head is vlm.model.get_output_embeddings()


def test_instructblip_qformer_sees_the_prompt_only(tiny_dir, images):
    vlm = _load(tiny_dir, "instructblip")
    b = vlm.build_batch([Sample(images[0], "describe", target="a secret answer")])
    q = vlm.processor.qformer_tokenizer.decode(b.inputs["qformer_input_ids"][0], skip_special_tokens=True)
    assert "describe" in q and "secret" not in q
