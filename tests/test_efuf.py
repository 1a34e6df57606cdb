"""EFUF: the objective by hand, its effect on exactly the hallucinated span, frozen weights, the original data
format, resume after a crash, and data-parallel equivalence."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import launch
import pytest
import torch
from safetensors.torch import load_file

from common.models import IGNORE_INDEX, load_model
from finetune.data import Item, load_pos_neg
from finetune.loss import COMPONENTS, EfufWeights, WeightSchedule, efuf_loss

ROOT = Path(__file__).resolve().parents[1]
PAPER = EfufWeights(pos=WeightSchedule(1.0, 0.5, 0.0), neg=WeightSchedule(0.3, 0.0, 0.4), gold_w=0.3, gold_score=40.0,
                    sent_w=0.0, max_score=23.0 + 32.0)


def test_weight_schedules_as_the_paper():
    assert [PAPER.pos(t) for t in (0.0, 0.5, 1.0)] == [1.0, 0.75, 0.5]
    assert [PAPER.neg(t) for t in (0.0, 0.2, 0.4)] == [0.3, 0.3, 0.3]
    assert PAPER.neg(0.7) == pytest.approx(0.15) and PAPER.neg(1.0) == 0.0
    assert PAPER.at(0.0) == {"pos": 1.0, "gold": 12.0, "sent": 0.0, "neg": 0.3}


def _original_weight_scheduler(start, end, total_step, start_step_pos, kind, step):
    """EFUF's finetune/loss.py WeightScheduler.at_step, re-derived: the reference for our schedules."""
    s0, s1 = total_step * start_step_pos, total_step * 1.0
    if step < s0:
        return start
    if step > s1:
        return end
    frac = {"linear": (step - s0) / (s1 - s0), "exp": 1 - math.exp(-(step - s0) / (s1 - s0)), "const": 0.0}[kind]
    return start + (end - start) * frac


@pytest.mark.parametrize("kind,start,end,pos", [("linear", 1.0, 0.5, 0.0), ("linear", 0.3, 0.0, 0.4),
                                                ("exp", 0.3, 0.0, 0.4), ("exp", 1.0, 0.25, 0.0),
                                                ("const", 0.7, 0.7, 0.2)])
def test_every_schedule_type_equals_the_original_at_every_step(kind, start, end, pos):
    n = 40
    sched = WeightSchedule(start, end, pos, kind)
    for step in range(n):
        assert sched(step / n) == pytest.approx(_original_weight_scheduler(start, end, n, pos, kind, step), abs=1e-12)
    # exp never reaches the end weight inside the run: 1 - 1/e of the way at the last step
    if kind == "exp":
        assert sched((n - 1) / n) != pytest.approx(end)


def test_bad_schedules_are_refused():
    from common.errors import LetheError

    with pytest.raises(LetheError, match="const schedule needs equal"):
        WeightSchedule(0.3, 0.0, 0.0, "const")
    with pytest.raises(LetheError, match="unknown schedule type 'cosine'"):
        WeightSchedule(0.3, 0.0, 0.0, "cosine")


def test_parsed_defaults_are_the_papers_table():
    """finetune/train.py with no config: EFUF's common/args.py defaults (notes/efuf.md §1, §2)."""
    from common.args import ModelArguments, parse_args
    from finetune.train import EfufConfig

    margs, cfg = parse_args([ModelArguments, EfufConfig], ["--model", "llava", "--llava_path", "some/model"])
    paper = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 1e-5,
             "weight_decay": 0.05, "num_train_epochs": 1.0, "lr_scheduler_type": "constant", "max_grad_norm": 0.0,
             "hal_clip_thres": 23.0, "norm_clip_thres": 32.0, "sentence_clip_thres": 27.5, "gold_clip_score": 40.0,
             "pos_w_start": 1.0, "pos_w_end": 0.5, "pos_w_start_step_pos": 0.0, "pos_w_sched_type": "linear",
             "neg_w_start": 0.3, "neg_w_end": 0.0, "neg_w_start_step_pos": 0.4, "neg_w_sched_type": "linear",
             "gold_w": 0.3, "sent_w": 0.0, "llava_data_size_k": 10, "scope": "projector",
             "train_prompt": "Please describe the image."}
    assert {k: getattr(cfg, k) for k in paper} == paper
    w = cfg.weights()
    assert w.at(0.0) == {"pos": 1.0, "gold": 12.0, "sent": 0.0, "neg": 0.3} and w.max_score == 55.0
    _, cfg = parse_args([ModelArguments, EfufConfig], ["--model", "llava", "--llava_path", "m",
                                                       "--neg_w_sched_type", "exp", "--pos_w_sched_type", "const",
                                                       "--pos_w_end", "1"])
    assert (cfg.weights().neg.kind, cfg.weights().pos.kind) == ("exp", "const")


