"""Stethoscope: explaining every answer token the original's way against ours.

The original (LVLM-Stethoscope ``demo_meta.py``, the per-token loop of ``gradio_answer``: ``model.zero_grad()``,
``logits[k].backward(one_hot, retain_graph=True)``, ``compute_relevancy(k)`` from the ``retain_grad`` attention
maps) runs one full backward per answer token with the model's parameters requiring gradients, so every backward
also computes the weight gradients, eagerly for every token. Ours takes ``torch.autograd.grad`` of the token's
logit w.r.t. the attention maps only (``stethoscope.relevancy.Explainer``). The naive side here zeroes the maps'
retained gradients before each token (without that the original accumulates them over tokens, a bug we do not
time), so both sides must give the same maps (tolerance 1e-5); then their CPU times are compared (medians).

    python benchmarks/bench_stethoscope.py [--hidden 256] [--layers 4] [--answer_tokens 24] [--runs 3] [--threads 1]
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


def naive_all(ex, image, question: str, answer: str):
    """Every token the original's way: weight gradients on, one `.backward` per token, maps' grads read."""
    import torch

    from stethoscope.relevancy import gradcam, llm_rows

    for p in ex.vlm.model.parameters():
        p.requires_grad_(True)
    try:
        tr = ex.trace(image, question, answer)
        maps = tr.maps["llm"]
        for a in maps:
            a.retain_grad()
        out = []
        for k in range(len(tr.answer_ids)):
            ex.vlm.model.zero_grad()
            for a in maps:
                a.grad = None  # the fix the original lacks; without it token k sees tokens < k
            tr.logits[k, tr.answer_ids[k]].backward(retain_graph=True)
            cams = [gradcam(a.detach()[0], (a.grad if a.grad is not None else torch.zeros_like(a))[0])
                    for a in maps]
            out.append(llm_rows(cams, tr.predictor[k] + 1))
        return out
    finally:
        ex.vlm.model.zero_grad(set_to_none=True)
        for p in ex.vlm.model.parameters():
            p.requires_grad_(False)


def ours_all(ex, image, question: str, answer: str):
    tr = ex.trace(image, question, answer)
    return [r.full for r in ex.explain_all(tr)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--answer_tokens", type=int, default=24)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)

    import torch
    from PIL import Image

    from common.models import load_model
    from common.tiny import tiny_llava
    from stethoscope.relevancy import Explainer

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="bench_steth_") as tmp:
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model, proc = tiny_llava(hidden=a.hidden, layers=a.layers)
            model.save_pretrained(tmp)
            proc.save_pretrained(tmp)
            vlm = load_model("llava", tmp, dtype="float32", device="cpu", attn_implementation="eager")
    ex = Explainer(vlm)
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    words = "a red ball and a blue box beside a green tent under a yellow kite".split()
    answer = " ".join((words * 4)[:a.answer_tokens])
    times: dict[str, list[float]] = {"original": [], "ours": []}
    walls: dict[str, list[float]] = {"original": [], "ours": []}
    results = {}
    for _ in range(a.runs):
        for side, fn in (("original", naive_all), ("ours", ours_all)):
            t, w = time.process_time(), time.perf_counter()
            results[side] = fn(ex, image, "Describe the image.", answer)
            times[side].append(time.process_time() - t)
            walls[side].append(time.perf_counter() - w)
    same = len(results["original"]) == len(results["ours"]) and all(
        torch.allclose(x, y, atol=1e-5, rtol=0) for x, y in zip(results["original"], results["ours"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(q.numel() for q in vlm.model.parameters())
    print(f"relevancy of {len(results['ours'])} answer tokens, {n_params / 1e6:.1f} M-parameter LLaVA, {a.threads} "
          f"thread(s), {a.runs} runs (CPU s, median): original (backward with weight gradients per token) "
          f"{med['original']:.2f}  ours (gradients w.r.t. the maps only) {med['ours']:.2f}  ratio "
          f"{med['original'] / med['ours']:.2f}x; maps identical: {same}")
    assert same
    from _bench import result

    result("stethoscope", med["original"] / med["ours"], same, a.threads, tokens=len(results["ours"]),
           wall_ratio=round(statistics.median(walls["original"]) / statistics.median(walls["ours"]), 4))
    return {"median": med, "times": times, "identical": same, "tokens": len(results["ours"])}


if __name__ == "__main__":
    main()
