"""STIC stage 1: peak memory and step time of our layout (one model; the reference = the LoRA adapter disabled)
against the original's (a policy plus a separately loaded full reference model: STIC's ``llava/train/train_dpo.py``
builds ``model_ref`` beside the policy, L968-981; POVID's ``tool/dpo_trainer.py`` runs it as the reference).

    python benchmarks/bench_dpo_memory.py [--hidden 512] [--layers 6] [--steps 6] [--runs 3] [--threads 2]

Both variants train the same LoRA on the same small LLaVA (HF classes, random weights, float32) and the same
preference pairs with TRL's ``DPOTrainer`` (β 0.1, sigmoid + sft). A process's peak resident memory can only be
measured for the whole process, so each (variant, run) is a fresh child process started by this one, in turn;
reported: peak RSS, the peak above the RSS after imports (what the run itself added), CPU seconds per optimizer
step (process time over the timed steps, after one warm-up step; torch threads fixed), and the first loss (equal
for both: the reference is the same function). Medians over ``--runs``; the ratio is original / ours.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_bench.py


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(variant: str, ckpt: str, data: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    import trl  # noqa: F401 (imports count in the baseline)

    from common.args import ModelArguments, parse_args
    from stic.train_dpo import SticDpoConfig, build_trainer

    base_rss = _rss_mb()
    argv = ["--model", "llava", "--llava_path", ckpt, "--data_path", f"{data}/pref.jsonl", "--image_folder",
            f"{data}/img", "--output_dir", f"{data}/out-{variant}", "--report_to", "none", "--use_cpu",
            "--disable_tqdm", "true", "--lora_r", "16", "--lora_alpha", "32", "--learning_rate", "1e-4",
            "--global_batch_size", "4", "--per_device_train_batch_size", "4", "--max_steps", str(steps + 1),
            "--save_strategy", "no", "--logging_steps", "1", "--seed", "0"]
    margs, cfg = parse_args([ModelArguments, SticDpoConfig], argv)
    if variant == "ours":
        trainer, _ = build_trainer(margs, cfg)
    else:  # the original's layout: the policy (base + LoRA) and a second, full reference model
        from peft import get_peft_model
        from trl import DPOTrainer

        from stic.pref_data import PreferenceCollator, load_pref_data, to_dataset

        records = load_pref_data(cfg.data_path, cfg.image_folder)
        vlm = margs.load(device="cpu")
        ref = margs.load(device="cpu").model.eval().requires_grad_(False)
        cfg.loss_weights = [1.0, 0.01]
        policy = get_peft_model(vlm.model, vlm.llm_lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
        trainer = DPOTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=to_dataset(records),
                             data_collator=PreferenceCollator(vlm), processing_class=vlm.processor)
    if variant == "ours":
        trainer.loss_weights = [1.0, 0.01]  # the same weights in both (auto would derive them from the data)
    times: list[float] = []
    losses: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.process_time() - self.t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer.add_callback(Clock())
    trainer.train()
    return {"variant": variant, "peak_mb": _peak_mb(), "added_mb": _peak_mb() - base_rss,
            "cpu_s_per_step": statistics.mean(times[1:]), "first_loss": losses[0]}


def write_inputs(root: Path, hidden: int, layers: int) -> str:
    import numpy as np
    import torch
    from PIL import Image

    from common.tiny import tiny_llava

    torch.manual_seed(0)
    model, proc = tiny_llava(hidden=hidden, layers=layers)
    model.save_pretrained(root / "ckpt")
    proc.save_pretrained(root / "ckpt")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"image": f"{i}.png",
                     "chosen": [{"role": "user", "content": "Describe the image."},
                                {"role": "assistant", "content": "a red ball and a blue box on a white table. " * 4}],
                     "rejected": [{"role": "user", "content": "Describe the image."},
                                  {"role": "assistant", "content": "a green tent, a kite and two cups near a boat. " * 4}]})
    (root / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(sum(p.numel() for p in model.parameters()))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=("original", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, f"{a.root}/ckpt", a.root, a.steps, a.threads)))
        return {}
    with tempfile.TemporaryDirectory() as d:
        n_params = write_inputs(Path(d), a.hidden, a.layers)
        res: dict[str, list[dict]] = {"original": [], "ours": []}
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
        for _ in range(a.runs):
            for variant in ("original", "ours"):
                out = subprocess.run([sys.executable, __file__, "--child", variant, "--root", d, "--steps",
                                      str(a.steps), "--threads", str(a.threads)], env=env, capture_output=True,
                                     text=True, check=False)
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                res[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("peak_mb", "added_mb", "cpu_s_per_step")}
           for v, rs in res.items()}
    print(f"STIC stage 1 on a LLaVA of {int(n_params) / 1e6:.1f} M params (float32), LoRA r 16, batch 4 pairs, "
          f"{a.threads} threads, medians of {a.runs} runs")
    print(f"{'layout':<44}{'peak RSS MB':>12}{'added MB':>10}{'CPU s/step':>12}")
    for v, name in (("original", "policy + separate full reference (original)"),
                    ("ours", "one model, adapter disabled as reference")):
        m = med[v]
        print(f"{name:<44}{m['peak_mb']:>12.0f}{m['added_mb']:>10.0f}{m['cpu_s_per_step']:>12.3f}")
    print(f"ratio original/ours: peak {med['original']['peak_mb'] / med['ours']['peak_mb']:.2f}x, "
          f"added {med['original']['added_mb'] / med['ours']['added_mb']:.2f}x, "
          f"step time {med['original']['cpu_s_per_step'] / med['ours']['cpu_s_per_step']:.2f}x")
    first = {v: [r["first_loss"] for r in rs] for v, rs in res.items()}
    print(f"first loss: original {first['original'][0]:.6f}, ours {first['ours'][0]:.6f}")
    from _bench import result

    result("dpo_memory", med["original"]["added_mb"] / med["ours"]["added_mb"],
           abs(first["original"][0] - first["ours"][0]) < 1e-6, a.threads, ratio_of="added memory (MB)",
           step_time_ratio=round(med["original"]["cpu_s_per_step"] / med["ours"]["cpu_s_per_step"], 4))
    return {"median": med, "first_loss": first}


if __name__ == "__main__":
    main()