def test_signed_weighted_loss_by_hand():
    nll = torch.tensor([1.0, 2.0, 0.5, 3.0, 4.0])
    comp = torch.tensor([COMPONENTS.index(c) for c in ("pos", "gold", "neg", "pos", "sent")])
    score = torch.tensor([33.0, 0.0, 20.0, 40.0, 30.0])
    loss, logs = efuf_loss(nll, comp, score, PAPER, t=0.0)
    # pos: 1.0 * mean(1*33, 3*40) = 76.5 ; gold: 0.3*40 * 2.0 = 24 ; neg: -0.3 * 0.5*(55-20) = -5.25 ; sent_w = 0
    assert loss.item() == pytest.approx(76.5 + 24.0 - 5.25)
    assert {k: v.item() for k, v in logs.items()} == {"nll_pos": 2.0, "nll_gold": 2.0, "nll_neg": 0.5}
    same, _ = efuf_loss(nll, comp.tolist(), score, PAPER, t=0.0)  # host-side component ids: the same loss
    assert same.item() == loss.item()
    late, _ = efuf_loss(nll, comp, score, PAPER, t=1.0)  # pos 0.5, neg 0
    assert late.item() == pytest.approx(0.5 * 76.5 + 24.0)


def _tiny_vlm(tiny_dir):
    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")
    vlm.set_trainable("projector")
    return vlm


def _toy_items(images, tmp_path):
    paths = []
    for i, im in enumerate(images[:2]):
        p = tmp_path / f"im{i}.png"
        im.save(p)
        paths.append(str(p))
    neg = Item(paths[0], "Please describe the image.", "a red ball,", " a purple bottle and a tent", 20.0, False)
    pos = Item(paths[1], "Please describe the image.", "", "a blue box", 40.0, False)
    gold = Item(paths[1], "What color is the box?", "", "Blue", 40.0, True)
    return neg, pos, gold


def _batch(vlm, examples):
    """EFUF's batch of these examples as the training run builds it: (model inputs, component ids, scores, labels)."""
    from common.batching import SampleEncoder
    from finetune.train import EfufCollator, encode_example, pad_token_id

    encoder = SampleEncoder(vlm)
    batch = EfufCollator(pad_token_id(vlm))([encode_example(encoder, ex) for ex in examples])
    host = batch.pop("efuf_host")
    return batch, torch.tensor(host.component), host.score, host.labels


def test_trainer_loss_equals_the_hand_formula_on_a_real_batch(tiny_dir, images, tmp_path):
    vlm = _tiny_vlm(tiny_dir)
    neg, pos, gold = _toy_items(images, tmp_path)
    batch, comp, score, labels = _batch(vlm, [{"neg": [neg], "pos": [pos], "gold": [gold]}])
    assert comp.tolist() == [0, 1, 3]  # pos, gold, neg: one forward over all three
    with torch.no_grad():
        logits = vlm.model(**batch).logits
    # per-sample mean NLL over the target tokens, by hand
    nll = []
    for i in range(3):
        m = labels[i, 1:] != IGNORE_INDEX
        lp = torch.log_softmax(logits[i, :-1][m], -1).gather(-1, labels[i, 1:][m].unsqueeze(-1))
        nll.append(-lp.mean().item())
    want = 1.0 * nll[0] * 40.0 + 12.0 * nll[1] - 0.3 * nll[2] * (55.0 - 20.0)
    from common.models import Batch

    got, _ = efuf_loss(vlm.per_sample_nll(Batch(batch, labels, torch.zeros(0)), logits=logits), comp, score,
                       PAPER, 0.0)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # the negative's labels are exactly its sub-sentence; the context before it is not trained on
    assert vlm.tokenizer.decode(labels[2][labels[2] != IGNORE_INDEX]) == " a purple bottle and a tent"


