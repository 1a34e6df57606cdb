"""CLIP unlearning (``vlul``): the original's teacher pass every step against ours, which computes the frozen
teacher's features of a pair once and keeps them.

The original (MultiDelete ``vl_unlearn/task_unlearn.py``, ``VLUnlearnRetrievalTask.train_step`` and the SALMU fork's
version) embeds every Df and Dr batch with ``model_ori`` at every step of every epoch (10 epochs in
``configs/clip/retrieval_salmu.yaml``), though ``model_ori`` never changes. Both sides here are the same
``UnlearnTrainer`` on the same data, seed and thread count; only ``cache_teacher`` differs. The per-step losses
must agree (the cached features are the ones the first epoch computed; tolerance 1e-5 relative), then the CPU
time of the whole run is compared (several runs, median).

    python benchmarks/bench_unlearn.py [--epochs 10] [--runs 3] [--threads 1] [--n_train 96]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_bench.py


def run_once(clip_path: str, toy: str, out: str, epochs: int, cache: bool) -> tuple[float, float, list[float]]:
    import torch

    from common.args import ModelArguments, parse_args
    from multidelete.tasks import TaskArguments
    from multidelete.unlearn import UnlearnConfig, build

    argv = ["--model", "clip", "--clip_path", clip_path, "--task", "toy_retrieval", "--data_path", toy,
            "--forget_concepts", "ball", "--output_dir", out, "--num_train_epochs", str(epochs),
            "--per_device_train_batch_size", "8", "--learning_rate", "1e-4", "--save_strategy", "no",
            "--logging_steps", "1", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
            "--cache_teacher", str(cache).lower(), "--seed", "0"]
    margs, task, cfg = parse_args([ModelArguments, TaskArguments, UnlearnConfig], argv)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer, _, _ = build(margs, task, cfg)
    losses: list[float] = []
    original_log = trainer.log

    def log(logs, *a, **k):
        if "loss" in logs:
            losses.append(float(logs["loss"]))
        return original_log(logs, *a, **k)

    trainer.log = log
    t, w = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return time.process_time() - t, time.perf_counter() - w, losses


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n_train", type=int, default=96)
    a = p.parse_args(argv)

    import torch

    from common.tiny import main as tiny_main
    from common.toy.world import WorldConfig, generate

    torch.set_num_threads(a.threads)
    times: dict[str, list[float]] = {"original": [], "ours": []}
    walls: dict[str, list[float]] = {"original": [], "ours": []}
    losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_unlearn_") as tmp:
        toy, clip_path = os.path.join(tmp, "toy"), os.path.join(tmp, "open_clip")
        generate(toy, WorldConfig(seed=0, n_train=a.n_train, n_val=8, pope_images=2, mme_per_subtask=1,
                                  gqa_images=2, sqa_train=2, sqa_val=2, sqa_test=2, qbench=4), log=lambda *_: None)
        with contextlib.redirect_stdout(io.StringIO()):
            assert tiny_main(["--family", "open_clip", "--out", clip_path, "--seed", "0"]) == 0
        for r in range(a.runs):
            for side, cache in (("original", False), ("ours", True)):
                cpu, wall, ls = run_once(clip_path, toy, os.path.join(tmp, f"{side}{r}"), a.epochs, cache)
                times[side].append(cpu)
                walls[side].append(wall)
                losses[side] = ls
    agree = len(losses["original"]) == len(losses["ours"]) > 0 and all(
        abs(x - y) <= 1e-5 * max(1e-8, abs(x)) + 1e-7 for x, y in zip(losses["original"], losses["ours"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"vlul, {a.epochs} epochs, {len(losses['ours'])} steps, {a.threads} thread(s), {a.runs} runs "
          f"(CPU s, median): original (teacher every step) {med['original']:.2f}  ours (teacher once per pair) "
          f"{med['ours']:.2f}  ratio {med['original'] / med['ours']:.2f}x; losses agree: {agree}")
    assert agree, (losses["original"][:5], losses["ours"][:5])
    from _bench import result

    result("unlearn", med["original"] / med["ours"], agree, a.threads, steps=len(losses["ours"]),
           wall_ratio=round(statistics.median(walls["original"]) / statistics.median(walls["ours"]), 4))
    return {"median": med, "times": times, "losses_agree": agree, "steps": len(losses["ours"])}


if __name__ == "__main__":
    main()
