"""ScienceQA accuracy as LLaVA's ``llava/eval/eval_science_qa.py`` computes it.

Parsing of an answer ``text`` (options A-E): the text is exactly an option letter; or it starts with a letter
followed by ". "; or ``re.findall(r'The answer is ([A-Z]).', text)`` finds exactly one letter; otherwise FAILED.
The letter is correct if it is within the problem's choices and its index equals ``answer``. Every problem of the
split counts (a missing prediction is FAILED). IMG accuracy is over the problems whose answer prompt contains
``<image>`` (LLaVA writes it for image problems); a present answer to a problem with an image also counts as
multimodal, a missing one does not (as in LLaVA, whose placeholder prompt is "Unknown").
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.errors import LetheError
from common.io import PathLike, read_json
from evaluate.util import read_answers

OPTIONS = ("A", "B", "C", "D", "E")
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_sqa_answer(text: str, options: Sequence[str] = OPTIONS) -> str:
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"


def pred_index(letter: str, n_choices: int, options: Sequence[str] = OPTIONS) -> int:
    return list(options).index(letter) if letter in options[:n_choices] else -1


def read_problems(base_dir: PathLike, split: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    problems = read_json(Path(base_dir) / "problems.json")
    splits = read_json(Path(base_dir) / "pid_splits.json")
    if split not in splits:
        raise LetheError(f"{base_dir}/pid_splits.json: no split {split!r} (have {', '.join(splits)})")
    ids = [str(i) for i in splits[split]]
    missing = [i for i in ids if i not in problems]
    if missing:
        raise LetheError(f"{base_dir}: split {split!r} lists problem {missing[0]!r} absent from problems.json")
    return {str(k): v for k, v in problems.items()}, ids


def read_predictions(path: PathLike) -> dict[str, dict[str, Any]]:
    """Answers keyed by question_id; a later duplicate wins (LLaVA builds a dict from the file)."""
    return read_answers(path, last_wins=True)


def score_sqa(problems: Mapping[str, Mapping[str, Any]], split_ids: Sequence[str],
              predictions: Mapping[str, Mapping[str, Any]], options: Sequence[str] = OPTIONS) -> dict[str, Any]:
    unknown = [q for q in predictions if q not in problems]
    if unknown:
        raise LetheError(f"answer question_id {unknown[0]!r} is not a ScienceQA problem id")
    in_split = set(split_ids)
    correct = total = img_correct = img_total = failed = 0
    for pid in split_ids:
        prob = problems[pid]
        pred = predictions.get(pid)
        if pred is None:
            letter, multimodal = "FAILED", False
        else:
            letter = parse_sqa_answer(str(pred["text"]), options)
            multimodal = "<image>" in str(pred.get("prompt", "")) or bool(prob.get("image"))
        ok = pred_index(letter, len(prob["choices"]), options) == prob["answer"]
        failed += letter == "FAILED"
        total += 1
        correct += ok
        if multimodal:
            img_total += 1
            img_correct += ok
    return {"accuracy": correct / total if total else 0.0,
            "img_accuracy": img_correct / img_total if img_total else 0.0,
            "correct": correct, "total": total, "img_correct": img_correct, "img_total": img_total,
            "failed_parses": failed, "missing": sum(pid not in predictions for pid in split_ids),
            "ignored_predictions": sum(pid not in in_split for pid in predictions)}


def build_prompt(problem: Mapping[str, Any], options: Sequence[str] = OPTIONS) -> str:
    """LLaVA-1.5 style: optional ``Context: <hint>`` line, the question, then ``A. choice`` lines."""
    lines = []
    if problem.get("hint"):
        lines.append(f"Context: {problem['hint']}")
    lines.append(str(problem["question"]))
    lines += [f"{options[i]}. {c}" for i, c in enumerate(problem["choices"])]
    return "\n".join(lines)
