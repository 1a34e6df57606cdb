"""CHAIR (and optionally word-level BLEU) of generated captions against COCO annotations.

    python evaluate/eval_auto.py --caption_eval_path caps.jsonl --coco_annotation_dir DIR --output_json chair.json

Captions: jsonl ``{"image_id", "image", "caption"}`` (``.txt`` EFUF ``image ### caption`` lines also work).
Writes the metrics to ``--output_json`` and one line per caption to ``<output stem>_details.jsonl`` beside it.
``--chair_variant canonical`` (default) is Rohrbach et al.'s chair.py; ``--chair_variant efuf`` is EFUF's
eval_auto.py (its synonym list and two-word merges, each object word once per caption).
An empty captions file (or ``--limit 0``) is an error, never a perfect-looking CHAIR of 0.0.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from pathlib import Path
from typing import Any, Sequence

from common.errors import LetheError
from common.text.objects import DEFAULT_SYNONYMS
from evaluate.chair import CHAIR_VARIANTS, chair_extractor, compute_bleu, compute_chair, load_ground_truth, \
    read_captions
from evaluate.cli import cli_main, parse_args
from common.io import atomic_write_json, atomic_write_jsonl
from evaluate.util import print_table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--caption_eval_path", required=True, help="generated captions (jsonl)")
    p.add_argument("--coco_annotation_dir", required=True, help="dir with instances_*.json and captions_*.json")
    p.add_argument("--output_json", required=True)
    p.add_argument("--details_jsonl", default=None, help="default: <output_json stem>_details.jsonl")
    p.add_argument("--limit", type=int, default=None, help="score only the first N captions (EFUF: 1600)")
    p.add_argument("--chair_variant", choices=CHAIR_VARIANTS, default="canonical",
                   help="canonical: Rohrbach et al.'s chair.py (its synonym list as is, its 29 two-word merges, every "
                        "mention counts); efuf: EFUF's eval_auto.py (its synonym list, items stripped; merges = every "
                        "multi-word synonym + 'home plate'/'train track'; each object word once per caption)")
    p.add_argument("--dedup_per_caption", action="store_true",
                   help="each object word counts once per caption (implied by --chair_variant efuf)")
    p.add_argument("--bleu", action="store_true", help="also word-level BLEU-1/2/4 against the COCO captions")
    p.add_argument("--synonyms", default=None,
                   help="vocabulary: one line per category, 'category, syn1, syn2, ...' "
                        "(default: the variant's COCO list)")
    p.add_argument("--no_default_merges", action="store_true",
                   help="canonical variant: drop the COCO two-word merges and the toilet-seat rule "
                        "(for a custom vocabulary)")
    p.add_argument("--extra_merges", nargs="*", default=[],
                   help="more two-word phrases kept as one token, e.g. 'coffee table'")
    return p


def score(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    captions = read_captions(args.caption_eval_path)
    if args.limit is not None:
        if args.limit < 1:
            raise LetheError(f"--limit {args.limit}: must be at least 1")
        captions = captions[: args.limit]
    extractor = chair_extractor(args.chair_variant, args.synonyms, default_merges=not args.no_default_merges,
                                extra_merges=args.extra_merges)
    dedup = args.dedup_per_caption or args.chair_variant == "efuf"
    gt = load_ground_truth(args.coco_annotation_dir, extractor, {c.image_id for c in captions})
    metrics, details = compute_chair(captions, extractor, gt.objects, dedup_per_caption=dedup)
    metrics["images_without_annotations"] = len({c.image_id for c in captions} - set(gt.objects))
    if args.bleu:
        bleu, per_caption = compute_bleu(captions, gt.references)
        metrics.update(bleu)
        for d, b in zip(details, per_caption):
            d["bleu"] = b
    synonyms = str(args.synonyms or DEFAULT_SYNONYMS)
    if args.chair_variant == "efuf" and not args.synonyms:
        synonyms += " + EFUF_EXTRA_SYNONYMS"
    metrics["settings"] = {
        "caption_eval_path": str(args.caption_eval_path), "annotation_files": gt.files,
        "chair_variant": args.chair_variant, "synonyms": synonyms, "dedup_per_caption": dedup,
        "default_merges": not args.no_default_merges, "extra_merges": list(args.extra_merges),
    }
    return metrics, details


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    metrics, details = score(args)
    out = Path(args.output_json)
    details_path = Path(args.details_jsonl) if args.details_jsonl else out.with_name(out.stem + "_details.jsonl")
    atomic_write_jsonl(details_path, details)
    atomic_write_json(out, metrics)
    keys = ["CHAIRs", "CHAIRi", "Recall", "Len", "num_captions", "object_mentions", "hallucinated_mentions"]
    keys += [k for k in ("BLEU-1", "BLEU-2", "BLEU-4") if k in metrics]
    print_table([[k, metrics[k]] for k in keys], ["metric", "value"], title=f"CHAIR: {args.caption_eval_path}")
    print(f"wrote {out} and {details_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
