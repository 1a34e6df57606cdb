"""``python -m common.convert``: official tiny layouts → our dirs (same logits as loading the official layout
directly), EFUF ``.pth`` → clean trainable safetensors, and one clear error for every bad input."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from common.convert import main
from common.errors import LetheError
from common.models import Sample, load_model

PROMPTS = ["Please describe the image.", "What color is the ball on the left side?"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """``official(family)`` → a fresh copy of the official-layout tiny checkpoint (tests may damage their copy)."""
    from common.tiny import main as tiny_main

    root = tmp_path_factory.mktemp("official")
    built = {}

    def get(family: str, tmp=None):
        if family not in built:
            assert tiny_main(["--family", family, "--out", str(root / family), "--layout", "official"]) == 0
            built[family] = root / family
        if tmp is None:
            return built[family]
        shutil.copytree(built[family], tmp / family)
        return tmp / family

    return get


def _logits(vlm, images):
    batch = vlm.build_batch([Sample(images[0], PROMPTS[0], target="a red ball."),
                             Sample(images[3], PROMPTS[1], target="red", add_eos=False)])
    with torch.no_grad():
        return vlm.model_forward(batch).logits


@pytest.mark.parametrize("family", ["minigpt4", "owl", "share4v"])
def test_converted_dir_gives_the_logits_of_the_official_layout(official, images, tmp_path, capsys, family):
    src = official(family)
    assert main([family, "--src", str(src), "--out", str(tmp_path / "conv")]) == 0
    out = capsys.readouterr().out
    assert "converted" in out and f"wrote {tmp_path / 'conv'}" in out
    direct = load_model(family, str(src), dtype="float32", device="cpu")
    converted = load_model(family, str(tmp_path / "conv"), dtype="float32", device="cpu")
    assert direct.chat_prompt("x") == converted.chat_prompt("x")
    # the official Llama tokenizer's legacy flag (unset there: True) is written with the converted dir
    assert json.loads((tmp_path / "conv" / "tokenizer_config.json").read_text())["legacy"] is True
    a, b = _logits(direct, images), _logits(converted, images)
    assert a.shape == b.shape and (a - b).abs().max().item() < 1e-5


def test_conversion_reports_what_it_drops(official, tmp_path, capsys):
    assert main(["owl", "--src", str(official("owl")), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "converted 100 tensors" in out and "dropped 2" in out and "rotary_emb.inv_freq" in out
    src = official("minigpt4", tmp_path)
    _resave(src / "eva_vit_g.pth", lambda sd: sd.update({"norm.weight": torch.ones(176), "norm.bias": torch.zeros(176)}))
    assert main(["minigpt4", "--src", str(src), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "no ln_vision: identity LayerNorm" in out and "dropped 2 (eva_vit_g.pth: not in create_eva_vit_g" in out


def test_llava_original_layout_converts_to_hf_llava(official, images, tmp_path, capsys):
    src = official("llava")
    assert main(["llava", "--src", str(src), "--out", str(tmp_path / "hf")]) == 0
    assert "vocabulary 600 → 640" in capsys.readouterr().out
    vlm = load_model("llava", str(tmp_path / "hf"), dtype="float32", device="cpu")
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    assert vlm.chat_prompt("hi").startswith("A chat between a curious user") and "USER: <image>\nhi ASSISTANT:" in \
        vlm.chat_prompt("hi")
    orig = torch.load(src / "pytorch_model.bin", weights_only=True)
    sd = vlm.model.state_dict()
    assert torch.equal(sd["model.multi_modal_projector.linear_1.weight"], orig["model.mm_projector.0.weight"])
    assert torch.equal(sd["model.language_model.embed_tokens.weight"][:600], orig["model.embed_tokens.weight"])
    assert len(vlm.generate(images[:2], PROMPTS, max_new_tokens=4)) == 2


def test_llava_with_a_full_clip_model_as_vision_tower(official, tmp_path, capsys):
    """openai/clip-vit-large-patch14-336 (LLaVA-1.5's tower) is a full CLIPModel dir: the text side is dropped."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from common.tiny import _clip_vision

    cfg = CLIPConfig(text_config=dict(vocab_size=99, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                      num_attention_heads=4, max_position_embeddings=16, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1),
                     vision_config=_clip_vision(64, 2, 32, 8), projection_dim=64)
    clip = CLIPModel(cfg)
    clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip")
    assert main(["llava", "--src", str(official("llava")), "--out", str(tmp_path / "hf"),
                 "--vision_tower", str(tmp_path / "clip")]) == 0
    assert "CLIP text side" in capsys.readouterr().out
    vlm = load_model("llava", str(tmp_path / "hf"), dtype="float32", device="cpu")
    assert torch.equal(vlm.model.state_dict()["model.vision_tower.encoder.layers.1.mlp.fc2.weight"],
                       clip.state_dict()["vision_model.encoder.layers.1.mlp.fc2.weight"])


def test_minigpt4_yaml_manifest_and_explicit_parts(official, tmp_path):
    src = official("minigpt4")
    (tmp_path / "minigpt4.yaml").write_text(
        f"model:\n  ckpt: {src / 'pretrained_minigpt4.pth'}\n  llama_model: {src / 'Llama-2-7b-chat-hf'}\n"
        f"  eva_vit: {src / 'eva_vit_g.pth'}\n")
    a = load_model("minigpt4", str(tmp_path / "minigpt4.yaml"), dtype="float32", device="cpu").model.state_dict()
    b = load_model("minigpt4", str(src), dtype="float32", device="cpu").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["minigpt4", "--src", str(src), "--out", str(tmp_path / "o"),
                 "--eva_vit", str(src / "eva_vit_g.pth")]) == 0


