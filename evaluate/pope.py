"""POPE scoring with LLaVA's ``eval_pope.py`` answer parsing, answers paired with labels by (image, object).

Parsing (LLaVA): keep the text before the first '.', drop commas, split on single spaces; if one of the words is
exactly ``No``, ``not`` or ``no`` the answer is *no*, otherwise *yes* (so "" and "Yes." are *yes*, "NO" is *yes*).

Pairing: an answer's ``question_id`` -> the question (image, text, category) in the question file -> the label with
the same image and the same *object asked about* in ``coco_pope_{category}.json``. The object is parsed from the
question text, which POPE always words "Is there a/an <object> in the image?"; the parser
(``question_object``) also reads the wording of every release:

* the first releases of the COCO label files (and LLaVA's ``llava_pope_test.jsonl``, copied from them) spell 246
  questions "... in the imange?" (objects umbrella, orange, oven, airplane, elephant, apple); AoiDragon/POPE
  commits edebdda and 109985c ("Fix spelling errors") corrected them to "image";
* the article is ignored ("Is there an traffic light in the image?" in the corrected random split);
* case and runs of whitespace are ignored, and any text after the question mark (an instruction such as LLaVA's
  "\nAnswer the question using a single word or phrase.") is not part of the question;
* "picture"/"photo" and "any" (POPE's ``--template`` flag lets users reword the question) are read too.

So the same answers give the same numbers with either release. The corrected random split also has 90 questions
more than the first one (2,910 -> 3,000, interleaved): LLaVA's 8,910-question file leaves them ``unanswered``,
where LLaVA's positional zip would pair every later answer with the wrong label. A question or label line whose
object cannot be parsed, two lines of one file asking the same (category, image, object), an answer without a
question and a question without a label each stop the scorer with one ``error:`` line naming the file and line.
Question ids are only used between the answers and the question file (LLaVA numbers 1..8910 across the splits;
the label files number each split from 1).

Completeness: every question of the question file needs an answer. An answers file that covers only some (a
generation stopped half-way) is refused, naming the missing count per category, unless ``allow_partial``
(``--allow_partial``); the result then has ``complete: false`` and ``missing_answers`` per category, and the
report marks it partial. (``unanswered`` is different: labels that no question of the file asks, e.g. the 90 extra
lines of the corrected random split.)

Metrics per category: TP/FP/TN/FN with *yes* as the positive class, accuracy, precision, recall, F1 and yes_ratio
(share of the model's answers that are *yes*). A ratio with a zero denominator is 0.0 (LLaVA would divide by zero).
``mean`` = unweighted average over the categories of each ratio (counts summed); ``mean_f1`` = its F1.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from evaluate.cli import strip_suffixes
from common.errors import LetheError
from common.io import PathLike, iter_jsonl_numbered

RATIO_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
COUNT_KEYS = ("TP", "FP", "TN", "FN")

#: "Is there a/an <object> in the image?" and the real variants (see the module docstring). The object stops at
#: the first "in the image?" and never spans a '?' or a line break.
_QUESTION = re.compile(r"\bis\s+there\s+(?:an?|any)\s+(?P<object>[^?\n]+?)\s+in\s+(?:the|this)\s+"
                       r"(?:image|imange|picture|photo)\s*\?", re.IGNORECASE)
EXPECTED = "'Is there a/an <object> in the image?'"


def question_object(text: str) -> str | None:
    """The object a POPE question asks about, lower-cased with single spaces; None if the text is not one."""
    m = _QUESTION.search(text)
    return " ".join(m.group("object").lower().split()) if m else None


@dataclass(frozen=True)
class PopeQuestion:
    """What a question-file line asks: the key its label is looked up by, and where it came from."""

    category: str
    image: str
    object: str
    line: int


@dataclass(frozen=True)
class LabelTable:
    """One ``coco_pope_{category}.json``: (image, object) -> ('yes'/'no', line)."""

    path: Path
    labels: Mapping[tuple[str, str], tuple[str, int]]


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


def _object_of(path: PathLike, lineno: int, row: Mapping[str, Any], suffixes: Sequence[str]) -> tuple[str, str]:
    """(image, object) of a question or label line; a missing field or an unparseable text raises naming the line."""
    for key in ("image", "text"):
        if key not in row:
            raise LetheError(f"{path}:{lineno}: no {key!r} field")
    text = strip_suffixes(str(row["text"]), suffixes)
    obj = question_object(text)
    if obj is None:
        raise LetheError(f"{path}:{lineno}: cannot tell which object question {str(row['text'])!r:.120} asks about "
                         f"(expected {EXPECTED})")
    return str(row["image"]), obj


def _numbered_questions(path: PathLike) -> Iterator[tuple[int, str, dict[str, Any]]]:
    seen: dict[str, int] = {}
    for lineno, q in iter_jsonl_numbered(path):
        if "question_id" not in q:
            raise LetheError(f"{path}:{lineno}: no 'question_id'")
        qid = str(q["question_id"])
        if qid in seen:
            raise LetheError(f"{path}:{lineno}: duplicate question_id {q['question_id']!r} (first at line {seen[qid]})")
        seen[qid] = lineno
        yield lineno, qid, q


def read_questions(path: PathLike) -> dict[str, dict[str, Any]]:
    """LLaVA question file (jsonl ``question_id``, ``image``, ``text``, ``category``) keyed by str(question_id)."""
    return {qid: q for _, qid, q in _numbered_questions(path)}


def read_pope_questions(path: PathLike, suffixes: Sequence[str] = ()) -> dict[str, PopeQuestion]:
    """The question file parsed for scoring: str(question_id) -> (category, image, object, line).

    Two questions asking the same (category, image, object) would share one label: refused as ambiguous."""
    out: dict[str, PopeQuestion] = {}
    first: dict[tuple[str, str, str], int] = {}
    for lineno, qid, q in _numbered_questions(path):
        if "category" not in q:
            raise LetheError(f"{path}:{lineno}: no 'category' field (random, popular or adversarial)")
        image, obj = _object_of(path, lineno, q, suffixes)
        key = (str(q["category"]), image, obj)
        if key in first:
            raise LetheError(f"{path}:{lineno}: ambiguous: asks about {obj!r} in {image!r} ({key[0]}) like line "
                             f"{first[key]}")
        first[key] = lineno
        out[qid] = PopeQuestion(key[0], image, obj, lineno)
    return out


def read_labels(annotation_dir: PathLike, suffixes: Sequence[str] = ()) -> dict[str, LabelTable]:
    """``coco_pope_{category}.json`` files -> category -> (image, object) -> ('yes'/'no', line)."""
    root = Path(annotation_dir)
    files = sorted(root.glob("coco_pope_*.json"))
    if not files:
        raise LetheError(f"{root}: no coco_pope_*.json label files")
    tables: dict[str, LabelTable] = {}
    for path in files:
        cat = path.name[len("coco_pope_"):-len(".json")]
        table: dict[tuple[str, str], tuple[str, int]] = {}
        for lineno, row in iter_jsonl_numbered(path):
            if "label" not in row:
                raise LetheError(f"{path}:{lineno}: no 'label' field")
            key = _object_of(path, lineno, row, suffixes)
            label = str(row["label"]).strip().lower()
            if label not in ("yes", "no"):
                raise LetheError(f"{path}:{lineno}: label {row['label']!r} is not yes/no")
            if key in table:
                raise LetheError(f"{path}:{lineno}: ambiguous: asks about {key[1]!r} in {key[0]!r} like line "
                                 f"{table[key][1]}")
            table[key] = (label, lineno)
        tables[cat] = LabelTable(path, table)
    return tables


def missing_text(missing: Mapping[str, int]) -> str:
    """``{"popular": 3, "random": 1}`` -> ``"popular 3, random 1"``."""
    return ", ".join(f"{cat} {n}" for cat, n in sorted(missing.items()))


def score_pope(answers: Iterable[tuple[int, Mapping[str, Any]]], questions: Mapping[str, PopeQuestion],
               labels: Mapping[str, LabelTable], answers_name: str = "answers",
               questions_name: str = "the question file", allow_partial: bool = False) -> dict[str, Any]:
    """Score numbered answer rows (``question_id``, ``text``). Unknown ids / unlabeled questions raise.

    Every question of the question file must have an answer: a partial answers file (an interrupted generation)
    raises, naming how many are missing per category, unless ``allow_partial``; then the result says so
    (``complete`` false, ``missing_answers`` per category, and ``missing_answers`` in each category's entry)."""
    per_cat: dict[str, tuple[list[str], list[str]]] = {}
    seen: dict[str, int] = {}
    for lineno, ans in answers:
        where = f"{answers_name}:{lineno}"
        if "question_id" not in ans or "text" not in ans:
            raise LetheError(f"{where}: an answer needs 'question_id' and 'text'")
        qid = str(ans["question_id"])
        if qid in seen:
            raise LetheError(f"{where}: second answer for question_id {ans['question_id']!r} "
                             f"(first at line {seen[qid]})")
        seen[qid] = lineno
        q = questions.get(qid)
        if q is None:
            raise LetheError(f"{where}: answer question_id {ans['question_id']!r} has no question in "
                             f"{questions_name}")
        table = labels.get(q.category)
        if table is None:
            raise LetheError(f"{questions_name}:{q.line}: question_id {ans['question_id']!r}: no label file "
                             f"coco_pope_{q.category}.json")
        hit = table.labels.get((q.image, q.object))
        if hit is None:
            raise LetheError(f"{where}: question_id {ans['question_id']!r} ({questions_name}:{q.line}): no label "
                             f"for {q.object!r} in image {q.image!r} in {table.path}")
        preds, labs = per_cat.setdefault(q.category, ([], []))
        preds.append(parse_pope_answer(str(ans["text"])))
        labs.append(hit[0])
    if not per_cat:
        raise LetheError(f"{answers_name}: no answers")
    asked: dict[str, int] = {}
    for q in questions.values():
        asked[q.category] = asked.get(q.category, 0) + 1
    missing = {cat: n - len(per_cat.get(cat, ((), ()))[0]) for cat, n in sorted(asked.items())}
    missing = {cat: n for cat, n in missing.items() if n}
    if missing and not allow_partial:
        raise LetheError(f"{answers_name}: answers only {len(seen)} of the {len(questions)} questions of "
                         f"{questions_name} (missing per category: {missing_text(missing)}); finish the generation "
                         "(it resumes), or pass --allow_partial to score the answered ones as a partial result")
    categories = {}
    for cat in sorted(per_cat):
        m = binary_metrics(*per_cat[cat])
        m["unanswered"] = len(labels[cat].labels) - m["num_answers"]
        m["missing_answers"] = missing.get(cat, 0)
        categories[cat] = m
    mean = {k: sum(c[k] for c in categories.values()) / len(categories) for k in RATIO_KEYS}
    mean.update({k: sum(c[k] for c in categories.values()) for k in COUNT_KEYS + ("num_answers",)})
    return {**categories, "mean": mean, "mean_f1": mean["f1"],
            "categories_without_answers": sorted(set(labels) - set(per_cat)),
            "complete": not missing, "num_questions": len(questions), "missing_answers": missing}


def pope_missing(result: Mapping[str, Any]) -> dict[str, int]:
    """Unanswered questions per category of a partial POPE result ({} when complete or of an older version)."""
    missing = result.get("missing_answers")
    return dict(missing) if isinstance(missing, Mapping) and result.get("complete") is False else {}


def pope_categories(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-category entries of a POPE result (top-level keys, as the issue's output format asks)."""
    return {k: v for k, v in result.items() if isinstance(v, dict) and k != "mean" and "f1" in v}
