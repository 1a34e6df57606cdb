"""EFUF's sliding-window CLIP score ("fine text, fine image"): the original per-image loop against our batched
``insight.clip.WindowScorer``, on the same images and objects, with a tiny CLIP built in-process.

    python benchmarks/bench_clip_score.py [--backend open_clip|clip] [--images 48] [--naive per_image|per_object]
        [--preprocess tensor|pil] [--amp auto|bf16|fp16|off] [--real]

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

Ours: ``WindowScorer`` on all images at once (crops of many images in one batch, each distinct object text
encoded once, window→patch spreading as one matrix product), with ``--preprocess tensor`` (default: each image
decoded once to a uint8 tensor, windows cut as slices and resized per window size in one batched call) or ``pil``
(a PIL crop and the checkpoint's transform per window, as the original). Its preprocessing (decode + cut + resize
+ normalise, or PIL crops + transform) and encoding are timed apart: ``prep_share`` is the former's share of our
CPU time.

Checks that every score agrees with the original's (the PIL path: 1e-5; the tensor path: 2e-4 · logit_scale, and
2e-3 · logit_scale under autocast) and that "no score" falls in the same places. Then, untimed, the tensor path
against the PIL path on every image × each of COCO's 80 object names, from the same windows' features:
``max_abs_diff_pil_tensor`` and ``class_changes``, the fraction of those scores whose EFUF class (positive:
> norm_thres, hallucinated: < hal_thres, else unused) changes, with the thresholds at the 30 % / 60 % quantiles of
the PIL-path scores (random weights do not reach EFUF's 23 / 32, at which it is printed too). ``main(argv)``
returns ``{naive_s, ours_s, ratio, max_abs_diff, tolerance, prep_share, class_changes, max_abs_diff_pil_tensor}``.

``--real`` (EFUF's settings on ~640×480 images, ViT-B-32 with random weights, 8 images: 386 windows, 32 timed
objects, 480 agreement scores; one run per side, about 3 minutes at one thread) measured on a 2-core AMD EPYC
(Zen 4, AVX512-BF16), CPU seconds, tensor path in float32: the original 48.9 s, ours 48.0 s (medians of 3 runs,
1 thread: ratio 1.02×; one run at 2 threads: 1.11×), as both sides run the same float32 encoder over the same
windows (~96 % of the time; ours in batches of 256 instead of 64: 0.92×); ``prep_share`` 2.3 % (2.1 % at 2
threads); max diff 3.6e-4 (logit_scale 14.3); no class changes. Under ``--amp bf16`` ours takes 24.2 s (ratio
2.27×, ``prep_share`` 4.5 %), but its scores move by up to 1.1e-2 and 2.9 % of the classes change (random-weight
scores sit within a few hundredths of each other).
"""
from __future__ import annotations

import argparse
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
QUANTILES = (0.3, 0.6)  # hal / norm thresholds for the class-change count: random weights miss EFUF's 23 / 32 scale
EFUF_THRES = (23.0, 32.0)  # EFUF's hal_thres / norm_thres (finetune/data.py)
#: asserted max |score diff| / logit_scale (a cosine) of the tensor path (pixels within 1–2 uint8 levels of PIL's),
#: and under autocast; the PIL path sees the original's very pixels: 1e-5 absolute
TOL_TENSOR, TOL_AMP = 2e-4, 2e-3


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
            return clip.model(**inputs.to(clip.device))["logits_per_image"].float().cpu()
        from PIL import Image

        pixels = torch.stack([clip._preprocess(Image.fromarray(c)) for c in crops]).to(clip.device)
        image_f, text_f, scale = clip.model(pixels, clip._tokenizer(list(texts)).to(clip.device))[:3]
        return (scale * image_f @ text_f.T).float().cpu()

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


# ------------------------------------------------------------------------------------------ agreement
def tolerance(scorer) -> float:
    """The max |score diff| asserted for our side against the original, and for its path against the PIL path."""
    if scorer.amp == "off" and scorer.preprocess == "pil":
        return 1e-5
    return (TOL_TENSOR if scorer.amp == "off" else TOL_AMP) * scorer.clip.logit_scale.item()


def classes(scores: np.ndarray, hal_thres: float, norm_thres: float) -> np.ndarray:
    """EFUF's use of a score (finetune/data.py): 1 positive (> norm_thres), -1 hallucinated (< hal_thres), 0 unused."""
    return np.where(scores > norm_thres, 1, np.where(scores < hal_thres, -1, 0))


