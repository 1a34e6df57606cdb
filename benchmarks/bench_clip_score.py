"""EFUF's sliding-window CLIP score ("fine text, fine image"): the original per-image loop against our batched
``insight.clip.WindowScorer``, on the same images and objects, with a tiny CLIP built in-process.

    python benchmarks/bench_clip_score.py [--backend open_clip|clip] [--images 48] [--naive per_image|per_object]

The naive side is a straight port of the structure of EFUF's ``insight/clip.py`` (``CaptionFTFIData.__getitem__``
+ ``ClipInfer.infer_caption_FTFI``), written afresh: for each image, tile it into ``ceil(size / patch)`` patches,
slice every ``window``×``window``-patch crop at a stride of one patch out of the pixel array (edge crops are
partial), count in an int mask how many windows cover each patch, run the full CLIP model (processor call +
``model(...)`` → ``logits_per_image``) on all crops and the object prompts, then spread the window scores back to
patches with a Python double loop, divide by the mask and take the mean of the top-k patch scores. An image with
fewer than ``window`` (ceil) patches in a dimension, i.e. at most (window-1)·patch px, gives no score.

``--naive per_image`` (default) is what the original does: one processor call and one CLIP forward per image, over
all its crops × all its object prompts. ``--naive per_object`` re-runs that forward once per object (crops and the
one prompt re-encoded every time), i.e. the per-object variant of the same loop.

Ours: ``WindowScorer.score_images`` on all images at once (crops of many images in one batch, each distinct
object text encoded once, window→patch spreading as one matrix product).

Checks that every score agrees (atol 1e-5) and that "no score" falls in the same places, then prints both times
and the ratio. ``main(argv)`` returns ``{naive_s, ours_s, ratio, max_abs_diff}``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_bench.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

VOCAB = ("cat", "dog", "red car", "person", "tennis racket", "umbrella", "giraffe", "dining table", "[kite]",
         "bicycle", "traffic light", "teddy bear", "wooden bench", "pizza")
PROMPT_PREFIX = "A photo containing "  # the original's --clip_prompt; it appends the object and "."


# ------------------------------------------------------------------------------------------ the original, ported
class NaiveFTFI:
    """One image at a time, as EFUF's CaptionFTFIData + ClipInfer.infer_caption_FTFI."""

    def __init__(self, clip, patch_size: int, window_size: int, average_top_k: int, per_object: bool = False):
        self.clip, self.patch, self.window, self.k = clip, patch_size, window_size, average_top_k
        self.per_object = per_object

    @staticmethod
    def format_prompt(obj: str) -> str:
        if len(obj.split(" ")) > 10:
            return ""
        return PROMPT_PREFIX + obj.replace("[", "").replace("]", "") + "."

    def get_item(self, image, objects):
        """crops (numpy slices), object prompts and the coverage mask, or None when no window fits."""
        object_descs = [self.format_prompt(o.strip("[]")) for o in objects]
        image = np.asarray(image)  # H, W, C
        crops = []
        num_patches = (np.asarray(image.shape[:2]) + self.patch - 1) // self.patch
        patch_mask = torch.zeros(*num_patches, dtype=torch.int32)
        window_pixel = self.window * self.patch
        for w in range(num_patches[0] - self.window + 1):
            w_p = w * self.patch
            for h in range(num_patches[1] - self.window + 1):
                h_p = h * self.patch
                crops.append(image[w_p:w_p + window_pixel, h_p:h_p + window_pixel])
                patch_mask[w:w + self.window, h:h + self.window] += 1
        if not crops:
            return None
        return crops, object_descs, patch_mask

    def logits_per_image(self, crops, texts) -> torch.Tensor:
        """The processor call + full CLIP forward the original runs: [crops, texts] = scale · cosine."""
        clip = self.clip
        if clip.backend == "hf":
            inputs = clip.processor(text=list(texts), images=list(crops), return_tensors="pt", padding=True)
            return clip.model(**inputs)["logits_per_image"]
        from PIL import Image

        pixels = torch.stack([clip._preprocess(Image.fromarray(c)) for c in crops])
        image_f, text_f, scale = clip.model(pixels, clip._tokenizer(list(texts)))[:3]
        return scale * image_f @ text_f.T

    @torch.no_grad()
    def score(self, images, objects) -> list[list[float | None]]:
        out = []
        for image, objs in zip(images, objects):
            item = self.get_item(image, objs)
            if item is None:
                out.append([None] * len(objs))
                continue
            crops, descs, mask = item
            if self.per_object:
                results = torch.cat([self.logits_per_image(crops, [d]) for d in descs], dim=1)
            else:
                results = self.logits_per_image(crops, descs)
            results = results.reshape(*(torch.tensor(mask.shape) - self.window + 1), -1)
            patch_score = torch.zeros(*mask.shape, results.shape[-1])
            for w in range(results.shape[0]):
                for h in range(results.shape[1]):
                    patch_score[w:w + self.window, h:h + self.window] += results[w, h]
            patch_score = (patch_score / mask.unsqueeze(2).expand(-1, -1, results.shape[-1])).permute(2, 0, 1)
            scores = []
            for s in patch_score:
                s = s.reshape(-1)
                scores.append(s[s.topk(self.k)[1]].mean().item())
            out.append(scores)
        return out


