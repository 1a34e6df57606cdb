"""Q-Bench A1 (LLVisionQA) option-letter accuracy, overall and per question type and concern.

Questions: ``llvisionqa_dev.json``, a list of ``{img_path, question, candidates, correct_ans, type, concern}``;
an item's id is its ``id``/``question_id`` field if it has one, else its position in the list. The correct letter
is that of ``correct_ans`` among ``candidates``; answers are matched with ``evaluate.options.infer_option``.
A question without an answer counts as wrong (``missing``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from common.errors import LetheError
from common.io import PathLike, read_json
from evaluate.options import LETTERS, infer_option, letter_choices

TYPE_NAMES = {0: "yes-or-no", 1: "what", 2: "how"}
CONCERN_NAMES = {0: "distortion", 1: "other", 2: "in-context distortion", 3: "in-context other"}


def read_questions(path: PathLike) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise LetheError(f"{path}: expected a list of questions")
    out = []
    for i, q in enumerate(data):
        for key in ("img_path", "question", "candidates", "correct_ans"):
            if key not in q:
                raise LetheError(f"{path}: question {i} has no {key!r}")
        if q["correct_ans"] not in q["candidates"]:
            raise LetheError(f"{path}: question {i}: correct_ans is not one of the candidates")
        out.append({**q, "id": str(q.get("id", q.get("question_id", i)))})
    return out


def _group_name(names: Mapping[int, str], value: Any) -> str:
    try:
        return names.get(int(value), str(value))
    except (TypeError, ValueError):
        return str(value)


def score_qbench(questions: Sequence[Mapping[str, Any]], answers: Mapping[str, str]) -> dict[str, Any]:
    ids = {q["id"] for q in questions}
    unknown = [a for a in answers if a not in ids]
    if unknown:
        raise LetheError(f"answer question_id {unknown[0]!r} is not a Q-Bench question")
    per_type: dict[str, list[int]] = {}
    per_concern: dict[str, list[int]] = {}
    results = []
    for q in questions:
        truth = LETTERS[list(q["candidates"]).index(q["correct_ans"])]
        picked = infer_option(answers[q["id"]], letter_choices(q["candidates"])) if q["id"] in answers else None
        ok = int(picked == truth)
        results.append(ok)
        per_type.setdefault(_group_name(TYPE_NAMES, q.get("type")), []).append(ok)
        per_concern.setdefault(_group_name(CONCERN_NAMES, q.get("concern")), []).append(ok)
    acc = lambda v: sum(v) / len(v) if v else 0.0  # noqa: E731
    return {"accuracy": acc(results), "correct": sum(results), "total": len(results),
            "missing": sum(q["id"] not in answers for q in questions),
            "per_type": {k: acc(v) for k, v in sorted(per_type.items())},
            "per_concern": {k: acc(v) for k, v in sorted(per_concern.items())}}
