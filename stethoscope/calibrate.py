"""Calibrate the hallucination warning: the visual contribution of object tokens, on data with object annotations.

    python -m stethoscope.calibrate --toy                       # the toy LLaVA on the toy world's val images
    python -m stethoscope.calibrate --model llava --llava_path P --data coco --output_dir out   # COCO layout
    python -m stethoscope.calibrate --model llava --llava_path P --image_dir val2014 \\
        --annotations annotations/instances_val2014.json [--synonyms synonyms.txt] --num_images 500

The model describes each image (greedy); every object word of its captions (CHAIR's matcher) is *correct* when the
image's annotations hold its category, else *hallucinated*. For the first token of each object word, the visual
contribution VC = agg(relevancy of the image tokens) / agg(relevancy of the question and previous-answer tokens)
at an LLM layer (agg = max, sum or mean: Stethoscope's three modes), of the cumulative relevancy after that layer
(Stethoscope's) or of what that layer adds to it. The images are split in two (seeded): on the first half the
kind, mode and layer whose VC best separates hallucinated from correct tokens (ROC AUC of −VC) and the threshold
(Youden's J) are chosen; the second half measures them. Written: ``OUT/summary.json``
``{"auroc", "threshold", "n_tokens", "mode", "layer", ...}`` (AUROC and counts of the held-out half) and
``OUT/tokens.jsonl`` (every scored token), both atomically; the app reads the threshold from it. Captions and
scored images are appended to ``OUT/captions.jsonl`` / ``OUT/scored.jsonl`` as they are made: a killed run resumes
where it stopped (``--restart`` starts over; so does a change of model, prompt or captions).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
import random
from pathlib import Path
from typing import Any, Sequence

import torch

from common.errors import LetheError, cli_main, run_cli

MODES = ("max", "sum", "mean")
#: cumulative: the relevancy after LLM layer l (Stethoscope's maps); layer: what layer l adds to it
KINDS = ("cumulative", "layer")
EPS = 1e-12


def increments(x: torch.Tensor) -> torch.Tensor:
    """Per-layer increments of cumulative relevancy rows [L, n]: row l minus row l-1 (row 0 as is)."""
    return x - torch.cat([torch.zeros_like(x[:1]), x[:-1]])


def vc_table(rel) -> dict[str, list[float]]:
    """``{"kind:mode": [VC at each LLM layer]}`` of one token's relevancy (:class:`TokenRelevancy`)."""
    out = {}
    for kind in KINDS:
        parts = (rel.image, rel.question, rel.previous)
        if kind == "layer":
            parts = tuple(increments(x) for x in parts)
        img, q, p = parts
        for mode in MODES:
            out[f"{kind}:{mode}"] = [visual_contribution(img[l], q[l], p[l], mode) for l in range(img.shape[0])]
    return out


def visual_contribution(image: torch.Tensor, question: torch.Tensor, previous: torch.Tensor, mode: str) -> float:
    """VC of one token at one layer: agg(image relevancy) / agg(question ⊕ previous-answer relevancy)."""
    text = torch.cat([question, previous])
    if mode == "max":
        num, den = image.max() if image.numel() else 0.0, text.max() if text.numel() else 0.0
    elif mode == "sum":
        num, den = image.sum(), text.sum()
    elif mode == "mean":
        num, den = image.mean() if image.numel() else 0.0, text.mean() if text.numel() else 0.0
    else:
        raise LetheError(f"unknown visual-contribution mode {mode!r}; valid: {', '.join(MODES)}")
    return float(num) / (float(den) + EPS)