def agreement(ref: list[list[float | None]], got: list[list[float | None]], what: str) -> dict:
    """Max |score diff| and the fraction of objects whose class changes, ``got`` against the reference ``ref``
    (None in the same places), at thresholds on the 30 % / 60 % quantiles of the reference scores and at EFUF's
    fixed 23 / 32."""
    for i, (r, g) in enumerate(zip(ref, got)):
        assert [x is None for x in r] == [x is None for x in g], f"image {i}: None in different places ({what})"
    x = np.array([v for r in ref for v in r if v is not None])
    y = np.array([v for g in got for v in g if v is not None])
    assert len(x) and np.isfinite(y).all()
    hal, norm = np.quantile(x, QUANTILES)
    fixed = classes(x, *EFUF_THRES)
    return {"max_abs_diff": float(np.abs(x - y).max()), "n": len(x), "thresholds": (float(hal), float(norm)),
            "class_changes": float((classes(x, hal, norm) != classes(y, hal, norm)).mean()),
            "class_changes_fixed": float((fixed != classes(y, *EFUF_THRES)).mean()),
            "fixed_meaningful": len(set(fixed.tolist())) > 1}


# ------------------------------------------------------------------------------------------ main
#: ``--real``'s defaults: EFUF's settings on COCO-sized images with its CLIP's architecture (random weights); our
#: side encodes 64 windows at a time, as ViT-B-32 runs about 15 % faster per window on the CPU than at 256
REAL = {"arch": "ViT-B-32", "width": 640, "height": 480, "patch_size": 48, "window_size": 4, "average_top_k": 4,
        "images": 8, "repeat": 1, "batch_size": 64}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    p.add_argument("--preprocess", choices=["tensor", "pil"], default="tensor",
                   help="our side's window preprocessing (WindowScorer's; insight/clip.py's --preprocess)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="our side's image encoder under autocast; auto: WindowScorer's default (fp16 for the tensor "
                        "path on a GPU, so off here on the CPU); bf16 is fast on CPUs with bf16 units, fp16 is not")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers preparing crops for our side "
                   "(insight/clip.py's --num_workers; 0: in-process, the only way preprocessing is timed apart)")
    p.add_argument("--arch", default="tiny", help="tiny (the test-size CLIP) or an open_clip architecture name, "
                   "e.g. ViT-B-32 (EFUF's CLIP), built with random weights (nothing is downloaded)")
    p.add_argument("--real", action="store_true", help="EFUF's real size: defaults to " + " ".join(
        f"--{k} {v}" for k, v in REAL.items()) + " (about 1 min per timed side on one CPU thread)")
    p.add_argument("--repeat", type=int, default=3, help="timings are the medians of this many runs")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the ratio and preprocessing share then use wall time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing (0: leave as is); the "
                   "tiny model's ops are too small to gain from threads, which only add noise on a shared machine")
    if "--real" in argv:
        p.set_defaults(**REAL)
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
    from common.text.objects import load_synonyms
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
        clip = load_model("clip", os.path.join(tmp, a.backend), device=a.device)
    sync = torch.cuda.synchronize if clip.device.type == "cuda" else (lambda: None)
    kind = "cpu" if clip.device.type == "cpu" else "wall"  # on a GPU the host's CPU time says little
    naive = NaiveFTFI(clip, a.patch_size, a.window_size, a.average_top_k, per_object=a.naive == "per_object")

    def new_scorer():  # a fresh text cache per run, as a fresh insight/clip.py run has
        return WindowScorer(clip, a.patch_size, a.window_size, a.average_top_k, batch_size=a.batch_size,
                            preprocess=a.preprocess, amp=a.amp)

    from _bench import Timings

    t = Timings()
    last: dict = {}

    def ours_run():
        scorer = new_scorer()
        if not a.workers:
            with t.measure("prep"):  # decode (PIL → tensor) + cut + resize + normalise, or PIL crops + transform
                prepared = [scorer.prepare(im) for im in images]
                pixels = scorer.window_pixels(prepared)
                sync()
            with t.measure("encode"):
                last["features"] = scorer.encode_windows(pixels)
                sync()
            return scorer.score_features(last["features"], [avg for _, avg in prepared], objects)
        # as insight/clip.py runs it: worker processes decode (and with pil crop and preprocess) while the main
        # process encodes
        chunk = max(1, len(images) // (2 * a.workers))
        loader = torch.utils.data.DataLoader(images, batch_size=chunk, num_workers=a.workers,
                                             collate_fn=lambda ims: [scorer.prepare(im) for im in ims])
        out = []
        for i, prepared in enumerate(loader):
            out += scorer.score_prepared(prepared, objects[i * chunk:(i + 1) * chunk])
        return out

    # warm-up (first-call allocations, lazy imports) on one image each, outside the timings
    scorer = new_scorer()
    naive.score(images[:1], objects[:1])
    scorer.score_images(images[:1], objects[:1])

    for _ in range(max(1, a.repeat)):
        with t.measure("original"):
            want = naive.score(images, objects)
        with t.measure("ours"):
            got = ours_run()
    naive_s, ours_s = t.median("original", kind), t.median("ours", kind)  # CPU (GPU: wall) seconds, medians
    prep_share = t.median("prep", kind) / ours_s if not a.workers else None

    # ours against the original, object by object (the original is the PIL path: one transform call per crop)
    assert len(got) == len(want) == len(images)
    for i, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w) == len(objects[i]), f"image {i}: {len(g)} vs {len(w)} scores"
    vs_naive = agreement(want, got, "ours vs original")
    n_none = sum(x is None for g in got for x in g)
    assert vs_naive["n"] > 0 and n_none > 0, "the data must hold both scored and unscored objects"
    tol = tolerance(scorer)
    max_diff = vs_naive["max_abs_diff"]
    assert max_diff <= tol, f"scores differ by {max_diff} > {tol}"

    # the tensor path against the PIL path on every image × each of COCO's 80 object names: the same windows
    # encoded from PIL-preprocessed pixels (once, untimed) and scored from both feature sets
    coco = sorted(set(load_synonyms().values()))
    pairs = [coco] * len(images)
    pil = WindowScorer(clip, a.patch_size, a.window_size, a.average_top_k, batch_size=a.batch_size)

    def features(sc):  # every window's features, in-process
        return sc.encode_windows(sc.window_pixels([sc.prepare(im) for im in images]))

    ours_features = last["features"] if "features" in last else features(scorer)
    ref_features = ours_features if scorer.preprocess == "pil" and scorer.amp == "off" else features(pil)
    averaging = [window_layout(im.height, im.width, a.patch_size, a.window_size)[1] for im in images]
    vs_pil = agreement(pil.score_features(ref_features, averaging, pairs),
                       scorer.score_features(ours_features, averaging, pairs), "tensor vs PIL path")
    assert vs_pil["max_abs_diff"] <= tol, f"the tensor path's scores differ by {vs_pil['max_abs_diff']} > {tol}"

    n_windows = sum(len(window_layout(im.height, im.width, a.patch_size, a.window_size)[0]) for im in images)
    ratio = t.ratio(kind=kind)
    print(f"backend {a.backend} ({clip.backend}, {a.arch}); {a.images} images ~{a.width}x{a.height}, "
          f"patch {a.patch_size}, window {a.window_size}, top-k {a.average_top_k}; {n_windows} windows, "
          f"{sum(map(len, objects))} objects ({len(set(o for objs in objects for o in objs))} distinct texts), "
          f"{n_none} without a score")
    print(f"original ({a.naive}) vs ours (WindowScorer, {scorer.preprocess} preprocessing, autocast {scorer.amp}), "
          f"{torch.get_num_threads()} thread(s): {t.line()}")
    if prep_share is not None:
        print(f"our time: preprocessing {t.median('prep', kind):.3f} {kind} s ({prep_share:.1%}: decode + cut + "
              f"resize + normalise), encoding {t.median('encode', kind):.3f} {kind} s (medians)")
    print(f"max |diff| vs the original: {max_diff:.2e} (asserted <= {tol:.1e}; None in the same {n_none} places)")
    hal, norm = vs_pil["thresholds"]
    print(f"{scorer.preprocess} path (autocast {scorer.amp}) vs PIL path, {vs_pil['n']} image × COCO-name scores: "
          f"max |diff| {vs_pil['max_abs_diff']:.2e}; class changes {vs_pil['class_changes']:.2%} at hal/norm "
          f"thresholds {hal:.4f} / {norm:.4f} (the 30 % / 60 % quantiles of the PIL-path scores), "
          f"{vs_pil['class_changes_fixed']:.2%} at EFUF's fixed 23 / 32"
          + ("" if vs_pil["fixed_meaningful"] else " (not meaningful: every score falls in one class there)"))
    from _bench import result

    result("clip_score", ratio, max_diff <= tol, torch.get_num_threads(), wall_ratio=round(t.ratio(kind="wall"), 4),
           max_abs_diff=max_diff, windows=n_windows, preprocess=scorer.preprocess, amp=scorer.amp,
           prep_share=None if prep_share is None else round(prep_share, 4),
           class_changes=vs_pil["class_changes"], max_abs_diff_pil_tensor=vs_pil["max_abs_diff"], tolerance=tol,
           windows_per_s=round(n_windows / t.median("ours", "wall"), 1), device=clip.device.type, arch=a.arch)
    return {"naive_s": naive_s, "ours_s": ours_s, "ratio": ratio, "max_abs_diff": max_diff, "tolerance": tol,
            "prep_share": prep_share, "class_changes": vs_pil["class_changes"],
            "max_abs_diff_pil_tensor": vs_pil["max_abs_diff"]}


if __name__ == "__main__":
    main()
