"""Build EFUF's unlearning data: ``pos_neg.json`` and ``sentences.json``, in the original format.

    python finetune/format_data.py --scores_path dataset/clip_scores.jsonl \
        --pos_neg_data_path dataset/pos_neg.json --sentence_data_path dataset/sentences.json

``pos_neg.json`` is a flat list with one entry per scored object:
``{"image": file name, "sentence": caption cut at the end of the sub-sentence holding the object,
"position": char offset where that sub-sentence starts, "score": CLIP score}`` — the target is
``sentence[position:]`` and everything before it is context. No label is stored: the thresholds are applied when
training loads the file, so the released efuf-unlearning-30k files and ours are interchangeable.
``sentences.json``: one entry per caption whose objects all have scores: ``{"image", "sentence", "mean", "min"}``.

Each object counts once per caption (EFUF's unit: its objects are a set per caption), at its first mention: a
repeated object (same ``category``, or the same text case-insensitively) is skipped, also in ``sentences.json``'s
mean and min. Sub-sentences are the pieces between ``,.;!?:`` runs. The object's sub-sentence is the one containing its
character position (from insight/object.py); without a position, the first piece holding the object as a whole
word (the original took the first piece holding it as any substring: "cat" matched "category").
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from common.errors import LetheError, cli_main, run_cli

SUBSENTENCE_SPLIT = re.compile(r"[,.;!?:]+")


@dataclass
class FormatArguments:
    scores_path: str = field(default="dataset/clip_scores.jsonl", metadata={"help": "insight/clip.py output"})
    pos_neg_data_path: str = field(default="dataset/pos_neg.json")
    sentence_data_path: str = field(default="dataset/sentences.json")


def subsentences(caption: str) -> list[tuple[int, int]]:
    """(start, end) char spans of the pieces between punctuation runs (as ``re.split("[,.;!?:]+")``)."""
    spans, last = [], 0
    for m in SUBSENTENCE_SPLIT.finditer(caption):
        spans.append((last, m.start()))
        last = m.end()
    spans.append((last, len(caption)))
    return spans


def find_subsentence(caption: str, obj: str, position: int | None = None) -> tuple[int, int] | None:
    spans = subsentences(caption)
    if position is not None:
        for a, b in spans:
            if a <= position < b:
                return a, b
        return None
    word = re.compile(r"\b" + re.escape(obj) + r"\b")
    for a, b in spans:
        if word.search(caption, a, b):
            return a, b
    return None


def format_rows(rows: Iterable[dict[str, Any] | tuple[int, dict[str, Any]]],
                source: str = "<rows>") -> tuple[list[dict], list[dict]]:
    """Rows of insight/clip.py's output (or ``(line number, row)`` pairs, for errors that name the file line)
    → (pos_neg entries, sentences entries)."""
    pos_neg, sentences = [], []
    for n, item in enumerate(rows, 1):
        n, row = item if isinstance(item, tuple) else (n, item)
        try:
            caption, image, objects, scores = row["caption"], row["image"], row["objects"], row["scores"]
        except KeyError as e:
            raise LetheError(f"{source}:{n}: missing field {e.args[0]!r}") from None
        if len(objects) != len(scores):
            raise LetheError(f"{source}:{n}: {len(objects)} objects but {len(scores)} scores")
        if not objects:
            continue
        seen: set[str] = set()
        kept: list[float | None] = []
        for obj, score in zip(objects, scores):
            text = obj["text"] if isinstance(obj, dict) else str(obj)
            key = (obj.get("category") if isinstance(obj, dict) else None) or text.lower()
            if key in seen:
                continue
            seen.add(key)
            kept.append(score)
            if score is None:
                continue
            start = obj.get("start") if isinstance(obj, dict) else None
            span = find_subsentence(caption, text, start)
            if span is None:
                continue
            pos_neg.append({"image": image, "sentence": caption[:span[1]], "position": span[0],
                            "score": float(score)})
        if all(s is not None for s in kept):
            sentences.append({"image": image, "sentence": caption, "mean": float(statistics.fmean(kept)),
                              "min": float(min(kept))})
    return pos_neg, sentences


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import parse_args
    from common.io import atomic_write_json, iter_jsonl_numbered

    (a,) = parse_args([FormatArguments], argv)
    pos_neg, sentences = format_rows(iter_jsonl_numbered(a.scores_path), a.scores_path)
    atomic_write_json(a.pos_neg_data_path, pos_neg, indent=None)
    atomic_write_json(a.sentence_data_path, sentences, indent=None)
    print(f"{len(pos_neg)} objects -> {a.pos_neg_data_path}; {len(sentences)} captions -> {a.sentence_data_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
