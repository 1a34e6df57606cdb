"""EFUF training steps: the previous path against the current one, in one process, same model, data and order.

    python benchmarks/bench_train_step.py [--arch tiny|llava-1.5-7b] [--steps 24] [--batch_size 8] [--workers 1]
        [--runs 3] [--threads 1] [--device auto]

The old side reproduces the step as Lethe ran it before, which has the structure of EFUF's own
(``finetune/loss.py:batch_forward`` + ``get_loss``: the step's samples built in the main process — every image
decoded and every prompt tokenized again, the chat template rendered twice — one forward over pos, gold and neg with
the logits at every position over the whole vocabulary and a KV cache, then per-sample losses split out with device
values read back per component and per sample): ``OldCollator`` + ``OldTrainer.compute_loss`` + ``old_efuf_loss``
here. The new side is ``finetune/train.py`` as it
is: samples encoded in ``--workers`` DataLoader worker processes (kept in their caches for the samples drawn again),
padded by tensor ops, the LM head at the labelled positions only (``logits_to_keep``), no KV cache, no host read
inside the step.

Both sides run the real ``EfufTrainer`` loop (``Trainer.train``) for ``--steps`` steps of ``--batch_size`` examples
(each the paper's 1 negative + 1 positive + 1 gold sample) from the same initial weights, in the same order; their
per-step losses must agree (relative 1e-4: the LM head's product over fewer rows rounds differently). Printed per
side: steps/s and target tokens/s (wall), CPU seconds (main process + its DataLoader workers), the padding fraction
of the token slots, host reads (device→host synchronisations) per step counted in the step's own code and, apart,
inside the model's forward (transformers'), and on a GPU the model FLOP utilisation (MFU):
FLOPs = 2·N_llm·tokens (forward) + 2·N_llm·tokens (backward to the projector's output; the LLM's weights are frozen)
+ 2·N_vision·image tokens (forward only), over the device's dense bf16 peak. ``--group_by_length`` also reports the
padding fraction of the new side with length-grouped sampling (other batches: not compared for losses).

``--arch llava-1.5-7b`` builds LLaVA-1.5-7B's architecture (Vicuna-7B + CLIP ViT-L/14-336, 576 image tokens) with
random weights on the device in bf16 (nothing downloaded; the tiny checkpoint's tokenizer stands in).
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_bench.py

import torch  # noqa: E402

from finetune.loss import COMPONENTS, EfufWeights, component_term  # noqa: E402
from finetune.train import EfufConfig, EfufTrainer  # noqa: E402

#: dense bf16 peak FLOP/s by device name (for MFU); others: --peak_tflops
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


# ------------------------------------------------------------------------------------------ the old path, ported
def old_efuf_loss(nll, component, score, weights: EfufWeights, t: float):
    """The previous ``finetune.loss.efuf_loss``: boolean masks, ``.any()`` and ``float()`` per component."""
    w = weights.at(t)
    total = nll.sum() * 0.0
    logs = {}
    for idx, name in enumerate(COMPONENTS):
        m = component == idx
        if not m.any() or w[name] == 0:
            continue
        l, s = nll[m], score[m].to(nll.dtype)
        logs[f"nll_{name}"] = float(l.detach().mean())
        total = total + component_term(name, l, s, w[name], weights.max_score)
    return total, logs


class OldCollator:
    """The previous collator: the whole batch through ``vlm.build_batch`` (one processor call) in the main process."""

    def __init__(self, vlm):
        self.vlm = vlm

    def __call__(self, examples):
        from finetune.data import to_sample

        items, comp = [], []
        for name in COMPONENTS:
            for ex in examples:
                for it in ex.get(name, []):
                    items.append(it)
                    comp.append(COMPONENTS.index(name))
        batch = self.vlm.build_batch([to_sample(it) for it in items])
        return {**batch.inputs, "labels": batch.labels, "efuf_component": torch.tensor(comp),
                "efuf_score": torch.tensor([it.score for it in items], dtype=torch.float32)}


class OldTrainer(EfufTrainer):
    """The previous ``compute_loss``: full logits (and a KV cache), per-sample NLL with boolean masks."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from common.models import Batch

        component = inputs.pop("efuf_component")
        score = inputs.pop("efuf_score")
        labels = inputs.pop("labels")
        t = self.state.global_step / max(1, self.state.max_steps)
        w = self.efuf_weights.at(t)
        keep = torch.tensor([w[COMPONENTS[int(c)]] != 0 for c in component])
        if not keep.all():
            if not keep.any():
                keep[0] = True
            rows = keep.nonzero().flatten()
            inputs = {k: v[rows.to(v.device)] if torch.is_tensor(v) and v.shape[:1] == keep.shape else v
                      for k, v in inputs.items()}
            labels, component, score = labels[rows.to(labels.device)], component[rows], score[rows]
        outputs = model(**inputs)
        batch = Batch(inputs, labels, torch.zeros(0))
        nll = self.vlm.per_sample_nll(batch, logits=outputs.logits)
        loss, logs = old_efuf_loss(nll, component.to(nll.device), score.to(nll.device), self.efuf_weights, t)
        for k, v in {**logs, **{f"w_{k}": v for k, v in self.efuf_weights.at(t).items()}}.items():
            self._component_logs.setdefault(k, []).append(v)
        self._losses.append(loss.detach().float())
        return (loss, outputs) if return_outputs else loss