def token_spans(tokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character span of each token in ``tokenizer.decode(ids)``, from cumulative decoding (works for every
    tokenizer, byte-level or SentencePiece, without offsets)."""
    spans, prev = [], 0
    for k in range(len(ids)):
        end = len(tokenizer.decode(list(ids[:k + 1])))
        spans.append((prev, max(prev, end)))
        prev = max(prev, end)
    return spans


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def youden_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The VC at or below which a token is flagged, maximising TPR − FPR of "hallucinated" (ties: the lower VC)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, [-s for s in scores])
    best = max(range(len(thr)), key=lambda i: (tpr[i] - fpr[i], -i))
    return float(-thr[best]) if thr[best] != float("inf") else float(max(scores))


def score_caption(explainer, image, prompt: str, caption: str, extractor, truth: set[str]) -> list[dict[str, Any]]:
    """One row per object word of the caption: its first token's VC at every layer and mode, and its label."""
    if not extractor.mentions(caption):
        return []
    tr = explainer.trace(image, prompt, caption)
    text = explainer.vlm.tokenizer.decode(tr.answer_ids)  # the spans are taken in what was tokenized
    spans = token_spans(explainer.vlm.tokenizer, tr.answer_ids)
    rows = []
    for m in extractor.mentions(text):
        k = next((i for i, (a, b) in enumerate(spans) if b > m.start), None)  # the token the word starts in
        if k is None:
            continue
        vc = vc_table(explainer.explain(tr, k))
        rows.append({"word": m.text, "category": m.category, "token": k, "token_text": tr.answer_text[k],
                     "hallucinated": int(m.category not in truth), "vc": vc})
    return rows


def choose(rows: list[dict[str, Any]]) -> tuple[str, int, float]:
    """(``kind:mode``, layer, AUROC) whose VC best separates hallucinated tokens (low VC) from correct ones."""
    labels = [r["hallucinated"] for r in rows]
    best = None
    for key in rows[0]["vc"]:
        for layer in range(len(rows[0]["vc"][key])):
            a = auroc([-r["vc"][key][layer] for r in rows], labels)
            if a == a and (best is None or a > best[2]):
                best = (key, layer, a)
    if best is None:
        raise LetheError("the calibration half has no hallucinated or no correct object token: use more images")
    return best


def calibrate(rows_by_image: list[list[dict[str, Any]]], seed: int = 0) -> dict[str, Any]:
    order = list(range(len(rows_by_image)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    cal = [r for i in order[:half] for r in rows_by_image[i]]
    held = [r for i in order[half:] for r in rows_by_image[i]]
    if not cal or not held:
        raise LetheError("too few object words to calibrate (need some in both halves of the images)")
    mode, layer, cal_auc = choose(cal)
    thr = youden_threshold([r["vc"][mode][layer] for r in cal], [r["hallucinated"] for r in cal])
    scores = [r["vc"][mode][layer] for r in held]
    labels = [r["hallucinated"] for r in held]
    flagged = [s <= thr for s in scores]  # at or below the threshold: warn
    tp = sum(f and y for f, y in zip(flagged, labels))
    return {"auroc": auroc([-s for s in scores], labels), "threshold": thr, "n_tokens": len(held),
            "n_hallucinated": sum(labels), "mode": mode, "layer": layer, "calibration_auroc": cal_auc,
            "calibration_tokens": len(cal), "flag_precision": tp / max(1, sum(flagged)),
            "flag_recall": tp / max(1, sum(labels)), "seed": seed}


def build_parser() -> argparse.ArgumentParser:
    from common.args import one_line_errors

    p = argparse.ArgumentParser(prog="python -m stethoscope.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--toy", action="store_true", help="the toy LLaVA on the toy world's val split")
    add_model_arguments(p)
    p.add_argument("--data", default=None, help="a COCO-layout root: annotations/instances_{split}[2014].json and "
                   "images/{split}/ or {split}2014/ (sets --annotations and --image_dir)")
    p.add_argument("--split", default="val")
    p.add_argument("--image_dir", default=None)
    p.add_argument("--annotations", default=None, help="COCO instances json of the images")
    p.add_argument("--synonyms", default=None, help="CHAIR synonyms file (default: COCO's)")
    p.add_argument("--num_images", type=int, default=300)
    p.add_argument("--captions_file", default=None,
                   help="score these captions (evaluate/eval_caption.py's jsonl) instead of generating new ones")
    p.add_argument("--prompt", default="Please describe the image.")
    p.add_argument("--max_new_tokens", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore what an earlier run in --output_dir wrote")
    p.add_argument("--output_dir", default=None, help="default: results/stethoscope_toy with --toy")
    return one_line_errors(p)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --model_path (also the EFUF-style --{family}_path) and --device, for the stethoscope CLIs."""
    from common.models import FAMILIES

    p.add_argument("--model", default="llava", choices=[f for f in FAMILIES if f != "clip"])
    p.add_argument("--model_path", default=None, help="also --{model}_path")
    for fam in FAMILIES:
        p.add_argument(f"--{fam}_path", dest="model_path", help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto")


@cli_main
def main(argv: list[str] | None = None) -> int:
    import sys

    from common.io import append_jsonl, atomic_write_json, atomic_write_jsonl, load_image
    from common.models import load_model
    from evaluate.chair import chair_extractor

    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if a.toy:
        a.model_path = a.model_path or "checkpoints/toy/llava"
        a.image_dir = a.image_dir or "dataset/toy/images/val"
        a.annotations = a.annotations or "dataset/toy/annotations/instances_val.json"
        a.synonyms = a.synonyms or "dataset/toy/synonyms.txt"
        a.output_dir = a.output_dir or "results/stethoscope_toy"
    if a.data:
        root = Path(a.data)
        ann = [root / "annotations" / f"instances_{a.split}{y}.json" for y in ("", "2014", "2017")]
        img = [root / "images" / a.split, root / f"{a.split}2014", root / f"{a.split}2017", root / "images"]
        a.annotations = a.annotations or next((str(x) for x in ann if x.is_file()), None)
        a.image_dir = a.image_dir or next((str(x) for x in img if x.is_dir()), None)
        if not a.annotations or not a.image_dir:
            raise LetheError(f"--data {root}: no annotations/instances_{a.split}*.json or image folder found")
    for flag in ("model_path", "image_dir", "annotations", "output_dir"):
        if not getattr(a, flag):
            raise LetheError(f"--{flag} is required (or --toy)")
    truth = coco_truth(a.annotations)
    files = sorted(p for p in Path(a.image_dir).iterdir() if p.name in truth)[:a.num_images]
    if not files:
        raise LetheError(f"{a.image_dir}: no image named in {a.annotations}")
    extractor = chair_extractor("canonical", a.synonyms, default_merges=a.synonyms is None)
    vlm = load_model(a.model, a.model_path, dtype="float32", device=a.device, attn_implementation="eager")
    if a.captions_file:
        from evaluate.chair import read_captions

        given = {Path(c.image).name: c.caption for c in read_captions(a.captions_file) if c.image}
        files = [f for f in files if f.name in given]
        if not files:
            raise LetheError(f"{a.captions_file}: no caption of an image in {a.image_dir}")
    out = Path(a.output_dir)
    captions_log, scored_log = start_or_resume(out, a)
    images = {p.name: load_image(p) for p in files}
    if a.captions_file:
        captions = {p.name: given[p.name] for p in files}
    else:
        captions = {r["image"]: r["caption"] for r in read_log(captions_log)}
        todo = [p.name for p in files if p.name not in captions]
        if len(todo) < len(files):
            print(f"resuming: {len(files) - len(todo)} captions already in {captions_log}")
        step = max(1, a.batch_size) * 4
        for s in range(0, len(todo), step):  # appended chunk by chunk: a killed run keeps what it wrote
            chunk = todo[s:s + step]
            caps = vlm.generate([images[n] for n in chunk], [a.prompt] * len(chunk),
                                max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, progress=True)
            append_jsonl(captions_log, [{"image": n, "caption": c} for n, c in zip(chunk, caps)])
            captions.update(zip(chunk, caps))
    from tqdm.auto import tqdm

    from stethoscope.relevancy import Explainer

    explainer = Explainer(vlm)
    scored = {r["image"]: r["rows"] for r in read_log(scored_log)}
    if scored:
        print(f"resuming: {len(scored)} images already scored in {scored_log}")
    for p in tqdm([p for p in files if p.name not in scored], desc="object tokens", unit="image"):
        rows = score_caption(explainer, images[p.name], a.prompt, captions[p.name], extractor, truth[p.name])
        for r in rows:
            r["image"] = p.name
        append_jsonl(scored_log, [{"image": p.name, "rows": rows}])
        scored[p.name] = rows
    rows_by_image = [scored[p.name] for p in files]
    summary = calibrate(rows_by_image, a.seed)
    summary.update(model=a.model, model_path=a.model_path, images=len(files))
    atomic_write_jsonl(out / "tokens.jsonl", [r for rows in rows_by_image for r in rows])
    atomic_write_json(out / "summary.json", summary)
    print(f"visual contribution ({summary['mode']}, LLM layer {summary['layer']}): AUROC {summary['auroc']:.3f} on "
          f"{summary['n_tokens']} held-out object tokens ({summary['n_hallucinated']} hallucinated; calibration "
          f"AUROC {summary['calibration_auroc']:.3f}); warn at VC <= {summary['threshold']:.4g} -> {out}/summary.json")
    return 0


RUN_KEYS = ("model", "model_path", "prompt", "max_new_tokens", "captions_file", "synonyms")


def start_or_resume(out: Path, a: argparse.Namespace) -> tuple[Path, Path]:
    """The resumable logs of a run in ``out`` (``captions.jsonl``, ``scored.jsonl``): kept when ``out/run.json``
    records the same model, prompt and captions, else (or with ``--restart``) started over, saying so."""
    import json

    from common.io import atomic_write_json, read_json

    out.mkdir(parents=True, exist_ok=True)
    logs = out / "captions.jsonl", out / "scored.jsonl"
    settings = {k: getattr(a, k) for k in RUN_KEYS}
    run = out / "run.json"
    same = run.is_file() and json.dumps(read_json(run), sort_keys=True) == json.dumps(settings, sort_keys=True)
    if not same or a.restart:
        if any(p.exists() for p in logs):
            print(f"starting over in {out} ({'--restart' if a.restart else 'another model, prompt or captions'})")
        for p in logs:
            p.unlink(missing_ok=True)
        atomic_write_json(run, settings)
    return logs


def read_log(path: Path) -> list[dict]:
    """The finished rows of a resumable jsonl log (a line cut short by a kill is dropped first)."""
    from common.io import read_jsonl, repair_jsonl_tail

    if not path.is_file():
        return []
    repair_jsonl_tail(path)
    return read_jsonl(path)


def coco_truth(path: str | Path) -> dict[str, set[str]]:
    """file name -> category names of its annotations (COCO instances json)."""
    from common.io import read_json

    data = read_json(path)
    try:
        cats = {c["id"]: c["name"] for c in data["categories"]}
        names = {im["id"]: im["file_name"] for im in data["images"]}
        truth: dict[str, set[str]] = {n: set() for n in names.values()}
        for ann in data["annotations"]:
            truth[names[ann["image_id"]]].add(cats[ann["category_id"]])
    except (KeyError, TypeError) as e:
        raise LetheError(f"{path}: not a COCO instances file (missing {e})") from None
    return truth


if __name__ == "__main__":
    run_cli(main)
