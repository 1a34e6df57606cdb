"""GQA testdev-balanced accuracy as LLaVA + the official GQA ``eval.py`` compute it.

LLaVA's ``convert_gqa_for_eval.py`` turns an answer into a prediction with ``text.rstrip('.').lower()``; the
official ``eval.py`` scores exact string equality with the gold ``answer`` over the balanced questions
(``isBalanced``; assumed true when the field is absent) and splits it into ``binary`` (structural type other than
"query") and ``open`` ("query"). Like the official script, a balanced question without a prediction is an error
unless ``allow_missing`` (then only the answered questions are scored: EFUF's subset protocol).
Validity, plausibility, consistency and distribution need GQA's choices/balanced-all files and are not computed.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from common.errors import LetheError
from common.io import PathLike, read_json
from evaluate.util import read_answers


def normalize_answer(text: str) -> str:
    return text.rstrip(".").lower()


def read_questions(path: PathLike) -> dict[str, dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise LetheError(f"{path}: expected a mapping question id -> question")
    return {str(k): v for k, v in data.items()}


def read_predictions(path: PathLike) -> dict[str, str]:
    """Answers jsonl (LLaVA: ``question_id``, ``text``; normalised here) or an official predictions ``.json``
    (list of ``{"questionId", "prediction"}``, used as is). A later duplicate wins, as in the official dict."""
    if Path(path).suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise LetheError(f"{path}: expected a list of {{questionId, prediction}}")
        return {str(p["questionId"]): str(p["prediction"]) for p in data}
    return {k: normalize_answer(str(r["text"])) for k, r in read_answers(path, last_wins=True).items()}


def _acc(scores: list[int]) -> float:
    return sum(scores) / len(scores) if scores else 0.0


def score_gqa(questions: Mapping[str, Mapping[str, Any]], predictions: Mapping[str, str],
              allow_missing: bool = False) -> dict[str, Any]:
    unknown = [q for q in predictions if q not in questions]
    if unknown:
        raise LetheError(f"prediction for question id {unknown[0]!r} which is not in the questions file")
    scores: dict[str, list[int]] = {"accuracy": [], "binary": [], "open": []}
    per_struct: dict[str, list[int]] = defaultdict(list)
    per_sem: dict[str, list[int]] = defaultdict(list)
    missing = 0
    for qid, q in questions.items():
        if not q.get("isBalanced", True):
            continue
        if qid not in predictions:
            if allow_missing:
                missing += 1
                continue
            raise LetheError(f"no prediction for question {qid!r} (pass --allow_missing to score a subset)")
        score = int(predictions[qid] == q["answer"])
        types = q.get("types") or {}
        structural, semantic = types.get("structural"), types.get("semantic")
        scores["accuracy"].append(score)
        scores["open" if structural == "query" else "binary"].append(score)
        per_struct[str(structural)].append(score)
        per_sem[str(semantic)].append(score)
    if not scores["accuracy"]:
        raise LetheError("no balanced question has a prediction")
    return {
        "accuracy": _acc(scores["accuracy"]), "binary": _acc(scores["binary"]), "open": _acc(scores["open"]),
        "correct": sum(scores["accuracy"]), "total": len(scores["accuracy"]), "missing": missing,
        "per_structural_type": {k: _acc(v) for k, v in sorted(per_struct.items())},
        "per_semantic_type": {k: _acc(v) for k, v in sorted(per_sem.items())},
    }
