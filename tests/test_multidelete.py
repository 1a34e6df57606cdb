"""CLIP unlearning end to end on a tiny toy world and tiny CLIP checkpoints (open_clip and HF CLIPModel)."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import launch
import pytest
import torch

from common.errors import LetheError
from common.toy.world import WorldConfig, generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    generate(out, WorldConfig(seed=0, n_train=24, n_val=8, captions_per_image=2, pope_images=2, mme_per_subtask=1,
                              gqa_images=2, sqa_train=2, sqa_val=2, sqa_test=2, qbench=4), log=lambda *_: None)
    return out


def _argv(clip_path, toy, out, method, *extra):
    return ["--unlearn_method", method, "--backbone", "clip", "--task", "toy_retrieval", "--clip_path", str(clip_path),
            "--data_path", str(toy), "--forget_concepts", "ball", "--output_dir", str(out), "--num_train_epochs", "1",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--save_strategy", "no",
            "--eval_batch", "16", "--seed", "0", "--logging_steps", "1", "--use_cpu", "true", *extra]


def _build(clip_path, toy, out, method, *extra):
    from common.args import ModelArguments, parse_args
    from multidelete.tasks import TaskArguments
    from multidelete.unlearn import UnlearnConfig, build

    margs, task, cfg = parse_args([ModelArguments, TaskArguments, UnlearnConfig],
                                  ["--model", "clip", *_argv(clip_path, toy, out, method, *extra)])
    return build(margs, task, cfg)


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


@pytest.mark.parametrize("family", ["clip", "open_clip"])
def test_vlul_runs_and_reports_on_both_backends(tiny_dir, toy, tmp_path, family, capsys):
    from multidelete.unlearn import main

    out = tmp_path / "run"
    assert main(_argv(tiny_dir(family), toy, out, "vlul", "--alpha", "1.0")) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["splits"]) == {"df", "dr", "test", "test_forget"} and report["method"] == "vlul"
    for k in ("df_r5", "dr_r5", "test_r5", "auroc", "mia", "wall_s", "chance_r5"):
        assert isinstance(report[k], float), k
    assert (out / "trainable.safetensors").is_file()
    logs = capsys.readouterr().out
    assert "step 1 loss" in logs and " md " in logs and " multi " in logs and " uni " in logs
    # the saved weights load back through the model layer and give the report's numbers again
    from multidelete.eval import main as eval_main

    assert eval_main(["--clip_path", tiny_dir(family), "--clip_ckpt_load_path", str(out), "--task", "toy_retrieval",
                      "--data_path", str(toy), "--forget_concepts", "ball", "--output_json",
                      str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    for k in ("df_r5", "dr_r5", "test_r5", "auroc"):
        assert again[k] == pytest.approx(report[k], abs=1e-6), k


def test_teacher_never_changes_and_student_does(tiny_dir, toy, tmp_path):
    trainer, clip, _ = _build(tiny_dir("open_clip"), toy, tmp_path / "r", "vlul")
    before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    student0 = {k: v.clone() for k, v in clip.model.state_dict().items()}
    trainer.train()
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())
    assert not all(p.requires_grad for p in trainer.teacher.parameters())
    changed = [k for k, v in clip.model.state_dict().items() if not torch.equal(student0[k], v)]
    assert changed and "logit_scale" not in changed  # vlul never uses (so never trains) the temperature


@pytest.mark.parametrize("method,part,direction", [("neggrad", "df", +1), ("ft", "dr", -1)])
def test_neggrad_raises_df_loss_and_ft_lowers_dr_loss(tiny_dir, toy, tmp_path, method, part, direction):
    from multidelete import losses as L

    trainer, clip, _ = _build(tiny_dir("clip"), toy, tmp_path / "r", method, "--learning_rate", "1e-2")
    batch = _batch(trainer)

    def loss():
        with torch.no_grad():
            fi, ft = trainer._features(clip.model, batch[f"{part}_pixel_values"], batch[f"{part}_tokens"])
            return float(L.contrastive(fi, ft, clip.logit_scale))

    opt = torch.optim.SGD([p for p in clip.model.parameters() if p.requires_grad], lr=1e-2)
    if method == "neggrad":  # an untrained tiny CLIP sits at chance (log B), where the bounded ascent stops:
        for _ in range(20):  # first let it learn the Df pairs
            opt.zero_grad()
            fi, ft = trainer._features(clip.model, batch["df_pixel_values"], batch["df_tokens"])
            L.contrastive(fi, ft, clip.logit_scale).backward()
            opt.step()
        assert loss() < math.log(len(batch["df_pixel_values"])) - 0.1
    l0 = loss()
    for _ in range(3):
        opt.zero_grad()
        trainer.compute_loss(clip.model, batch).backward()
        opt.step()
    assert (loss() - l0) * direction > 0


def test_paired_batches_hold_one_df_and_one_dr_pair_per_example(tiny_dir, toy, tmp_path):
    trainer, _, data = _build(tiny_dir("clip"), toy, tmp_path / "r", "delete")
    ds = trainer.train_dataset
    assert len(ds) == data.df.n_pairs
    df_texts, dr_texts = set(data.df.texts), set(data.dr.texts)
    for i in range(len(ds)):
        assert ds[i]["df"][1] in df_texts and ds[i]["dr"][1] in dr_texts
    # Dr draws cycle through a seeded permutation: every Dr pair once before any repeats
    n = len(ds.dr)
    draws = [ds._dr_index(i) for i in range(n)]
    assert sorted(draws) == list(range(n))


def test_bad_input_is_one_line(tiny_dir, toy, tmp_path, capsys):
    from multidelete.unlearn import main

    def err(*extra, method="vlul"):
        argv = _argv(tiny_dir("clip"), toy, tmp_path / "r", method, *extra)
        assert main(argv) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    assert "unknown concept(s) 'dragon'" in err("--forget_concepts", "dragon")
    keys = tmp_path / "df.txt"
    keys.write_text("toy_train_000000000001.png\nnot_an_image.png\n")
    assert "not_an_image.png" in err("--df_list", str(keys))
    assert "df_size 999" in err("--forget_concepts", "", "--df_size", "999")
    assert "--unlearn_method 'forget'" in err(method="forget")
    assert "only clip" in err("--backbone", "blip")


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_dir, toy, tmp_path):
    """gloo on CPU: 2 processes × batch 2 and 1 process × batch 4 (last partial batch dropped: accelerate would
    fill it from the start on 2 processes); the features are gathered, so every loss (over the global batch) and
    the final weights agree. Tolerance: 1e-5 relative on losses; 2·lr absolute on weights, since AdamW turns a
    near-zero gradient entry that differs only by summation order into an update of up to lr."""
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def run(out, procs, batch):
        args = _argv(tiny_dir("open_clip"), toy, out, "vlul", "--skip_eval", "--dataloader_drop_last", "true")
        args[args.index("--per_device_train_batch_size") + 1] = str(batch)
        args[args.index("--learning_rate") + 1] = "1e-5"
        r = launch.run(procs, REPO / "multidelete" / "unlearn.py", args, env=env, cwd=REPO)
        assert f"world size {procs}" in r.stdout
        losses = [float(line.split()[3]) for line in r.stdout.splitlines() if line.startswith("step ")]
        return losses, load_file(str(out / "trainable.safetensors"))

    l1, w1 = run(tmp_path / "one", 1, 4)
    l2, w2 = run(tmp_path / "two", 2, 2)
    assert len(l1) == len(l2) >= 2
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=0, atol=2e-5), k


def test_task_errors_name_the_flag():
    from multidelete.tasks import TaskArguments, load_task

    with pytest.raises(LetheError, match="--data_path is required for --task coco_retrieval"):
        load_task(TaskArguments(task="coco_retrieval"))
    with pytest.raises(LetheError, match="unknown --task"):
        load_task(TaskArguments(task="imagenet"))


def test_toy_task_splits_keep_the_concept_out_of_train_retain_and_test(toy):
    from multidelete.tasks import TaskArguments, load_task

    data = load_task(TaskArguments(task="toy_retrieval", data_path=str(toy), forget_concepts="ball"))
    assert all("ball" in m["categories"] for m in data.df.metadata + data.extra["test_forget"].metadata)
    assert not any("ball" in m["categories"] for m in data.dr.metadata + data.test.metadata)
    assert data.df.n_images + data.dr.n_images == 24
    assert data.test.n_images + data.extra["test_forget"].n_images == 8


def test_table_of_runs(tmp_path, capsys):
    from multidelete.eval import main as eval_main

    def report(df, dr, test, wall=None):
        splits = {n: {"r5": v} for n, v in (("df", df), ("dr", dr), ("test", test))}
        return {"splits": splits, "df_r5": df, "dr_r5": dr, "test_r5": test, "auroc": 0.9, "mia": 0.6,
                "chance_r5": 0.02, **({"wall_s": wall} if wall is not None else {})}

    (tmp_path / "o.json").write_text(json.dumps(report(0.4, 0.3, 0.8)))
    (tmp_path / "v.json").write_text(json.dumps({**report(0.1, 0.29, 0.79, 12.5), "method": "vlul"}))
    out = tmp_path / "s.json"
    assert eval_main(["--table", f"original={tmp_path / 'o.json'}", str(tmp_path / "v.json"), "--summary_json",
                      str(out), "--output_md", str(tmp_path / "s.md"), "--output_png", str(tmp_path / "s.png")]) == 0
    s = json.loads(out.read_text())
    assert s == {"chance_r5": 0.02,
                 "original": {"df_r5": 0.4, "dr_r5": 0.3, "test_r5": 0.8, "auroc": 0.9, "mia": 0.6, "wall_s": None},
                 "vlul": {"df_r5": 0.1, "dr_r5": 0.29, "test_r5": 0.79, "auroc": 0.9, "mia": 0.6, "wall_s": 12.5}}
    assert "| vlul | 0.100 | 0.290 | 0.790 | 0.900 | 0.600 | 12.5 |" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "s.png").stat().st_size > 1000
    (tmp_path / "bad.json").write_text("{}")
    capsys.readouterr()
    assert eval_main(["--table", str(tmp_path / "bad.json")]) == 2
    assert "not a multidelete report" in capsys.readouterr().err


def test_captions_reach_the_tokenizer_verbatim(tmp_path):
    """SALMUBench's sensitive strings survive loading, pairing and collation unchanged up to the tokenizer call."""
    from PIL import Image

    from common.retrieval import load_salmubench
    from multidelete.tasks import TaskData
    from multidelete.unlearn import PairCollator, UnlearnPairs

    texts = ["Write to john.doe@mail.com!", "Call +1 (555) 010-9999.", "  Spaces, CASE & (punctuation)  "]
    for split in ("forget", "retain_synth"):
        rows = []
        for i, t in enumerate(texts):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{split}{i}.png")
            rows.append(json.dumps({"file_name": f"{split}{i}.png", "text": t, "identity_id": i}))
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    df, dr = load_salmubench(tmp_path, "forget"), load_salmubench(tmp_path, "retain_synth")
    seen = []

    class Spy:
        def preprocess(self, images):
            return torch.zeros(len(images), 3, 8, 8)

        def tokenize(self, t):
            seen.extend(t)
            return torch.zeros(len(t), 4, dtype=torch.long)

    ds = UnlearnPairs(TaskData(df, dr, dr), "vlul", seed=0)
    PairCollator(Spy())([ds[i] for i in range(len(ds))])
    assert sorted(seen[:3]) == sorted(texts) and sorted(seen[3:]) == sorted(texts)


