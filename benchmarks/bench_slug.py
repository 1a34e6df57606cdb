"""SLUG's step-size search: the original's evaluation of every trial against ours.

The original (SLUG ``src/clip/unlearn_slug.py``, the binary-search loop calling ``evaluate_model`` after every
λ) re-reads and re-preprocesses every evaluation image and re-encodes both towers at every trial, though a trial
changes one tensor of one tower. Ours (``slug.zeroshot.Evaluator``) keeps the preprocessed pixels and re-encodes
only the edited tower, the other side taken from the unedited model. Both sides score the same edits (a vision and
a text tensor, alternately, at several λ) on the same toy zero-shot sets; their accuracies must be identical, then
the CPU time of the trials is compared (several runs, median). Also printed: the gradient storage, the original's
two full-model ``torch.save`` dicts against our one file of the eligible forget gradients.

    python benchmarks/bench_slug.py [--trials 10] [--runs 3] [--threads 1] [--per_class 30]
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


def naive_evaluate(clip, sets, templates):
    """Every trial from scratch: images from disk, both towers encoded (as ``evaluate_model``)."""
    import torch

    from slug.zeroshot import prompts, topk_accuracy

    out = {}
    with torch.inference_mode():
        for s in sets:
            img = torch.cat([clip.encode_image(clip.preprocess(s.images[a:a + 128])).float()
                             for a in range(0, len(s.images), 128)])
            txt = clip.encode_text(prompts(s.class_names, templates)).float()
            w = torch.nn.functional.normalize(txt.view(len(s.class_names), len(templates), -1).mean(1), dim=-1)
            out[s.name] = topk_accuracy(img @ w.T, torch.tensor(s.labels))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--per_class", type=int, default=30)
    a = p.parse_args(argv)

    import torch

    from common.models import load_model
    from common.tiny import main as tiny_main
    from common.toy import benchmarks as toy_bench
    from common.toy.formats import Writer
    from common.toy.world import WorldConfig
    from slug.layers import eligible, tower_of
    from slug.unlearn import LayerEditor
    from slug.zeroshot import EvalSetArguments, Evaluator, build_sets

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="bench_slug_") as tmp:
        w = Writer(tmp)
        toy_bench.write_classification(w, WorldConfig(seed=0), per_class=a.per_class)
        clip_path = os.path.join(tmp, "open_clip")
        with contextlib.redirect_stdout(io.StringIO()):
            assert tiny_main(["--family", "open_clip", "--out", clip_path, "--seed", "0"]) == 0
        clip = load_model("clip", clip_path, device="cpu")
        cls = os.path.join(tmp, "classification")
        ev = EvalSetArguments(concept="clock", forget_images=os.path.join(cls, "val", "clock"),
                              retain_folder=os.path.join(cls, "val"), templates=["a photo containing a {}."])
        sets = build_sets(ev)
        params = dict(clip.model.named_parameters())
        torch.manual_seed(0)
        names = {t: next(n for n, q in params.items() if eligible(n, q.shape) and tower_of(n) == t)
                 for t in ("vision", "text")}
        grads = {n: torch.randn_like(params[n]) * params[n].detach().norm() / params[n].numel() ** 0.5
                 for n in names.values()}
        editor = LayerEditor(clip.model, grads)
        plan = [(names[("vision", "text")[k % 2]], ("vision", "text")[k % 2], 0.05 * (1 + k // 2))
                for k in range(a.trials)]
        times: dict[str, list[float]] = {"original": [], "ours": []}
        walls: dict[str, list[float]] = {"original": [], "ours": []}
        scores: dict[str, list] = {}
        for _ in range(a.runs):
            for side in ("original", "ours"):
                got = []
                t, w = time.process_time(), time.perf_counter()
                if side == "ours":  # its reference evaluation, once per search, is counted
                    evaluator = Evaluator(clip, list(sets.values()), ev.templates)
                    evaluator.evaluate()
                for name, tower, lam in plan:
                    editor.apply(name, lam)
                    got.append(naive_evaluate(clip, list(sets.values()), ev.templates) if side == "original"
                               else evaluator.evaluate(changed=tower))
                    editor.restore(name)
                times[side].append(time.process_time() - t)
                walls[side].append(time.perf_counter() - w)
                scores[side] = got
        grad_bytes_ours = sum(q.numel() * 4 for n, q in params.items() if eligible(n, q.shape))
        grad_bytes_orig = 2 * sum(q.numel() * 4 for q in params.values())
    identical = scores["original"] == scores["ours"]
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["original"] / med["ours"]
    print(f"SLUG search, {a.trials} trials on {sum(len(s.images) for s in sets.values())} images, {a.threads} "
          f"thread(s), {a.runs} runs (CPU s, median): original (everything re-encoded) {med['original']:.2f}  ours "
          f"(pixels kept, the untouched tower reused) {med['ours']:.2f}  ratio {ratio:.2f}x; scores identical: "
          f"{identical}; gradient storage {grad_bytes_orig / 2**20:.1f} MB -> {grad_bytes_ours / 2**20:.1f} MB")
    assert identical
    from _bench import result

    result("slug_search", ratio, identical, a.threads, wall_ratio=round(statistics.median(walls["original"]) /
                                                                        statistics.median(walls["ours"]), 4),
           grad_mb_original=round(grad_bytes_orig / 2**20, 2), grad_mb_ours=round(grad_bytes_ours / 2**20, 2))
    return {"median": med, "times": times, "identical": identical, "ratio": ratio,
            "grad_mb": {"original": grad_bytes_orig / 2**20, "ours": grad_bytes_ours / 2**20}}


if __name__ == "__main__":
    main()