def test_a_component_whose_weight_is_zero_leaves_the_forward(tiny_dir, images, tmp_path):
    """At the end of the run the negative weight is 0: the trainer's loss is the hand formula over the other rows
    (the negative's row is dropped from the batch on the host side, before the forward)."""
    from common.batching import SampleEncoder
    from finetune.train import EfufCollator, EfufConfig, EfufTrainer, encode_example, pad_token_id

    vlm = _tiny_vlm(tiny_dir)
    neg, pos, gold = _toy_items(images, tmp_path)
    cfg = EfufConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, dataloader_num_workers=0)
    trainer = EfufTrainer(model=vlm.model, args=cfg, train_dataset=None, vlm=vlm, weights=PAPER)
    trainer.state.max_steps = trainer.state.global_step = 10  # t = 1: neg weight 0, pos weight 0.5
    batch = EfufCollator(pad_token_id(vlm))([encode_example(SampleEncoder(vlm), {"neg": [neg], "pos": [pos],
                                                                                 "gold": [gold]})])
    labels = batch["efuf_host"].labels
    with torch.no_grad():
        got = trainer.compute_loss(vlm.model, dict(batch)).item()
        logits = vlm.model(**{k: v for k, v in batch.items() if k != "efuf_host"}).logits
    nll = []
    for i in range(2):  # pos, gold (the neg row is third)
        m = labels[i, 1:] != IGNORE_INDEX
        lp = torch.log_softmax(logits[i, :-1][m], -1).gather(-1, labels[i, 1:][m].unsqueeze(-1))
        nll.append(-lp.mean().item())
    assert got == pytest.approx(0.5 * nll[0] * 40.0 + 12.0 * nll[1], rel=1e-5)
    assert "nll_neg" not in trainer._component_logs and trainer._component_logs["w_neg"] == [0.0]