# ---------------------------------------------------------------- bad official inputs: one error naming the culprit
def _resave(path, edit, key="model"):
    obj = torch.load(path, weights_only=True)
    edit(obj[key] if key in obj else obj)
    torch.save(obj, path)


@pytest.mark.parametrize("family,file,edit,match", [
    ("minigpt4", "eva_vit_g.pth", lambda sd: sd.pop("blocks.1.attn.q_bias"),
     r"eva_vit_g\.pth: tensor 'blocks\.1\.attn\.q_bias' is missing"),
    ("minigpt4", "pretrained_minigpt4.pth", lambda sd: sd.update({"llama_proj.weight": torch.zeros(64, 10)}),
     r"pretrained_minigpt4\.pth: tensor 'llama_proj\.weight' has shape \(64, 10\), expected \(64, 704\)"),
    ("minigpt4", "pretrained_minigpt4.pth", lambda sd: sd.update({"llama_proj.extra": torch.zeros(3)}),
     r"pretrained_minigpt4\.pth: 1 tensors are not mapped.*llama_proj\.extra.*refusing a partial conversion"),
    ("owl", "pytorch_model.bin", lambda sd: sd.pop("abstractor.encoder.layers.1.crossattention.normk.bias"),
     r"tensor 'abstractor\.encoder\.layers\.1\.crossattention\.normk\.bias' is missing"),
    ("owl", "pytorch_model.bin", lambda sd: sd.update({"query_tokens": torch.zeros(1, 7, 64)}),
     r"tensor 'query_tokens' has shape \(1, 7, 64\), expected \(1, 8, 64\)"),
    ("share4v", "pytorch_model.bin", lambda sd: sd.update({"model.mm_projector.2.weight": torch.zeros(64, 3)}),
     r"tensor 'model\.mm_projector\.2\.weight' has shape \(64, 3\), expected \(64, 64\)"),
    ("share4v", "pytorch_model.bin", lambda sd: sd.pop("lm_head.weight"), r"tensor 'lm_head\.weight' is missing"),
])
def test_missing_or_misshaped_tensor_fails_with_its_name(official, tmp_path, family, file, edit, match):
    src = official(family, tmp_path)
    _resave(src / file, edit)
    with pytest.raises(LetheError, match=match):
        load_model(family, str(src), dtype="float32", device="cpu")
    with pytest.raises(LetheError, match=match):
        from common.convert import convert_llava, convert_minigpt4, convert_owl

        {"minigpt4": convert_minigpt4, "owl": convert_owl, "share4v": convert_llava}[family](str(src),
                                                                                         str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family,remove,match", [
    ("minigpt4", "eva_vit_g.pth", r"needs the EVA ViT-g weights \(eva_vit_g\.pth\)"),
    ("minigpt4", "Llama-2-7b-chat-hf", r"needs the Llama-2 model dir"),
    ("minigpt4", "pretrained_minigpt4.pth", r"needs the MiniGPT-4 checkpoint"),
    ("owl", "preprocessor_config.json", r"preprocessor_config\.json: file not found"),
    ("owl", "pytorch_model.bin", r"no model weights"),
    ("share4v", "ShareGPT4V-7B_Pretrained_vit-large336-l12",
     r"vision tower 'Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12' not found"),
])
def test_missing_file_of_the_official_layout_is_one_clear_cli_error(official, tmp_path, capsys, family, remove,
                                                                      match):
    import re

    src = official(family, tmp_path)
    p = src / remove
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert main([family, "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(match, err[0]), err
    assert not (tmp_path / "out").exists()


def test_share4v_vision_tower_override(official, tmp_path):
    src = official("share4v", tmp_path)
    tower = src / "ShareGPT4V-7B_Pretrained_vit-large336-l12"
    shutil.move(str(tower), str(tmp_path / "my_tower"))
    vlm = load_model("share4v", str(src), dtype="float32", device="cpu", vision_tower=str(tmp_path / "my_tower"))
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    assert main(["share4v", "--src", str(src), "--out", str(tmp_path / "o"), "--vision_tower",
                 str(tmp_path / "my_tower")]) == 0


def test_converter_refuses_a_non_empty_output_dir(official, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    assert main(["owl", "--src", str(official("owl")), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------- EFUF .pth → clean trainable safetensors
def _efuf_llava_pth(path, shapes, scale=0.25):
    """The released llava-efuf-7b.pth layout: original LLaVA projector keys + rotary buffers, bf16, under 'model'."""
    state = {"model.mm_projector.0.weight": torch.full(shapes["linear_1.weight"], scale),
             "model.mm_projector.0.bias": torch.full(shapes["linear_1.bias"], scale),
             "model.mm_projector.2.weight": torch.full(shapes["linear_2.weight"], -scale),
             "model.mm_projector.2.bias": torch.full(shapes["linear_2.bias"], -scale),
             "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8),
             "model.layers.1.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    torch.save({"model": {k: v.to(torch.bfloat16) for k, v in state.items()}}, path)


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("family", ["llava", "share4v"])
def test_efuf_pth_converts_to_projector_only_safetensors(tiny_dir, tmp_path, capsys, family):
    base = tiny_dir(family)
    vlm = load_model(family, base, dtype="float32", device="cpu")
    proj = vlm.model.model.multi_modal_projector
    shapes = {f"{n}": tuple(p.shape) for n, p in proj.named_parameters()}
    _efuf_llava_pth(tmp_path / "llava-efuf-7b.pth", shapes)
    out = tmp_path / "efuf.safetensors"
    assert main(["efuf", "--src", str(tmp_path / "llava-efuf-7b.pth"), "--model", family, "--base", base,
                 "--out", str(out)]) == 0
    assert "converted 4 tensors" in capsys.readouterr().out
    clean = load_file(str(out))
    assert sorted(clean) == sorted(f"model.multi_modal_projector.{n}" for n in shapes)
    before = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    again = load_model(family, base, dtype="float32", device="cpu", ckpt_load_path=str(out))
    after = again.model.state_dict()
    assert _changed(before, after) == set(clean)
    assert torch.all(after["model.multi_modal_projector.linear_1.weight"] == 0.25)
    assert torch.all(after["model.multi_modal_projector.linear_2.bias"] == -0.25)


def test_efuf_pth_of_minigpt4_and_owl(tiny_dir, tmp_path):
    cases = {
        "minigpt4": ({"llama_proj.weight": (64, 704), "llama_proj.bias": (64,)},
                     {"llama_model.model.layers.0.self_attn.rotary_emb.inv_freq": (8,)}),
        "owl": ({"query_tokens": (1, 8, 64), "abstractor.visual_fc.weight": (64, 64),
                 "abstractor.encoder.layers.0.crossattention.attention.query.weight": (64, 64)},
                {"language_model.model.layers.1.self_attn.rotary_emb.inv_freq": (8,)}),
    }
    for family, (trained, buffers) in cases.items():
        base = tiny_dir(family)
        state = {k: torch.full(s, 0.5) for k, s in trained.items()}
        state.update({k: torch.ones(s) for k, s in buffers.items()})
        torch.save(state, tmp_path / f"{family}.pth")  # EFUF's save_ckpt: a bare state dict of step_XXXXXX.pth
        out = tmp_path / f"{family}.safetensors"
        assert main(["efuf", "--src", str(tmp_path / f"{family}.pth"), "--model", family, "--base", base,
                     "--out", str(out)]) == 0
        assert sorted(load_file(str(out))) == sorted(trained)
        before = load_model(family, base, dtype="float32", device="cpu").model.state_dict()
        after = load_model(family, base, dtype="float32", device="cpu", ckpt_load_path=str(out)).model.state_dict()
        assert _changed(before, after) == set(trained)
        assert all(torch.all(after[k] == 0.5) for k in trained)
        # the loader also reads the original .pth directly (same remapping)
        direct = load_model(family, base, dtype="float32", device="cpu", ckpt_load_path=str(tmp_path / f"{family}.pth"))
        assert all(torch.equal(direct.model.state_dict()[k], after[k]) for k in trained)


@pytest.mark.parametrize("state,match", [
    ({"model.mm_projector.0.weight": torch.zeros(3, 3)},
     r"tensor 'model\.mm_projector\.0\.weight' has shape \(3, 3\), the model expects"),
    ({"model.mm_projector.0.bias": torch.zeros(64), "model.not_a_module.weight": torch.zeros(3)},
     r"1 tensors match nothing in the llava model \(e\.g\. model\.not_a_module\.weight\); refusing a partial"),
    ({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}, r"no tensor of this checkpoint matches"),
])
def test_efuf_converter_refuses_bad_checkpoints(tiny_dir, tmp_path, capsys, state, match):
    import re

    torch.save({"model": state}, tmp_path / "bad.pth")
    assert main(["efuf", "--src", str(tmp_path / "bad.pth"), "--model", "llava", "--base", tiny_dir("llava"),
                 "--out", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]) and "bad.pth" in err[0], err
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises(LetheError, match="checkpoint not found"):
        from common.convert import convert_efuf

        convert_efuf(str(tmp_path / "missing.pth"), "llava", tiny_dir("llava"), str(tmp_path / "o.safetensors"))


@pytest.mark.parametrize("family,trained", [
    ("minigpt4", {"llama_proj.weight": (64, 704), "llama_proj.bias": (64,)}),
    ("owl", {"query_tokens": (1, 8, 64), "abstractor.vit_eos": (1, 1, 64)}),
    ("share4v", {"model.mm_projector.0.weight": (64, 64), "model.mm_projector.2.bias": (64,)}),
])
def test_efuf_converter_checks_against_an_original_layout_base(official, tmp_path, family, trained):
    base = str(official(family))
    torch.save({"model": {k: torch.full(s, 0.5) for k, s in trained.items()}}, tmp_path / "e.pth")
    assert main(["efuf", "--src", str(tmp_path / "e.pth"), "--model", family, "--base", base,
                 "--out", str(tmp_path / "e.safetensors")]) == 0
    clean = load_file(str(tmp_path / "e.safetensors"))
    assert len(clean) == len(trained) and all(torch.all(v == 0.5) for v in clean.values())
    before = load_model(family, base, dtype="float32", device="cpu").model.state_dict()
    after = load_model(family, base, dtype="float32", device="cpu",
                       ckpt_load_path=str(tmp_path / "e.safetensors")).model.state_dict()
    assert _changed(before, after) == set(clean)