# ------------------------------------------------------------------------------------------ data
def make_data(n: int, width: int, height: int, patch: int, window: int, seed: int):
    """``n`` smooth random RGB images of varied sizes around width×height and 3–6 objects each from a small
    vocabulary (texts repeat across images). Two in eight images have fewer than ``window`` patches in one dimension
    (at most (window-1)·patch px, as patches are counted with ceil): no window fits, no score."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = (window - 1) * patch  # the largest side with fewer than `window` (ceil) patches
    images, objects = [], []
    for i in range(n):
        w = int(rng.integers(int(width * 0.6), int(width * 1.3) + 1))
        h = int(rng.integers(int(height * 0.6), int(height * 1.3) + 1))
        if i % 8 == 3:
            h = int(rng.integers(max(8, small // 2), small + 1))
        elif i % 8 == 6:
            w = int(rng.integers(max(8, small // 2), small + 1))
        coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        noise = rng.integers(-20, 21, (h, w, 3))
        images.append(Image.fromarray(np.clip(np.asarray(im, dtype=np.int64) + noise, 0, 255).astype(np.uint8)))
        k = int(rng.integers(3, 7))
        objects.append([VOCAB[j] for j in rng.choice(len(VOCAB), size=k, replace=False)])
    return images, objects


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["open_clip", "clip"], default="open_clip",
                   help="tiny checkpoint family: open_clip, or clip (HF CLIPModel)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--patch_size", type=int, default=24)
    p.add_argument("--window_size", type=int, default=4)
    p.add_argument("--average_top_k", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--naive", choices=["per_image", "per_object"], default="per_image")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers preparing crops for our side "
                   "(insight/clip.py's --num_workers; 0: in-process)")
    p.add_argument("--arch", default="tiny", help="tiny (the test-size CLIP) or an open_clip architecture name, "
                   "e.g. ViT-B-32 (EFUF's CLIP), built with random weights (nothing is downloaded)")
    p.add_argument("--repeat", type=int, default=3, help="timings are the medians of this many runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing (0: leave as is); the "
                   "tiny model's ops are too small to gain from threads, which only add noise on a shared machine")
    a = p.parse_args(argv)
    # the original hands read-only numpy crops to the HF processor, which warns once about it
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        return _run(a)
    finally:
        torch.set_num_threads(threads)


def _run(a: argparse.Namespace) -> dict:
    from common.models import load_model
    from common.tiny import write_tiny
    from insight.clip import WindowScorer, window_layout

    images, objects = make_data(a.images, a.width, a.height, a.patch_size, a.window_size, a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if a.arch == "tiny":
            write_tiny(a.backend, os.path.join(tmp, a.backend), seed=a.seed)
        else:
            import open_clip

            from common.models.clip import save_open_clip

            torch.manual_seed(a.seed)
            cfg = open_clip.get_model_config(a.arch)
            save_open_clip(open_clip.CLIP(**cfg), cfg, os.path.join(tmp, a.backend))
        clip = load_model("clip", os.path.join(tmp, a.backend), device="cpu")
    naive = NaiveFTFI(clip, a.patch_size, a.window_size, a.average_top_k, per_object=a.naive == "per_object")

    def ours_run():
        scorer = WindowScorer(clip, a.patch_size, a.window_size, a.average_top_k, batch_size=a.batch_size)
        if not a.workers:
            return scorer.score_images(images, objects)
        # as insight/clip.py runs it: worker processes crop and preprocess while the main process encodes
        chunk = max(1, len(images) // (2 * a.workers))
        loader = torch.utils.data.DataLoader(images, batch_size=chunk, num_workers=a.workers,
                                             collate_fn=lambda ims: [scorer.prepare(im) for im in ims])
        out = []
        for i, prepared in enumerate(loader):
            out += scorer.score_prepared(prepared, objects[i * chunk:(i + 1) * chunk])
        return out

    # warm-up (first-call allocations, lazy imports) on one image each, outside the timings
    naive.score(images[:1], objects[:1])
    WindowScorer(clip, a.patch_size, a.window_size, a.average_top_k).score_images(images[:1], objects[:1])

    from _bench import Timings

    t = Timings()
    for _ in range(max(1, a.repeat)):
        with t.measure("original"):
            want = naive.score(images, objects)
        with t.measure("ours"):
            got = ours_run()
    naive_s, ours_s = t.median("original"), t.median("ours")  # CPU seconds, medians

    max_diff, n_scored, n_none = 0.0, 0, 0
    assert len(got) == len(want) == len(images)
    for i, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w) == len(objects[i]), f"image {i}: {len(g)} vs {len(w)} scores"
        for j, (x, y) in enumerate(zip(g, w)):
            assert (x is None) == (y is None), f"image {i} object {objects[i][j]!r}: ours {x} vs original {y}"
            if x is None:
                n_none += 1
                continue
            n_scored += 1
            assert math.isfinite(x), f"image {i} object {j}: {x}"
            max_diff = max(max_diff, abs(x - y))
    assert max_diff <= 1e-5, f"scores differ by {max_diff}"
    assert n_scored > 0 and n_none > 0, "the data must hold both scored and unscored objects"

    n_windows = sum(len(window_layout(im.height, im.width, a.patch_size, a.window_size)[0]) for im in images)
    ratio = t.ratio()
    print(f"backend {a.backend} ({clip.backend}); {a.images} images ~{a.width}x{a.height}, patch {a.patch_size}, "
          f"window {a.window_size}, top-k {a.average_top_k}; {n_windows} windows, "
          f"{sum(map(len, objects))} objects ({len(set(o for objs in objects for o in objs))} distinct texts), "
          f"{n_none} without a score")
    print(f"original ({a.naive}) vs ours (WindowScorer), {torch.get_num_threads()} thread(s): {t.line()}")
    print(f"max |diff|: {max_diff:.2e}   (None in the same {n_none} places)")
    from _bench import result

    result("clip_score", t.ratio(), max_diff <= 1e-5, torch.get_num_threads(), wall_ratio=round(t.ratio(kind="wall"), 4),
           max_abs_diff=max_diff, windows=n_windows)
    return {"naive_s": naive_s, "ours_s": ours_s, "ratio": ratio, "max_abs_diff": max_diff}


if __name__ == "__main__":
    main()
