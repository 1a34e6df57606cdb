"""MiniGPT-4, mPLUG-Owl and ShareGPT4V: the foundation acceptance points, the official templates, and the official
forward math (re-derived here from the official code) against our native modules."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.errors import LetheError
from common.models import IGNORE_INDEX, load_model
from vlm_checks import check_labels_are_the_targets, grad_check, load
from vlm_checks import samples as _samples

FAMILIES = ["minigpt4", "owl", "share4v"]  # the foundation acceptance tests of test_models.py cover them too
IMAGE_TOKENS = {"minigpt4": 4, "owl": 9, "share4v": 16}  # (56/14)²/4, 8 queries + vit_eos, (32/8)²
_load = load


@pytest.mark.parametrize("family", FAMILIES)
def test_vocabulary_layout(tiny_dir, family):
    vlm = _load(tiny_dir, family)
    rows = vlm.lm_head.weight.shape[0]
    if family == "share4v":  # llava-hf style: <image> and <pad> added, rows padded to a multiple of 64
        assert rows == 640 and len(vlm.tokenizer) == 602
    else:  # the official LLMs have no image token: the placeholder lies just outside the LLM vocabulary
        assert len(vlm.tokenizer) == rows + 1 and vlm.image_token_id == rows
        assert vlm.tokenizer.pad_token == vlm.tokenizer.unk_token == "<unk>"


def test_tiny_checkpoints_are_deterministic_for_a_seed(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    from common.tiny import main

    for family in ("minigpt4", "owl"):
        assert main(["--family", family, "--out", str(tmp_path / family), "--seed", "0"]) == 0
        a = load_file(f"{tiny_dir(family)}/model.safetensors")
        b = load_file(str(tmp_path / family / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(f"{tiny_dir('owl', 1)}/model.safetensors")
    assert not torch.equal(a["query_tokens"], c["query_tokens"])


def test_official_templates(tiny_dir):
    p = "Please describe the image."
    assert _load(tiny_dir, "minigpt4").chat_prompt(p) == "[INST] <Img><ImageHere></Img> Please describe the image. [/INST]"
    assert _load(tiny_dir, "owl").chat_prompt(p) == (
        "The following is a conversation between a curious human and AI assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions.\nHuman: <image>\nHuman: Please describe the image.\nAI: ")
    assert _load(tiny_dir, "share4v").chat_prompt(p) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nPlease describe the image. ASSISTANT:")


@pytest.mark.parametrize("family", ["minigpt4", "owl"])
@pytest.mark.parametrize("scope,inside,outside", [
    ("llm", ["language_model"], ["vision_model", "llama_proj", "abstractor"]),
    ("lora", ["lora_A", "lora_B"], ["vision_model", "llama_proj", "abstractor", "base_layer"]),
    ("vision_layers", ["vision_model.encoder.layers.1."], ["language_model", "layers.0."]),
])
def test_other_scopes(tiny_dir, images, family, scope, inside, outside):
    vlm = _load(tiny_dir, family)
    kw = {"vision_layers": [1]} if scope == "vision_layers" else {}
    names, _ = grad_check(vlm, _samples(images), scope, **kw)
    for part in inside:
        assert any(part in n for n in names), part
    for part in outside:
        assert not any(part in n for n in names), part


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_positions_and_per_target_token_mean(tiny_dir, images, family):
    vlm = _load(tiny_dir, family)
    samples = _samples(images)
    batch = vlm.build_batch(samples)
    check_labels_are_the_targets(vlm, samples, batch)
    pos = vlm.token_positions(batch)
    assert pos["image"].sum(1).tolist() == [IMAGE_TOKENS[family]] * 3
    assert "describe" in vlm.tokenizer.decode(batch.inputs["input_ids"][0][pos["question"][0]])
    with torch.no_grad():
        logits = vlm.model_forward(batch).logits
        nll = vlm.per_sample_nll(batch, logits=logits)
        ref = torch.stack([F.cross_entropy(logits[i, :-1], batch.labels[i, 1:], ignore_index=IGNORE_INDEX)
                           for i in range(3)])
        assert torch.allclose(nll, ref, atol=1e-5)
        # a proper per-target-token mean: padding does not change a sample's loss (the original MiniGPT-4/Owl
        # averaged over the padded length)
        alone = vlm.per_sample_nll(vlm.build_batch([samples[2]]))
        assert torch.allclose(alone, nll[2:], atol=1e-5)


@pytest.mark.parametrize("family", ["minigpt4", "owl"])
def test_introspection(tiny_dir, family):
    vlm = _load(tiny_dir, family)
    groups = vlm.attention_modules()
    assert len(groups["vision"]) == 2 and len(groups["llm"]) == 2
    assert len(groups["bridge"]) == (2 if family == "owl" else 0)  # one cross-attention per abstractor layer
    assert type(vlm.final_norm).__name__.endswith("Norm")
    assert vlm.lm_head is vlm.model.get_output_embeddings()
    assert len(vlm.vision_layers()) == 2


def test_efuf_model_flags_select_the_new_families(tiny_dir):
    from common.args import ModelArguments, parse_args

    for family in FAMILIES:
        (a,) = parse_args([ModelArguments], ["--model", family, f"--{family}_path", tiny_dir(family),
                                             "--dtype", "float32", "--device", "cpu"])
        assert a.model == family and a.model_path == tiny_dir(family)
    assert type(a.load().model).__name__ == "LlavaForConditionalGeneration"


# ---------------------------------------------------------------- official math, re-derived from the official code


def _ln(x, w, b, eps):
    return F.layer_norm(x.float(), (x.shape[-1],), w.float(), b.float(), eps)


def _minigpt4_reference(eva, proj, pixel, heads):
    """eva_vit.py VisionTransformer.forward_features + ln_vision (fresh LayerNorm) + MiniGPT4.encode_img."""
    patch = eva["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(pixel, eva["patch_embed.proj.weight"], eva["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([eva["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + eva["pos_embed"]
    b, n, c = x.shape
    i = 0
    while f"blocks.{i}.norm1.weight" in eva:
        p = f"blocks.{i}."
        h = _ln(x, eva[p + "norm1.weight"], eva[p + "norm1.bias"], 1e-6)
        bias = torch.cat([eva[p + "attn.q_bias"], torch.zeros_like(eva[p + "attn.v_bias"]), eva[p + "attn.v_bias"]])
        qkv = F.linear(h, eva[p + "attn.qkv.weight"], bias).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
        h = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + F.linear(h, eva[p + "attn.proj.weight"], eva[p + "attn.proj.bias"])
        h = _ln(x, eva[p + "norm2.weight"], eva[p + "norm2.bias"], 1e-6)
        h = F.linear(F.gelu(F.linear(h, eva[p + "mlp.fc1.weight"], eva[p + "mlp.fc1.bias"])),
                     eva[p + "mlp.fc2.weight"], eva[p + "mlp.fc2.bias"])
        x = x + h
        i += 1
    x = _ln(x, torch.ones(c), torch.zeros(c), 1e-5)[:, 1:, :]
    x = x.reshape(b, (n - 1) // 4, c * 4)
    return F.linear(x, proj["llama_proj.weight"], proj["llama_proj.bias"])


def _owl_reference(sd, pixel, vheads, aheads):
    """modeling_mplug_owl.py: MplugOwlVisionModel → MplugOwlVisualAbstractorModel (with query_tokens)."""
    g = lambda k: sd[k].float()  # noqa: E731
    v = "vision_model."
    patch = sd[v + "embeddings.patch_embed.weight"].shape[-1]
    x = F.conv2d(pixel, g(v + "embeddings.patch_embed.weight"), stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([g(v + "embeddings.cls_token").expand(x.shape[0], 1, -1), x], dim=1)
    x = x + g(v + "embeddings.position_embedding")[:, : x.shape[1]]
    x = _ln(x, g(v + "embeddings.pre_layernorm.weight"), g(v + "embeddings.pre_layernorm.bias"), 1e-6)
    b, n, c = x.shape
    i = 0
    while f"{v}encoder.layers.{i}.input_layernorm.weight" in sd:
        p = f"{v}encoder.layers.{i}."
        h = _ln(x, g(p + "input_layernorm.weight"), g(p + "input_layernorm.bias"), 1e-6)
        mixed = F.linear(h, g(p + "self_attn.query_key_value.weight"), g(p + "self_attn.query_key_value.bias"))
        mixed = mixed.reshape(b, n, vheads, 3, c // vheads).permute(3, 0, 2, 1, 4)
        probs = torch.softmax(torch.matmul(mixed[0], mixed[1].transpose(-1, -2)) * (c // vheads) ** -0.5, dim=-1)
        ctx = torch.matmul(probs, mixed[2]).permute(0, 2, 1, 3).reshape(b, n, c)
        x = x + F.linear(ctx, g(p + "self_attn.dense.weight"), g(p + "self_attn.dense.bias"))
        h = _ln(x, g(p + "post_attention_layernorm.weight"), g(p + "post_attention_layernorm.bias"), 1e-6)
        h = F.linear(h, g(p + "mlp.fc1.weight"), g(p + "mlp.fc1.bias"))
        x = x + F.linear(h * torch.sigmoid(1.702 * h), g(p + "mlp.fc2.weight"), g(p + "mlp.fc2.bias"))
        i += 1
    image = _ln(x, g(v + "post_layernorm.weight"), g(v + "post_layernorm.bias"), 1e-6)
    q = g("query_tokens").expand(b, -1, -1)
    i = 0
    while f"abstractor.encoder.layers.{i}.crossattention.norm1.weight" in sd:
        p = f"abstractor.encoder.layers.{i}.crossattention."
        qn = _ln(q, g(p + "norm1.weight"), g(p + "norm1.bias"), 1e-5)
        kv = torch.cat([qn, _ln(image, g(p + "normk.weight"), g(p + "normk.bias"), 1e-5)], dim=1)
        split = lambda t: t.view(b, t.shape[1], aheads, -1).permute(0, 2, 1, 3)  # noqa: E731
        qq = split(F.linear(qn, g(p + "attention.query.weight"), g(p + "attention.query.bias")))
        kk = split(F.linear(kv, g(p + "attention.key.weight"), g(p + "attention.key.bias")))
        vv = split(F.linear(kv, g(p + "attention.value.weight"), g(p + "attention.value.bias")))
        probs = torch.softmax(torch.matmul(qq, kk.transpose(-1, -2)) / math.sqrt(qq.shape[-1]), dim=-1)
        ctx = torch.matmul(probs, vv).permute(0, 2, 1, 3).reshape(b, q.shape[1], -1)
        x = qn + F.linear(ctx, g(p + "output.out_proj.weight"), g(p + "output.out_proj.bias"))
        h = _ln(x, g(p + "output.norm2.weight"), g(p + "output.norm2.bias"), 1e-5)
        m = p + "output.mlp."
        h = F.silu(F.linear(h, g(m + "w1.weight"), g(m + "w1.bias"))) * F.linear(h, g(m + "w3.weight"), g(m + "w3.bias"))
        h = F.linear(_ln(h, g(m + "ffn_ln.weight"), g(m + "ffn_ln.bias"), 1e-6), g(m + "w2.weight"), g(m + "w2.bias"))
        q = x + h
        i += 1
    out = F.linear(q, g("abstractor.visual_fc.weight"), g("abstractor.visual_fc.bias"))
    return torch.cat([out, g("abstractor.vit_eos").expand(b, 1, -1)], dim=1)


def test_minigpt4_matches_the_official_forward(official_dir, images):
    eva = torch.load(official_dir("minigpt4") / "eva_vit_g.pth", weights_only=True)
    proj = torch.load(official_dir("minigpt4") / "pretrained_minigpt4.pth", weights_only=True)["model"]
    vlm = load_model("minigpt4", str(official_dir("minigpt4")), dtype="float32", device="cpu")
    pixel = vlm.processor.image_processor(images[:2], return_tensors="pt")["pixel_values"]
    assert pixel.shape == (2, 3, 56, 56)
    with torch.no_grad():
        ours = vlm.model.get_image_features(pixel)
    ref = _minigpt4_reference(eva, proj, pixel, heads=176 // 88)
    assert ours.shape == (2, 4, 64)
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_owl_matches_the_official_forward(official_dir, images, attn):
    sd = torch.load(official_dir("owl") / "pytorch_model.bin", weights_only=True)
    vlm = load_model("owl", str(official_dir("owl")), dtype="float32", device="cpu", attn_implementation=attn)
    pixel = vlm.processor.image_processor(images[:2], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ours = vlm.model.get_image_features(pixel)
    ref = _owl_reference(sd, pixel, vheads=4, aheads=4)
    assert ours.shape == (2, 9, 64)
    assert (ours - ref).abs().max().item() < 1e-5


def test_share4v_maps_the_original_tensors(official_dir):
    sd = torch.load(official_dir("share4v") / "pytorch_model.bin", weights_only=True)
    vlm = load_model("share4v", str(official_dir("share4v")), dtype="float32", device="cpu")
    ours = vlm.model.state_dict()
    assert torch.equal(ours["model.multi_modal_projector.linear_1.weight"], sd["model.mm_projector.0.weight"])
    assert torch.equal(ours["model.multi_modal_projector.linear_2.bias"], sd["model.mm_projector.2.bias"])
    assert torch.equal(ours["model.language_model.layers.1.mlp.up_proj.weight"], sd["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(ours["lm_head.weight"][:600], sd["lm_head.weight"])
    # the rows added for <image>/<pad> (and the padding to 640) are the mean of the original rows
    assert torch.allclose(ours["lm_head.weight"][600:], sd["lm_head.weight"].mean(0).expand(40, -1))
    assert vlm.model.config.vision_feature_layer == -2 and vlm.processor.image_processor.do_pad  # LLaVA's "pad"


def test_unknown_layout_of_a_family_without_one(tmp_path):
    from common.tiny import main

    assert main(["--family", "blip2", "--layout", "official", "--out", str(tmp_path / "x")]) == 2


def test_loading_a_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(LetheError, match="not found"):
        load_model("minigpt4", str(tmp_path / "nowhere"), dtype="float32", device="cpu")


def test_efuf_model_name_minigpt_is_an_alias(tiny_dir):
    from common.args import ModelArguments, parse_args
    from common.models import load_model

    (m,) = parse_args([ModelArguments], ["--model", "minigpt", "--minigpt_path", tiny_dir("minigpt4")])
    assert m.model_path == tiny_dir("minigpt4")
    assert type(load_model("minigpt", m.model_path, dtype="float32")).__name__ == "MiniGPT4VLM"
