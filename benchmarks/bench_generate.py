"""Per-sample generation vs our batched generation.

The naive side reproduces EFUF's ``evaluate/eval_caption.py`` (LLaVA and mPLUG-Owl: one processor call and one
``generate`` per image; STIC's ``generate_pref.py`` loops the same way): here ``naive_generate``. Both run in this
process on the same tiny checkpoint, images and prompts, with a fixed thread count; the outputs must be identical.
Ours generates the prompts in order of length (batches of similar lengths pad little) and returns them in order.

    python benchmarks/bench_generate.py [--n 64] [--batch_size 32] [--max_new_tokens 64] [--family llava]
        [--runs 3] [--threads 1]

The ratio grows with the batch size and with the answer length (the per-token decoding is where batching pays;
the prompt's prefill gains less): on this 2-core machine, 1 thread, 64 prompts, medians of 3 runs, batch 16 / 32
gave 7.9x / 9.5x at 24 new tokens and 9.7x / 13.5x at 64 (EFUF's captions allow 200).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_bench.py

import torch  # noqa: E402


def naive_generate(vlm, images, prompts, max_new_tokens: int) -> list[str]:
    """The original scripts' loop: one processor call and one ``generate`` per sample."""
    outs = []
    with torch.inference_mode():
        for im, p in zip(images, prompts):
            inputs = vlm.processor(images=[im], text=[vlm.chat_prompt(p)], return_tensors="pt").to(vlm.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(vlm.model.dtype)
            seq = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                     pad_token_id=vlm.tokenizer.pad_token_id)
            outs.append(vlm.tokenizer.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="llava")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    ap.add_argument("--arch", default="tiny", help="tiny (the --family tiny checkpoint) or llava-1.5-7b (that "
                    "architecture with random weights in bf16; nothing downloaded)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--naive_n", type=int, default=0, help="time the per-sample loop on the first N prompts only and "
                    "scale its time to --n (0: all; for a 7B model on a GPU)")
    ap.add_argument("--image_size", type=int, default=48, help="side of the synthetic square images")
    ap.add_argument("--static_cache", action="store_true", help="ours with a static KV cache (compiled on a GPU)")
    a = ap.parse_args(argv)
    from _bench import Timings, build_llava, fix_threads, result

    threads = fix_threads(a.threads)

    import numpy as np
    from PIL import Image

    from common.models import load_model
    from common.tiny import write_tiny

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    side = a.image_size
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(a.n)]
    templates = ["Please describe the image.", "Is there a {} in the image?", "What color is the {}?",
                 "How many {}s are there in the picture?"]
    words = ["cat", "dog", "ball", "box", "kite", "cup", "train", "person"]
    prompts = [templates[i % 4].format(words[i % len(words)]) for i in range(a.n)]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    k = a.naive_n if 0 < a.naive_n < a.n else a.n
    with tempfile.TemporaryDirectory() as d:
        if a.arch == "tiny":
            vlm = load_model(a.family, str(write_tiny(a.family, Path(d) / a.family)), dtype="float32",
                             device=device)
        else:
            vlm = build_llava(a.arch, device, d)
        naive_generate(vlm, images[:2], prompts[:2], 4)  # warm-up both paths
        vlm.generate(images[:2], prompts[:2], max_new_tokens=4, static_cache=a.static_cache)
        counted = [0]  # new tokens ours generated (its ids, not a re-tokenization of the text)
        inner = vlm.model.generate

        def counting(**kw):
            seq = inner(**kw)
            counted[0] += int((seq[:, kw["input_ids"].shape[1]:] != vlm.tokenizer.pad_token_id).sum())
            return seq

        t = Timings()
        for _ in range(max(1, a.runs)):
            with t.measure("original"):
                ref = naive_generate(vlm, images[:k], prompts[:k], a.max_new_tokens)
                _sync(device)
            counted[0] = 0
            vlm.model.generate = counting
            with t.measure("ours"):
                ours = vlm.generate(images, prompts, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                                    static_cache=a.static_cache)
                _sync(device)
            vlm.model.generate = inner
    scale = a.n / k  # the per-sample loop's time is linear in the number of prompts
    for kind in ("cpu", "wall"):
        getattr(t, kind)["original"] = [x * scale for x in getattr(t, kind)["original"]]
    agree = sum(x == y for x, y in zip(ref, ours[:k])) / k
    same = agree == 1.0
    tokens = counted[0]
    print(f"{a.n} prompts, {a.arch if a.arch != 'tiny' else a.family} on {device}, max_new_tokens={a.max_new_tokens}, "
          f"batch {a.batch_size}, {threads} thread(s)" + (f"; the per-sample loop timed on {k} and scaled" if k < a.n
                                                          else ""))
    print(f"per-sample loop vs batched: {t.line()}; identical outputs: {same} ({100 * agree:.0f} % of {k})")
    if device == "cpu":  # float32 on the CPU: exactly the same tokens (bf16 on a GPU may break near-ties apart)
        assert same, "batched generation differs from the per-sample loop"
    tokens_per_s = tokens / t.median("ours", "wall")
    result("generate", t.ratio(kind="wall" if device != "cpu" else "cpu"), same, threads,
           wall_ratio=round(t.ratio(kind="wall"), 4), n=a.n, identical_fraction=round(agree, 4),
           tokens_per_s=round(tokens_per_s, 1), device=device, arch=a.arch)
    return {"naive_s": t.median("original", "wall"), "ours_s": t.median("ours", "wall"), "ratio": t.ratio(),
            "identical": same, "threads": threads, "tokens_per_s": tokens_per_s}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
