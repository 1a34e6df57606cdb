"""POPE scoring with LLaVA's ``eval_pope.py`` answer parsing, matched by keys instead of by position.

Parsing (LLaVA): keep the text before the first '.', drop commas, split on single spaces; if one of the words is
exactly ``No``, ``not`` or ``no`` the answer is *no*, otherwise *yes* (so "" and "Yes." are *yes*, "NO" is *yes*).
Matching: an answer's ``question_id`` -> the question (image, text, category) -> the label with the same image and
question text (instruction suffixes such as "Answer the question using a single word or phrase." removed) in
``coco_pope_{category}.json``. LLaVA zips answers and labels by position; keys give the same numbers on aligned
files and refuse misaligned ones.

Metrics per category: TP/FP/TN/FN with *yes* as the positive class, accuracy, precision, recall, F1 and yes_ratio
(share of the model's answers that are *yes*). A ratio with a zero denominator is 0.0 (LLaVA would divide by zero).
``mean`` = unweighted average over the categories of each ratio (counts summed); ``mean_f1`` = its F1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from evaluate.cli import strip_suffixes
from common.errors import LetheError
from common.io import PathLike, iter_jsonl_numbered

RATIO_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
COUNT_KEYS = ("TP", "FP", "TN", "FN")


def parse_pope_answer(text: str) -> str:
    """'yes' or 'no' exactly as LLaVA's eval_pope.py decides."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def binary_metrics(preds: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Counts and ratios for parallel lists of 'yes'/'no' predictions and labels."""
    tp = sum(p == "yes" and l == "yes" for p, l in zip(preds, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(preds, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(preds, labels))
    fn = sum(p == "no" and l == "yes" for p, l in zip(preds, labels))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn), "precision": precision, "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(sum(p == "yes" for p in preds), len(preds)),
        "TP": tp, "FP": fp, "TN": tn, "FN": fn, "num_answers": len(preds),
    }


def read_questions(path: PathLike) -> dict[str, dict[str, Any]]:
    """LLaVA question file (jsonl ``question_id``, ``image``, ``text``, ``category``) keyed by str(question_id)."""
    out: dict[str, dict[str, Any]] = {}
    for lineno, q in iter_jsonl_numbered(path):
        if "question_id" not in q:
            raise LetheError(f"{path}:{lineno}: no 'question_id'")
        qid = str(q["question_id"])
        if qid in out:
            raise LetheError(f"{path}:{lineno}: duplicate question_id {q['question_id']!r}")
        out[qid] = q
    return out


def read_labels(annotation_dir: PathLike, suffixes: Sequence[str]) -> dict[str, dict[tuple[str, str], str]]:
    """``coco_pope_{category}.json`` files -> category -> (image, question text) -> 'yes'/'no'."""
    root = Path(annotation_dir)
    files = sorted(root.glob("coco_pope_*.json"))
    if not files:
        raise LetheError(f"{root}: no coco_pope_*.json label files")
    labels: dict[str, dict[tuple[str, str], str]] = {}
    for path in files:
        cat = path.name[len("coco_pope_"):-len(".json")]
        table: dict[tuple[str, str], str] = {}
        for lineno, row in iter_jsonl_numbered(path):
            try:
                key = (str(row["image"]), strip_suffixes(str(row["text"]), suffixes))
                label = str(row["label"]).strip().lower()
            except KeyError as e:
                raise LetheError(f"{path}:{lineno}: no {e.args[0]!r} field") from None
            if label not in ("yes", "no"):
                raise LetheError(f"{path}:{lineno}: label {row['label']!r} is not yes/no")
            if table.get(key, label) != label:
                raise LetheError(f"{path}:{lineno}: conflicting labels for {key}")
            table[key] = label
        labels[cat] = table
    return labels


def score_pope(answers: Iterable[tuple[int, Mapping[str, Any]]], questions: Mapping[str, Mapping[str, Any]],
               labels: Mapping[str, Mapping[tuple[str, str], str]], suffixes: Sequence[str],
               answers_name: str = "answers") -> dict[str, Any]:
    """Score numbered answer rows (``question_id``, ``text``). Unknown ids / unlabeled questions raise."""
    per_cat: dict[str, tuple[list[str], list[str]]] = {}
    seen: set[str] = set()
    for lineno, ans in answers:
        if "question_id" not in ans or "text" not in ans:
            raise LetheError(f"{answers_name}:{lineno}: an answer needs 'question_id' and 'text'")
        qid = str(ans["question_id"])
        if qid in seen:
            raise LetheError(f"{answers_name}:{lineno}: second answer for question_id {ans['question_id']!r}")
        seen.add(qid)
        q = questions.get(qid)
        if q is None:
            raise LetheError(f"answer question_id {ans['question_id']!r} has no question in the question file")
        cat = str(q.get("category", ""))
        if cat not in labels:
            raise LetheError(f"question_id {ans['question_id']!r}: no label file coco_pope_{cat}.json")
        key = (str(q["image"]), strip_suffixes(str(q["text"]), suffixes))
        label = labels[cat].get(key)
        if label is None:
            raise LetheError(f"question_id {ans['question_id']!r}: no label for image {key[0]!r} "
                                 f"and question {key[1]!r} in coco_pope_{cat}.json")
        preds, labs = per_cat.setdefault(cat, ([], []))
        preds.append(parse_pope_answer(str(ans["text"])))
        labs.append(label)
    if not per_cat:
        raise LetheError(f"{answers_name}: no answers")
    categories = {}
    for cat in sorted(per_cat):
        m = binary_metrics(*per_cat[cat])
        m["unanswered"] = len(labels[cat]) - m["num_answers"]
        categories[cat] = m
    mean = {k: sum(c[k] for c in categories.values()) / len(categories) for k in RATIO_KEYS}
    mean.update({k: sum(c[k] for c in categories.values()) for k in COUNT_KEYS + ("num_answers",)})
    return {**categories, "mean": mean, "mean_f1": mean["f1"],
            "categories_without_answers": sorted(set(labels) - set(per_cat))}


def pope_categories(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-category entries of a POPE result (top-level keys, as the issue's output format asks)."""
    return {k: v for k, v in result.items() if isinstance(v, dict) and k != "mean"}
