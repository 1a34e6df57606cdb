"""STIC stage 1 (stic/train_dpo.py): TRL's DPOTrainer with the paper's loss, LoRA on the LLM, adapter-off reference."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import launch
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CHOSEN = ["a red ball and a blue box.", "two green tents.", "a yellow kite in the sky.", "one pink flower."]
REJECTED = ["a green tent near a kite and a cup.", "a ball.", "three purple bottles and a box on a table.", "a cup."]


@pytest.fixture(scope="module")
def pref(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("pref")
    (root / "img").mkdir()
    rows = []
    for i in range(8):
        images[i % len(images)].save(root / "img" / f"im{i}.png")
        rows.append({"image": f"im{i}.png", "strategy": "hallucination_prompt",
                     "chosen": [{"role": "user", "content": "Describe the image."},
                                {"role": "assistant", "content": CHOSEN[i % 4]}],
                     "rejected": [{"role": "user", "content": "Describe the image."},
                                  {"role": "assistant", "content": REJECTED[i % 4]}]})
    (root / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _args(tiny, pref, out, *extra):
    return ["--model", "llava", "--llava_path", tiny, "--data_path", str(pref / "pref.jsonl"),
            "--image_folder", str(pref / "img"), "--output_dir", str(out), "--report_to", "none", "--use_cpu",
            "--lora_r", "4", "--lora_alpha", "8", "--disable_tqdm", "true", "--seed", "0", *extra]


def _trainer(tiny, pref, out, *extra):
    from common.args import ModelArguments, parse_args
    from stic.train_dpo import SticDpoConfig, build_trainer

    margs, cfg = parse_args([ModelArguments, SticDpoConfig], _args(tiny, pref, out, *extra))
    return build_trainer(margs, cfg)


def _perturb_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_lora_on_the_language_model_only_and_paper_defaults(tiny_dir, pref, tmp_path):
    trainer, vlm = _trainer(tiny_dir("llava"), pref, tmp_path / "o")
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ".language_model." in n for n in trained)
    assert not any("vision_tower" in n or "multi_modal_projector" in n or "lm_head" in n for n in trained)
    a = trainer.args
    assert (a.beta, a.learning_rate, a.lr_scheduler_type, a.warmup_ratio, a.num_train_epochs, a.weight_decay) == \
        (0.1, 1e-7, "cosine", 0.03, 1.0, 0.0)
    assert a.loss_type == ["sigmoid", "sft"]
    assert a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size == 8
    # sft weight auto = mean preferred-answer tokens (+ EOS) / 1024
    tok = vlm.tokenizer
    lens = [len(tok(CHOSEN[i % 4], add_special_tokens=False)["input_ids"]) + 1 for i in range(8)]
    assert a.loss_weights == pytest.approx([1.0, sum(lens) / len(lens) / 1024])


def test_loss_equals_hand_computed_dpo_plus_nll_and_reference_is_the_base_model(tiny_dir, pref, tmp_path):
    from common.models import Sample, load_model

    trainer, vlm = _trainer(tiny_dir("llava"), pref, tmp_path / "o", "--sft_weight", "0.5", "--beta", "0.3")
    _perturb_lora(trainer.model)
    trainer.model.eval()
    rows = [trainer.train_dataset[i] for i in range(3)]
    inputs = trainer.data_collator([dict(r) for r in rows])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(inputs)).item()

    from common.io import load_image

    ims = [load_image(r["image"]) for r in rows]
    chosen = vlm.build_batch([Sample(im, r["prompt"], target=r["chosen"]) for im, r in zip(ims, rows)])
    rejected = vlm.build_batch([Sample(im, r["prompt"], target=r["rejected"]) for im, r in zip(ims, rows)])
    with torch.no_grad():
        pc, pr = vlm.token_logprobs(chosen), vlm.token_logprobs(rejected)
        with vlm.adapter_disabled():
            rc, rr = vlm.token_logprobs(chosen), vlm.token_logprobs(rejected)
        base = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
        bc = base.token_logprobs(base.build_batch([Sample(im, r["prompt"], target=r["chosen"])
                                                   for im, r in zip(ims, rows)]))
    # the reference (adapter disabled) is exactly the untouched base model; the policy is not
    assert torch.allclose(rc, bc, atol=1e-5)
    assert not torch.allclose(pc, rc, atol=1e-4)
    margin = (pc.sum(1) - rc.sum(1)) - (pr.sum(1) - rr.sum(1))
    dpo = -F.logsigmoid(0.3 * margin).mean()
    mask = chosen.labels[:, 1:] != -100
    nll = -pc[:, 1:][mask].mean()  # TRL's "sft": token mean over the batch's preferred answers
    assert loss == pytest.approx((dpo + 0.5 * nll).item(), rel=1e-4, abs=1e-5)


def test_one_step_raises_the_chosen_minus_rejected_margin(tiny_dir, pref, tmp_path):
    from common.io import load_image
    from common.models import Sample

    trainer, vlm = _trainer(tiny_dir("llava"), pref, tmp_path / "o", "--learning_rate", "5e-3",
                            "--max_steps", "1", "--global_batch_size", "8", "--per_device_train_batch_size", "8",
                            "--warmup_ratio", "0", "--save_strategy", "no")
    rows = [trainer.train_dataset[i] for i in range(8)]
    ims = [load_image(r["image"]) for r in rows]

    def margin():
        with torch.no_grad():
            c = vlm.token_logprobs(vlm.build_batch([Sample(im, r["prompt"], target=r["chosen"])
                                                    for im, r in zip(ims, rows)])).sum(1)
            r_ = vlm.token_logprobs(vlm.build_batch([Sample(im, r["prompt"], target=r["rejected"])
                                                     for im, r in zip(ims, rows)])).sum(1)
        return (c - r_).mean().item()

    before = margin()
    trainer.train()
    vlm.model.eval()
    assert margin() > before + 1e-3


def test_bad_preference_data_is_one_error_line_before_the_model_loads(tiny_dir, pref, tmp_path, capsys):
    from stic.train_dpo import main

    bad = tmp_path / "bad.jsonl"
    lines = (pref / "pref.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    del row["chosen"]
    bad.write_text("\n".join(lines[:2] + [json.dumps(row)] + lines[3:]) + "\n")
    args = _args(tiny_dir("llava"), pref, tmp_path / "o")
    args[args.index("--data_path") + 1] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad} line 3: no 'chosen'"]

    (pref / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    row = json.loads(lines[0])
    row["image"] = "broken.png"
    bad.write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad} line 1: image ") and "broken.png does not decode" in err[0]

    args = _args(tiny_dir("llava"), pref, tmp_path / "o")
    args[args.index("--model") + 1] = "llava_nxt"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'llava_nxt'" in err[0]


def test_cli_writes_an_adapter_the_eval_scripts_load(tiny_dir, pref, tmp_path):
    from common.models import Sample, load_model
    from stic.train_dpo import main

    out = tmp_path / "run"
    assert main(_args(tiny_dir("llava"), pref, out, "--learning_rate", "1e-2", "--global_batch_size", "4",
                      "--per_device_train_batch_size", "2")) == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "lethe_config.json").is_file()
    prov = json.loads((out / "lethe_config.json").read_text())
    assert prov["method"] == "stic_dpo" and prov["training"]["loss_weights"][0] == 1.0
    base = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    tuned = load_model("llava", tiny_dir("llava"), lora_path=str(out), dtype="float32", device="cpu")
    from PIL import Image

    s = [Sample(Image.new("RGB", (32, 32), (200, 10, 10)), "Describe the image.", target=CHOSEN[0])]
    with torch.no_grad():
        assert not torch.allclose(base.token_logprobs(base.build_batch(s)), tuned.token_logprobs(tuned.build_batch(s)))


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_dir, pref, tmp_path):
    """gloo on CPU: 2 processes × batch 2 and 1 process × batch 2 × accumulation 2 see the same pairs per step;
    the logged losses and the final adapter agree (float32; tolerance 1e-5 relative / 1e-6 absolute)."""
    from safetensors.torch import load_file

    common = _args(tiny_dir("llava"), pref, tmp_path / "x", "--learning_rate", "1e-2", "--global_batch_size", "4",
                   "--per_device_train_batch_size", "2", "--save_strategy", "no", "--logging_steps", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def run(out, procs):
        args = list(common)
        args[args.index("--output_dir") + 1] = str(out)
        r = launch.run(procs, REPO / "stic" / "train_dpo.py", args, env=env, cwd=REPO)
        assert f"world size {procs}" in r.stdout
        losses = [float(line.split()[3]) for line in r.stdout.splitlines() if line.startswith("step ")]
        return losses, load_file(str(out / "adapter_model.safetensors"))

    l1, w1 = run(tmp_path / "one", 1)
    l2, w2 = run(tmp_path / "two", 2)
    assert len(l1) == len(l2) == 2
    assert l1 == pytest.approx(l2, rel=1e-5, abs=1e-6)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-5, atol=1e-6), k


def test_a_stage1_run_resumes_from_its_last_complete_adapter_checkpoint(tiny_dir, pref, tmp_path, capsys):
    """TRL checkpoints hold a PEFT adapter: one cut short by a kill is moved aside and the run resumes before it."""
    from common.training import checkpoint_problem
    from stic.train_dpo import main

    out = tmp_path / "run"
    args = _args(tiny_dir("llava"), pref, out, "--global_batch_size", "4", "--per_device_train_batch_size", "2",
                 "--save_steps", "1", "--save_total_limit", "3", "--learning_rate", "1e-2")
    assert main(args) == 0
    assert checkpoint_problem(out / "checkpoint-2") is None
    f = out / "checkpoint-2" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-9])
    assert checkpoint_problem(out / "checkpoint-2") == "adapter_model.safetensors is truncated or corrupt"
    capsys.readouterr()
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "checkpoint-2 is an incomplete checkpoint" in cap.err
    assert f"resuming from {out / 'checkpoint-1'}" in cap.out
    assert (out / "incomplete-checkpoint-2").is_dir() and checkpoint_problem(out / "checkpoint-2") is None
