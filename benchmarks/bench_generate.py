"""Per-sample generation (how the original EFUF/STIC eval scripts generate) vs our batched generation.

    python benchmarks/bench_generate.py [--n 64] [--batch_size 16] [--max_new_tokens 24] [--family llava]

Both run in this process on the same tiny checkpoint, images and prompts; the outputs must be identical.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def naive_generate(vlm, images, prompts, max_new_tokens: int) -> list[str]:
    """The original scripts' loop: one processor call and one ``generate`` per sample."""
    outs = []
    with torch.inference_mode():
        for im, p in zip(images, prompts):
            inputs = vlm.processor(images=[im], text=[vlm.chat_prompt(p)], return_tensors="pt")
            seq = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                     pad_token_id=vlm.tokenizer.pad_token_id)
            outs.append(vlm.tokenizer.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="llava")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_new_tokens", type=int, default=24)
    a = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from common.models import load_model
    from common.tiny import write_tiny

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(a.n)]
    templates = ["Please describe the image.", "Is there a {} in the image?", "What color is the {}?",
                 "How many {}s are there in the picture?"]
    words = ["cat", "dog", "ball", "box", "kite", "cup", "train", "person"]
    prompts = [templates[i % 4].format(words[i % len(words)]) for i in range(a.n)]
    with tempfile.TemporaryDirectory() as d:
        vlm = load_model(a.family, str(write_tiny(a.family, Path(d) / a.family)), dtype="float32", device="cpu")
        naive_generate(vlm, images[:2], prompts[:2], 4)  # warm-up both paths
        vlm.generate(images[:2], prompts[:2], max_new_tokens=4)
        t0 = time.perf_counter()
        ref = naive_generate(vlm, images, prompts, a.max_new_tokens)
        t_naive = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = vlm.generate(images, prompts, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
        t_ours = time.perf_counter() - t0
    same = ref == ours
    print(f"{a.n} prompts, {a.family}, max_new_tokens={a.max_new_tokens}")
    print(f"per-sample loop : {t_naive:8.3f} s")
    print(f"batched (bs={a.batch_size:<3}): {t_ours:8.3f} s")
    print(f"speed-up        : {t_naive / t_ours:8.2f}x   identical outputs: {same}")
    assert same, "batched generation differs from the per-sample loop"
    return {"naive_s": t_naive, "ours_s": t_ours, "ratio": t_naive / t_ours, "identical": same}


if __name__ == "__main__":
    main()