# ------------------------------------------------------------------------------------------ model and data
def make_data(n: int, tmp: Path, size: tuple[int, int], seed: int):
    """EFUF-shaped data: ``n`` negatives (sub-sentences after a caption prefix), positives and gold instruction
    samples of varied lengths, on ``n // 2`` images (several objects per caption share an image)."""
    import numpy as np
    from PIL import Image

    from finetune.data import EfufDataset, Item

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(max(2, n // 2)):
        p = tmp / f"im{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    words = ("a red ball", "a small dog", "two people", "a wooden table", "a white refrigerator", "a blue sky",
             "a train on the tracks", "a bowl of fruit", "a man riding a bicycle", "a green square")
    prompt = "Please describe the image."

    def caption(k: int) -> str:
        return ", ".join(words[j] for j in rng.choice(len(words), size=k)) + "."

    neg, pos, gold = [], [], []
    for i in range(n):
        im = paths[i % len(paths)]
        ctx = caption(int(rng.integers(0, 5)))
        neg.append(Item(im, prompt, ctx, " " + caption(int(rng.integers(1, 3))), float(rng.uniform(15, 23)), False))
        pos.append(Item(im, prompt, caption(int(rng.integers(0, 4))), " " + caption(1), float(rng.uniform(32, 40)),
                        False))
        gold.append(Item(im, "What is in the image? Answer in detail.", "", caption(int(rng.integers(2, 9))), 40.0,
                         True))
    return EfufDataset(neg, {"pos": pos, "gold": gold}, {"pos": 1, "gold": 1}, seed)


# ------------------------------------------------------------------------------------------ measuring
class StepStats:
    """Per step: the loss; with ``count``, also token slots and padding, target tokens and host reads (step code /
    model forward) — reading those costs host reads itself, so timed runs only keep the losses (on the device)."""

    def __init__(self, device, count: bool):
        from common.batching import SyncCounter

        self.losses: list = []
        self.slots = self.pads = self.targets = self.image_tokens = 0
        self.counter = SyncCounter(device) if count else None
        self.steps = 0

    def wrap(self, trainer, image_token_id: int):
        """Wrap ``trainer.compute_loss``."""
        stats, inner, counter = self, trainer.compute_loss, self.counter

        def compute_loss(model, inputs, *a, **kw):
            stats.steps += 1
            if counter is None:
                loss = inner(model, inputs, *a, **kw)
                stats.losses.append(loss.detach())
                return loss
            mask = inputs["attention_mask"]
            stats.slots += mask.numel()
            stats.pads += int((mask == 0).sum())
            stats.image_tokens += int((inputs["input_ids"] == image_token_id).sum())
            host = inputs.get("efuf_host")
            labels = host.labels if host is not None else inputs["labels"]
            stats.targets += int((labels[:, 1:] != -100).sum())
            counter.region = "step"
            with counter, counter.model_region(model):
                loss = inner(model, inputs, *a, **kw)
            stats.losses.append(loss.detach())
            return loss

        trainer.compute_loss = compute_loss


def model_flops(vlm, tokens: int, image_tokens: int, images: int) -> float:
    """FLOPs of the steps: the LLM's layers forward and backward to their input (the LLM is frozen: no weight
    gradients) over every token, image tokens included (4·N·tokens; embeddings and the LM head not counted), and
    the vision tower forward over each image's patches (2·N·patches)."""
    lm = vlm.language_model
    n_llm = sum(p.numel() for p in lm.parameters()) - lm.get_input_embeddings().weight.numel()
    n_vis = sum(p.numel() for p in vlm.vision_tower.parameters())
    per_image = image_tokens // max(1, images) + 1  # LLaVA-1.5 keeps every patch but the CLS token
    return 4.0 * n_llm * tokens + 2.0 * n_vis * per_image * images


def run_side(side: str, vlm, dataset, a, tmp: Path, init: dict, order_seed: int, group: bool = False,
             count: bool = False) -> dict:
    from common.training import LogLines, LogProgress
    from finetune.train import EfufCollator, efuf_examples, pad_token_id

    with torch.no_grad():
        for n, p in vlm.model.named_parameters():
            if n in init:
                p.copy_(init[n])
    new = side != "old"
    cfg = EfufConfig(output_dir=str(tmp / f"out-{side}"), per_device_train_batch_size=a.batch_size,
                     max_steps=a.steps, learning_rate=1e-4, report_to="none", save_strategy="no",
                     logging_steps=10 ** 6, disable_tqdm=True, seed=order_seed,
                     dataloader_num_workers=a.workers if new else 0, dataloader_persistent_workers=False,
                     logging_nan_inf_filter=not new, bf16=vlm.device.type == "cuda",
                     train_sampling_strategy="group_by_length" if group else "random",
                     use_cpu=vlm.device.type == "cpu")
    if new:
        train, collator, cls = efuf_examples(vlm, dataset, a.cache_mb), EfufCollator(pad_token_id(vlm)), EfufTrainer
    else:
        train, collator, cls = dataset, OldCollator(vlm), OldTrainer
    trainer = cls(model=vlm.model, args=cfg, train_dataset=train, data_collator=collator, vlm=vlm,
                  weights=cfg.weights())
    for printer in (LogLines, LogProgress):  # the benchmark prints its own summary, not a line per log
        trainer.remove_callback(printer)
    stats = StepStats(vlm.device, count)
    stats.wrap(trainer, vlm.image_token_id)
    if vlm.device.type == "cuda":
        torch.cuda.synchronize()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.train()
    if vlm.device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    del trainer
    gc.collect()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
    steps = max(1, stats.steps)
    out = {"wall": wall, "cpu": cpu, "losses": [float(x) for x in stats.losses], "steps": stats.steps}
    if count:
        out.update(padding=stats.pads / max(1, stats.slots), tokens=stats.slots - stats.pads,
                   image_tokens=stats.image_tokens, targets=stats.targets,
                   syncs_step=stats.counter.total("step") / steps, syncs_model=stats.counter.total("model") / steps,
                   sync_ops=dict(stats.counter.counts.get("step", {})))
    return out


def _rel_diff(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) / max(1e-8, abs(x)) for x, y in zip(a, b)), default=0.0) if len(a) == len(b) else 1.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tiny", help="tiny | llava-1.5-7b (random weights)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch_size", type=int, default=8, help="examples per step (each 1 neg + 1 pos + 1 gold)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers of the new side")
    ap.add_argument("--cache_mb", type=float, default=1024.0, help="the new side's encode cache per process")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image_size", default="640x480", help="WxH of the synthetic images")
    ap.add_argument("--group_by_length", action="store_true", help="also measure length-grouped sampling")
    ap.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak (for MFU)")
    ap.add_argument("--skip_old", action="store_true", help="time the new side only (e.g. a 7B on a small GPU)")
    a = ap.parse_args(argv)
    from _bench import Timings, build_llava, fix_threads, result

    threads = fix_threads(a.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    w, h = (int(x) for x in a.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        torch.manual_seed(0)
        vlm = build_llava(a.arch, device, tmp)
        vlm.set_trainable("projector")
        for p in vlm.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        init = {n: p.detach().clone() for n, p in vlm.model.named_parameters() if p.requires_grad}
        dataset = make_data(a.steps * a.batch_size, tmp, (w, h), seed=0)
        sides = ["new"] if a.skip_old else ["old", "new"]
        # first, untimed: one run per side that counts tokens, padding and host reads (counting costs time itself)
        # and warms up (allocations, lazy imports, worker start-up); then the timed runs, which keep only the losses
        # float32 on the CPU repeats bit for bit; bf16 kernels on a GPU do not (atomics, split reductions)
        tol = 1e-4 if device == "cpu" else 2e-2
        res = {s: run_side(s, vlm, dataset, a, tmp, init, 0, count=True) for s in sides}
        t = Timings()
        for _ in range(max(1, a.runs)):
            for s in sides:
                r = run_side(s, vlm, dataset, a, tmp, init, 0)
                t.cpu.setdefault(s, []).append(r["cpu"])
                t.wall.setdefault(s, []).append(r["wall"])
                if _rel_diff(r["losses"], res[s]["losses"]) > tol:
                    raise SystemExit(f"{s}: a timed run's losses differ from the counting run's")
        grouped = run_side("new", vlm, dataset, a, tmp, init, 0, group=True, count=True) if a.group_by_length \
            else None
        peak = a.peak_tflops
        if peak is None and device == "cuda":
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        for s in sides:
            r = res[s]
            wall = t.median(s, "wall")
            r["steps_per_s"] = r["steps"] / wall
            r["tokens_per_s"] = r["tokens"] / wall
            if device == "cuda" and peak:
                images = r["image_tokens"] // max(1, vlm.base.config.image_seq_length)
                flops = model_flops(vlm, r["tokens"], r["image_tokens"], images)
                r["mfu"] = flops / wall / (peak * 1e12)
    print(f"arch {a.arch} on {device}, {threads} thread(s); {a.steps} steps of {a.batch_size} examples "
          f"(x3 samples); new side: {a.workers} DataLoader worker(s); medians of {max(1, a.runs)} run(s)")
    for s in sides:
        r = res[s]
        mfu = f", MFU {100 * r['mfu']:.1f} %" if "mfu" in r else ""
        print(f"  {s}: {r['steps_per_s']:.3f} steps/s, {r['tokens_per_s']:.0f} tokens/s, "
              f"CPU {t.median(s):.2f} s (workers incl.), wall {t.median(s, 'wall'):.2f} s; padding "
              f"{100 * r['padding']:.1f} % of token slots; host reads per step: {r['syncs_step']:g} in the step's "
              f"code {r['sync_ops'] or ''}, {r['syncs_model']:g} in the model's forward{mfu}")
    if grouped is not None:
        print(f"  new + group_by_length: padding {100 * grouped['padding']:.1f} % of token slots")
    extra = {"steps_per_s": round(res["new"]["steps_per_s"], 4), "tokens_per_s": round(res["new"]["tokens_per_s"], 1),
             "syncs_per_step": res["new"]["syncs_step"],
             "padding": round(res["new"]["padding"], 4), "arch": a.arch, "device": device}
    if "mfu" in res["new"]:
        extra["mfu"] = round(res["new"]["mfu"], 4)
    if grouped is not None:
        extra["padding_grouped"] = round(grouped["padding"], 4)
    if a.skip_old:
        result("train_step", float("nan"), True, threads, **extra)
        return {**extra, "new": res["new"]}
    old, new = res["old"]["losses"], res["new"]["losses"]
    diff = _rel_diff(old, new)
    same = len(old) == len(new) and diff <= tol
    ratio = t.ratio("old", "new", "wall")
    print(f"steps/s new / old: {ratio:.2f}x (wall); CPU old / new: {t.ratio('old', 'new'):.2f}x; "
          f"losses: max relative difference {diff:.1e} over {len(old)} steps")
    assert same, f"the new step's losses differ from the old step's (max relative {diff:.2e})"
    result("train_step", ratio, same, threads, cpu_ratio=round(t.ratio("old", "new"), 4),
           old_steps_per_s=round(res["old"]["steps_per_s"], 4), old_padding=round(res["old"]["padding"], 4),
           old_syncs_per_step=res["old"]["syncs_step"], loss_rel_diff=diff, **extra)
    return {**extra, "ratio": ratio, "old": res["old"], "new": res["new"]}


if __name__ == "__main__":
    main()
