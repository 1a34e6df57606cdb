"""MMBench: option-letter accuracy and circular evaluation from the official TSV.

TSV columns: ``index, question, hint, A, B, C, D[, E], answer, category, l2-category, image`` (base64). The
options of a row are A, B, ... up to the first empty/"nan"/"none" one (LLaVA's ``get_options``). Answers are
LLaVA answer lines: ``question_id`` = the row's ``index``, optional ``round_id`` r (LLaVA ``--all-rounds``: in
round r the options are rotated left by r, so letter L means original option ``(L + r) mod n``). Letters are
matched with ``evaluate.options.infer_option``.

``accuracy``: the original questions (index < 1e6) in round 0, a missing answer counting as wrong.
``circular_accuracy``: questions are grouped by ``index % 1e6`` (MMBench's circular copies carry
``index + k * 1e6``); a group counts only if every answered pass of every copy is right and the round-0 pass of
every copy was answered.
"""
from __future__ import annotations

import base64
import csv
import io as _io
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.errors import LetheError
from common.io import PathLike, iter_jsonl_numbered, not_utf8_error
from evaluate.options import LETTERS, infer_option, letter_choices

CIRCULAR_BASE = 1_000_000


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none"))


def read_tsv(path: PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: file not found")
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except UnicodeDecodeError as e:
        raise not_utf8_error(path, e) from None
    out = []
    for i, row in enumerate(rows, 2):
        for key in ("index", "question", "answer"):
            if _is_none(row.get(key)):
                raise LetheError(f"{path}:{i}: no {key!r}")
        options = []
        for letter in LETTERS:
            if letter not in row or _is_none(row[letter]):
                break
            options.append(row[letter])
        if row["answer"].strip() not in LETTERS[:len(options)]:
            raise LetheError(f"{path}:{i}: answer {row['answer']!r} is not one of the {len(options)} options")
        try:
            index = int(float(row["index"]))
        except ValueError:
            raise LetheError(f"{path}:{i}: index {row['index']!r} is not a number") from None
        out.append({"index": index, "question": row["question"], "hint": None if _is_none(row.get("hint")) else
                    row["hint"], "options": options, "answer": row["answer"].strip(),
                    "category": row.get("category") or "", "l2-category": row.get("l2-category") or "",
                    "image": row.get("image") or ""})
    return out


def decode_image(b64: str):
    from PIL import Image

    return Image.open(_io.BytesIO(base64.b64decode(b64))).convert("RGB")


def build_prompt(row: Mapping[str, Any], round_id: int = 0) -> str:
    opts = list(row["options"])
    opts = opts[round_id:] + opts[:round_id]
    question = f"{row['hint']}\n{row['question']}" if row.get("hint") else str(row["question"])
    return question + "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(opts))


def is_correct(row: Mapping[str, Any], text: str, round_id: int = 0) -> bool:
    n = len(row["options"])
    opts = list(row["options"])
    shown = opts[round_id % n:] + opts[:round_id % n]
    picked = infer_option(text, letter_choices(shown))
    if picked is None:
        return False
    return (LETTERS.index(picked) + round_id) % n == LETTERS.index(row["answer"])


def read_answers(path: PathLike) -> dict[tuple[int, int], str]:
    out: dict[tuple[int, int], str] = {}
    for lineno, row in iter_jsonl_numbered(path):
        if "question_id" not in row or "text" not in row:
            raise LetheError(f"{path}:{lineno}: an answer needs 'question_id' and 'text'")
        try:
            key = (int(row["question_id"]), int(row.get("round_id", 0)))
        except (TypeError, ValueError):
            raise LetheError(f"{path}:{lineno}: question_id/round_id must be integers") from None
        if key in out:
            raise LetheError(f"{path}:{lineno}: second answer for question_id {key[0]} round {key[1]}")
        out[key] = str(row["text"])
    return out


def score_mmbench(rows: Sequence[Mapping[str, Any]], answers: Mapping[tuple[int, int], str]) -> dict[str, Any]:
    by_index = {r["index"]: r for r in rows}
    unknown = [k for k in answers if k[0] not in by_index]
    if unknown:
        raise LetheError(f"answer question_id {unknown[0][0]} is not an index of the TSV")
    rounds: dict[int, list[int]] = {}
    for idx, r in answers:
        rounds.setdefault(idx, []).append(r)
    groups: dict[int, bool] = {}
    group_meta: dict[int, Mapping[str, Any]] = {}
    vanilla: list[tuple[Mapping[str, Any], bool]] = []
    missing = 0
    for row in rows:
        idx = row["index"]
        ok_all = (idx, 0) in answers
        missing += not ok_all
        for r in sorted(set(rounds.get(idx, [])) | {0}):
            if (idx, r) in answers:
                ok = is_correct(row, answers[(idx, r)], r)
                ok_all &= ok
                if r == 0 and idx < CIRCULAR_BASE:
                    vanilla.append((row, ok))
            elif idx < CIRCULAR_BASE:
                vanilla.append((row, False))
        g = idx % CIRCULAR_BASE
        groups[g] = groups.get(g, True) and ok_all
        group_meta.setdefault(g, row)

    def acc(values: list[bool]) -> float:
        return sum(values) / len(values) if values else 0.0

    def split(key: str) -> dict[str, dict[str, float]]:
        names = sorted({str(group_meta[g][key]) for g in groups})
        return {n: {"accuracy": acc([ok for row, ok in vanilla if str(row[key]) == n]),
                    "circular_accuracy": acc([ok for g, ok in groups.items() if str(group_meta[g][key]) == n])}
                for n in names}

    return {"accuracy": acc([ok for _, ok in vanilla]), "circular_accuracy": acc(list(groups.values())),
            "num_questions": len(vanilla), "num_groups": len(groups), "missing": missing,
            "per_category": split("category"), "per_l2_category": split("l2-category")}