def test_the_hallucinated_term_raises_the_nll_of_exactly_its_span(tiny_dir, images, tmp_path):
    from common.models import Batch

    vlm = _tiny_vlm(tiny_dir)
    neg, pos, _ = _toy_items(images, tmp_path)
    neg_only = EfufWeights(pos=WeightSchedule(0.0, 0.0), neg=WeightSchedule(0.3, 0.3), gold_w=0.0, gold_score=0.0,
                           sent_w=0.0, max_score=55.0)

    def span_nll(item, part):
        b, _, _, labels = _batch(vlm, [{part: [item]}])
        with torch.no_grad():
            return vlm.per_sample_nll(Batch(b, labels, torch.zeros(0))).item()

    before_neg, before_pos = span_nll(neg, "neg"), span_nll(pos, "pos")
    opt = torch.optim.SGD([p for p in vlm.model.parameters() if p.requires_grad], lr=0.05)
    frozen = {n: p.detach().clone() for n, p in vlm.model.named_parameters() if not p.requires_grad}
    for _ in range(5):
        b, comp, score, labels = _batch(vlm, [{"neg": [neg]}])
        nll = vlm.per_sample_nll(Batch(b, labels, torch.zeros(0)), logits=vlm.model(**b).logits)
        loss, _ = efuf_loss(nll, comp, score, neg_only, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert span_nll(neg, "neg") > before_neg + 0.05  # gradient ascent on the hallucinated sub-sentence
    assert span_nll(pos, "pos") != before_pos  # (the projector is shared, so other outputs move too)
    assert all(torch.equal(p, frozen[n]) for n, p in vlm.model.named_parameters() if not p.requires_grad)


# ------------------------------------------------------------------------------------------- the CLI, end to end
def _original_format_data(root: Path, images) -> dict[str, str]:
    """A hand-written pos_neg.json in the released efuf-unlearning-30k format, plus gold data in mix665k format."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    for i, im in enumerate(images):
        im.save(img_dir / f"COCO_train2014_{i:012d}.jpg")
    pos_neg = [
        {"image": "COCO_train2014_000000000000.jpg", "sentence": "The image shows a cat on a couch, and a dog",
         "position": 33, "score": 21.5},
        {"image": "COCO_train2014_000000000000.jpg", "sentence": "The image shows a cat on a couch", "position": 0,
         "score": 33.25},
        {"image": "COCO_train2014_000000000001.jpg", "sentence": "A man rides a bike. There is a kite", "position": 19,
         "score": 18.0},
        {"image": "COCO_train2014_000000000001.jpg", "sentence": "A man rides a bike", "position": 0, "score": 35.0},
        {"image": "COCO_train2014_000000000002.jpg", "sentence": "Two people stand near a table", "position": 0,
         "score": 27.0},
        {"image": "COCO_train2014_000000000003.jpg", "sentence": "A bowl of fruit, with a spoon", "position": 16,
         "score": 22.0},
        {"image": "COCO_train2014_000000000002.jpg", "sentence": "Two people stand near a table: a clock",
         "position": 30, "score": 15.0},
    ]
    (root / "pos_neg.json").write_text(json.dumps(pos_neg))
    (root / "sentences.json").write_text(json.dumps([]))
    gold = [{"id": f"g{i}", "image": f"images/COCO_train2014_{i:012d}.jpg",
             "conversations": [{"from": "human", "value": "<image>\nWhat is in the image?"},
                               {"from": "gpt", "value": "A photo."}]} for i in range(4)]
    gold.insert(1, {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    (root / "gold.json").write_text(json.dumps(gold))
    return {"pos_neg": str(root / "pos_neg.json"), "sentences": str(root / "sentences.json"),
            "images": str(img_dir), "gold": str(root / "gold.json"), "gold_images": str(root)}


def _argv(tiny, data, out, *extra):
    return ["--model", "llava", "--llava_path", tiny, "--output_dir", str(out), "--pos_neg_data_path", data["pos_neg"],
            "--sentence_data_path", data["sentences"], "--image_dir_path", data["images"], "--llava_data_path",
            data["gold"], "--vqa_image_dir", data["gold_images"], "--learning_rate", "1e-3", "--report_to", "none",
            "--use_cpu", "true", "--save_steps", "2", "--logging_steps", "1", "--seed", "3", "--disable_tqdm", "true",
            *extra]


def test_original_pos_neg_format_loads_with_the_thresholds(tmp_path, images):
    data = _original_format_data(tmp_path, images)
    pos, neg = load_pos_neg(data["pos_neg"], data["images"], "p", hal_thres=23, norm_thres=32)
    assert sorted(i.score for i in pos) == [33.25, 35.0] and sorted(i.score for i in neg) == [15.0, 18.0, 21.5, 22.0]
    kite = next(i for i in neg if i.score == 18.0)
    assert (kite.context, kite.target) == ("A man rides a bike.", " There is a kite")  # sentence[position:]


def test_train_cli_trains_only_the_projector_and_saves_it(tiny_dir, images, tmp_path):
    from finetune.train import main

    data = _original_format_data(tmp_path / "d", images)
    out = tmp_path / "run"
    assert main(_argv(tiny_dir("llava"), data, out, "--max_steps", "3")) == 0
    saved = load_file(str(out / "trainable.safetensors"))
    assert saved and all("multi_modal_projector" in k for k in saved)
    base = load_model("llava", tiny_dir("llava"), dtype="float32")
    tuned = load_model("llava", tiny_dir("llava"), dtype="float32", ckpt_load_path=str(out))
    b, t = base.model.state_dict(), tuned.model.state_dict()
    changed = {k for k in b if not torch.equal(b[k], t[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)  # frozen weights bit-identical
    assert (out / "model_config.yaml").is_file()


def test_a_crash_resumes_to_the_same_final_weights(tiny_dir, images, tmp_path, monkeypatch):
    from finetune import train

    data = _original_format_data(tmp_path / "d", images)
    tiny = tiny_dir("llava")
    full = tmp_path / "full"
    assert train.main(_argv(tiny, data, full, "--max_steps", "6")) == 0

    crashed = tmp_path / "crashed"
    real_step = train.EfufTrainer.training_step
    calls = {"n": 0}

    def crashing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash at step 5")
        return real_step(self, *a, **k)

    monkeypatch.setattr(train.EfufTrainer, "training_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.main(_argv(tiny, data, crashed, "--max_steps", "6"))
    assert (crashed / "checkpoint-4" / "trainable.safetensors").is_file()
    assert not (crashed / "trainable.safetensors").exists()
    monkeypatch.setattr(train.EfufTrainer, "training_step", real_step)
    assert train.main(_argv(tiny, data, crashed, "--max_steps", "6")) == 0  # resumes from checkpoint-4
    a, b = load_file(str(full / "trainable.safetensors")), load_file(str(crashed / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((crashed / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_gradient_accumulation_k_steps_of_batch_b_equal_one_batch_of_k_b(tiny_dir, images, tmp_path):
    """2 accumulation steps of batch 1 == 1 step of batch 2: the Trainer's logged losses and, with plain SGD (whose
    update scales with the gradient, unlike Adam's), the final weights. Tolerance: relative 1e-5 on losses, 1e-6
    absolute on weights (fp32; the two paths pad and reduce differently)."""
    from finetune.train import main

    data = _original_format_data(tmp_path / "d", images)
    tiny = tiny_dir("llava")
    common = ["--max_steps", "2", "--optim", "sgd", "--learning_rate", "1e-3", "--weight_decay", "0"]
    assert main(_argv(tiny, data, tmp_path / "big", *common, "--per_device_train_batch_size", "2")) == 0
    assert main(_argv(tiny, data, tmp_path / "acc", *common, "--per_device_train_batch_size", "1",
                      "--gradient_accumulation_steps", "2")) == 0

    def logged(run: str) -> list[float]:
        state = json.loads((tmp_path / run / "checkpoint-2" / "trainer_state.json").read_text())
        return [h["loss"] for h in state["log_history"] if "loss" in h]

    assert len(logged("big")) == 2 and logged("acc") == pytest.approx(logged("big"), rel=1e-5)
    a, b = load_file(str(tmp_path / "big" / "trainable.safetensors")), \
        load_file(str(tmp_path / "acc" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    before = load_model("llava", tiny, dtype="float32").model.state_dict()
    assert all(not torch.allclose(a[k], before[k], atol=1e-6, rtol=0) for k in a)  # both really moved


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_dir, images, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) with per-device batch 1 vs 1 process with batch 2.

    4 negatives, global batch 2, 4 steps = 2 epochs. Tolerance: relative 1e-6 on every logged loss and 1e-5
    absolute on the final trainable weights (fp32; the two runs pad their batches differently and reduce in
    another order, so the sums are not bit-identical)."""
    data = _original_format_data(tmp_path / "d", images)
    tiny = tiny_dir("llava")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    common = ["--max_steps", "4", "--save_strategy", "no"]
    script = ROOT / "finetune" / "train.py"
    one = launch.run(1, script, _argv(tiny, data, tmp_path / "one", *common, "--per_device_train_batch_size", "2"),
                     env=env)
    two = launch.run(2, script, _argv(tiny, data, tmp_path / "two", *common, "--per_device_train_batch_size", "1"),
                     env=env)
    assert "world size 2" in two.stdout

    def losses(out: str) -> list[float]:
        return [float(line.split("loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("step ")]

    l1, l2 = losses(one.stdout), losses(two.stdout)
    assert len(l1) == len(l2) == 4
    assert l1 == pytest.approx(l2, rel=1e-6)
    a, b = load_file(str(tmp_path / "one" / "trainable.safetensors")), \
        load_file(str(tmp_path / "two" / "trainable.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    for name in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
        assert cfg.num_processes == 8 and cfg.mixed_precision == "bf16"
        assert str(cfg.distributed_type).split(".")[-1] in ("MULTI_GPU", "FSDP", "DEEPSPEED")


@pytest.mark.slow
def test_accelerate_launch_with_the_ddp_config(tiny_dir, images, tmp_path):
    """configs/accelerate/ddp.yaml drives finetune/train.py with 2 processes (gloo on CPU here). FSDP and
    DeepSpeed need an accelerator (accelerate refuses them on CPU); their configs are checked above."""
    data = _original_format_data(tmp_path / "d", images)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2",
                          "--mixed_precision", "no", "--main_process_port", str(launch.free_port()), str(ROOT / "finetune" / "train.py"),
                          *_argv(tiny_dir("llava"), data, tmp_path / "run", "--max_steps", "2",
                                 "--save_strategy", "no", "--per_device_train_batch_size", "1")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "world size 2" in run.stdout
    assert (tmp_path / "run" / "trainable.safetensors").is_file()


def test_sentence_loss_data_and_training(tiny_dir, images, tmp_path):
    from finetune.data import load_sentences
    from finetune.train import main

    data = _original_format_data(tmp_path / "d", images)
    rows = [{"image": "COCO_train2014_000000000000.jpg", "sentence": "A cat on a couch.", "mean": 30.0, "min": 25.0},
            {"image": "COCO_train2014_000000000001.jpg", "sentence": "A man and a kite.", "mean": 26.0, "min": 24.0},
            {"image": "COCO_train2014_000000000002.jpg", "sentence": "Two people.", "mean": 31.0, "min": 20.0}]
    Path(data["sentences"]).write_text(json.dumps(rows))
    kept = load_sentences(data["sentences"], data["images"], "p", hal_thres=23, sentence_thres=27.5)
    assert [(i.target, i.score, i.add_eos) for i in kept] == [("A cat on a couch.", 30.0, True)]  # min>23, mean>27.5
    out = tmp_path / "run"
    assert main(_argv(tiny_dir("llava"), data, out, "--max_steps", "1", "--sent_w", "0.5")) == 0
    assert (out / "trainable.safetensors").is_file()


@pytest.mark.parametrize("tqdm", ["true", "false"])
def test_one_log_line_per_step_and_nothing_of_wandb_without_it(tiny_dir, images, tmp_path, capsys, monkeypatch, tqdm):
    """Each logging step prints one readable "step N loss X …" line (not the Trainer's log dict as well), with or
    without the progress bar; --report_to none leaves wandb alone (not imported, no WANDB_* set)."""
    from finetune.train import main

    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    wandb_loaded = {m for m in sys.modules if m == "wandb" or m.startswith("wandb.")}
    data = _original_format_data(tmp_path / "d", images)
    capsys.readouterr()
    assert main(_argv(tiny_dir("llava"), data, tmp_path / "run", "--max_steps", "3", "--save_strategy", "no",
                      "--disable_tqdm", tqdm)) == 0
    out = capsys.readouterr().out.splitlines()
    steps = [ln for ln in out if ln.startswith("step ")]
    assert [ln.split()[:3] for ln in steps] == [["step", str(n), "loss"] for n in (1, 2, 3)]
    assert all(" lr 0.001 " in ln and " nll_neg " in ln and " w_sent" not in ln for ln in steps)
    state_losses = [float(ln.split("loss ")[1].split()[0]) for ln in steps]  # the parser of the 2-process test
    assert all(math.isfinite(v) for v in state_losses)
    assert not [ln for ln in out if ln.lstrip().startswith("{")]  # no log dicts
    assert sum(ln.startswith("trained 3 steps in ") for ln in out) == 1
    assert {m for m in sys.modules if m == "wandb" or m.startswith("wandb.")} == wandb_loaded
    assert not {"WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"} & set(os.environ)
