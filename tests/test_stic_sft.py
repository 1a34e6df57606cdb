"""STIC stage 2 (stic/train_sft.py): TRL's SFTTrainer on description-infused data, continuing the stage-1 adapter."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def stage2_data(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("sft")
    (root / "img").mkdir()
    rows = []
    for i in range(4):
        images[i].save(root / "img" / f"im{i}.png")
        rows.append({"id": str(i), "image": f"im{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nImage description:\na red ball near a box.\n\nIs there a ball?"},
            {"from": "gpt", "value": "Yes"},
            {"from": "human", "value": "What color is the ball?"}, {"from": "gpt", "value": "Red"}]})
    rows.append({"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    (root / "des.json").write_text(json.dumps(rows))
    return root


def test_turns_carry_the_description_and_text_only_conversations_are_counted(stage2_data):
    from stic.train_sft import load_instruction_samples, split_description

    assert split_description("<image>\nImage description:\nA cat.\n\nWhat is it?") == \
        ("Image description:\nA cat.\n\n", "What is it?")
    assert split_description("<image>\nWhat is it?") == ("", "What is it?")
    rows, text_only = load_instruction_samples(stage2_data / "des.json", stage2_data / "img")
    assert text_only == 1 and len(rows) == 8
    assert rows[0]["prompt"] == "Image description:\na red ball near a box.\n\nIs there a ball?"
    assert rows[1]["prompt"] == "Image description:\na red ball near a box.\n\nWhat color is the ball?"
    assert [r["answer"] for r in rows[:2]] == ["Yes", "Red"]


def test_bad_instruction_data_is_one_line(stage2_data, tmp_path):
    from common.errors import LetheError
    from stic.train_sft import load_instruction_samples

    rows = json.loads((stage2_data / "des.json").read_text())
    rows[2]["conversations"][1]["from"] = "human"
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(LetheError, match=r"bad.json entry 2: 'conversations' must alternate"):
        load_instruction_samples(tmp_path / "bad.json", stage2_data / "img")
    rows = json.loads((stage2_data / "des.json").read_text())
    rows[1]["image"] = "missing.png"
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(LetheError, match=r"bad.json entry 1: image .*missing.png not found"):
        load_instruction_samples(tmp_path / "bad.json", stage2_data / "img")


def test_stage2_starts_from_the_stage1_adapter_bit_for_bit_and_trains_it(tiny_dir, stage2_data, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from common.args import ModelArguments, parse_args
    from common.models import load_model
    from stic.train_sft import SticSftConfig, build_trainer, main

    tiny = tiny_dir("llava")
    # a stage-1 adapter with non-zero weights
    vlm = load_model("llava", tiny, dtype="float32", device="cpu")
    from peft import get_peft_model

    peft = get_peft_model(vlm.model, vlm.llm_lora_config(4, 8))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    peft.save_pretrained(tmp_path / "stage1")
    stage1 = load_file(str(tmp_path / "stage1" / "adapter_model.safetensors"))

    argv = ["--model", "llava", "--llava_path", tiny, "--load_peft", str(tmp_path / "stage1"),
            "--data_path", str(stage2_data / "des.json"), "--image_folder", str(stage2_data / "img"),
            "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", "--learning_rate", "1e-2",
            "--global_batch_size", "4", "--per_device_train_batch_size", "4"]
    margs, cfg = parse_args([ModelArguments, SticSftConfig], argv + ["--output_dir", str(tmp_path / "o")])
    trainer, _ = build_trainer(margs, cfg)
    assert isinstance(trainer.model, PeftModel)
    now = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert len(now) == len(stage1)
    for k, v in stage1.items():
        name = k.replace(".weight", ".default.weight")
        assert torch.equal(now[name].detach(), v), k  # bit-identical at step 0
    assert all(".language_model." in n for n in now)

    assert main(argv + ["--output_dir", str(tmp_path / "run")]) == 0
    stage2 = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert stage2.keys() == stage1.keys()
    assert any(not torch.equal(stage1[k], stage2[k]) for k in stage1)
    tuned = load_model("llava", tiny, lora_path=str(tmp_path / "run"), dtype="float32", device="cpu")
    assert isinstance(tuned.model, PeftModel)


def test_every_eval_script_takes_the_adapter(tiny_dir, tmp_path):
    """``--lora_path`` / ``--{model}_lora_path`` in the eval CLIs load the STIC adapter on the base model."""
    import argparse

    from peft import PeftModel, get_peft_model

    from common.models import load_model
    from evaluate.cli import add_generation_args, load_vlm, parse_args

    tiny = tiny_dir("llava")
    vlm = load_model("llava", tiny, dtype="float32", device="cpu")
    get_peft_model(vlm.model, vlm.llm_lora_config(4, 8)).save_pretrained(tmp_path / "adapter")
    for flags in (["--lora_path", str(tmp_path / "adapter")], ["--llava_lora_path", str(tmp_path / "adapter")]):
        p = argparse.ArgumentParser()
        add_generation_args(p, max_new_tokens=8, dar=True)
        args = parse_args(p, ["--model", "llava", "--llava_path", tiny, *flags])
        assert isinstance(load_vlm(args).model, PeftModel)