def test_a_split_whose_images_are_missing_is_one_error_line(tiny_dir, tmp_path, capsys):
    from multidelete.unlearn import main

    (tmp_path / "forget.jsonl").write_text(json.dumps({"file_name": "gone.png", "text": "x", "identity_id": 1}) + "\n")
    argv = ["--unlearn_method", "vlul", "--task", "salmu_retrieval", "--data_path", str(tmp_path), "--clip_path",
            tiny_dir("clip"), "--output_dir", str(tmp_path / "r")]
    capsys.readouterr()
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "forget.jsonl" in lines[0] and "gone.png" in lines[0]


def test_teacher_features_are_computed_once_per_pair_and_equal_recomputed_ones(tiny_dir, toy, tmp_path):
    trainer, clip, _ = _build(tiny_dir("open_clip"), toy, tmp_path / "r", "vlul")
    calls = []
    trainer.teacher.register_forward_hook(lambda m, i, o: calls.append(1))
    batch = _batch(trainer)
    with torch.no_grad():
        first = trainer.compute_loss(clip.model, batch)
        n = len(calls)
        again = trainer.compute_loss(clip.model, batch)  # the same pairs: read back, no teacher forward
    assert n == 2 and len(calls) == n  # one forward each for the Df and the Dr part, then none
    trainer.cache_teacher = False
    with torch.no_grad():
        fresh = trainer.compute_loss(clip.model, batch)
    assert len(calls) == n + 2
    assert again.item() == first.item() == pytest.approx(fresh.item(), rel=1e-6)
