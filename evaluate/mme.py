"""MME scoring exactly as the official ``eval_tool/calculation.py``, plus readers of the benchmark layouts.

Results format: one ``<subtask>.txt`` per subtask, lines ``image\\tquestion\\tgt\\tanswer``, the two questions of
an image on consecutive lines. Answer parsing (official): lower-case the answer field as read (the line's newline
included); exactly "yes"/"no" -> itself, else "yes" if "yes" occurs in its first 4 characters, else "no" if "no"
does, else "other" (so "Yes, it is" -> yes, "Not really" -> no, "I think yes" -> other, "nope" -> no).
Per subtask: acc = correct answers / questions, acc+ = images with both answers correct / images,
score = 100*acc + 100*acc+. Perception sums the scores of existence, count, position, color, posters,
celebrity, scene, landmark, artwork, OCR; cognition of commonsense_reasoning, numerical_calculation,
text_translation, code_reasoning. The official script requires all 14 files; here absent subtasks are listed in
``missing_subtasks`` and the totals cover the present ones.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.errors import LetheError
from common.io import PathLike, atomic_write_text, read_text
from evaluate.runner import find_image

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
              "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def parse_mme_answer(answer: str) -> str:
    """'yes', 'no' or 'other' as the official calculation.py parses an answer field."""
    s = answer.lower()
    if s in ("yes", "no"):
        return s
    head = s[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


@dataclass(frozen=True)
class ResultLine:
    image: str
    question: str
    gt: str      # 'yes' / 'no'
    answer: str  # raw field as read (newline included, as the official script sees it)
    lineno: int


def read_results_file(path: PathLike) -> list[ResultLine]:
    path = Path(path)
    raw = io.StringIO(read_text(path)).readlines()  # a non-UTF-8 byte: one line naming the file and line
    out = []
    for lineno, line in enumerate(raw, 1):
        parts = line.split("\t")
        if len(parts) != 4:
            raise LetheError(f"{path}:{lineno}: expected 4 tab-separated fields (image, question, gt, answer), "
                                 f"got {len(parts)}")
        gt = parts[2].lower()
        if gt not in ("yes", "no"):
            raise LetheError(f"{path}:{lineno}: ground truth {parts[2]!r} is not Yes/No")
        out.append(ResultLine(parts[0], parts[1], gt, parts[3], lineno))
    return out


def score_subtask(lines: Sequence[ResultLine], name: str = "subtask") -> dict[str, Any]:
    if not lines:
        raise LetheError(f"{name}: no result lines")
    if len(lines) % 2:
        raise LetheError(f"{name}: {len(lines)} lines; every image needs exactly two questions")
    correct = both = other = 0
    for a, b in zip(lines[0::2], lines[1::2]):
        if a.image != b.image:
            raise LetheError(f"{name}:{b.lineno}: image {b.image!r} follows {a.image!r}; "
                                 "the two questions of an image must be on consecutive lines")
        ok = 0
        for ln in (a, b):
            pred = parse_mme_answer(ln.answer)
            ok += pred == ln.gt
            other += pred == "other"
        correct += ok
        both += ok == 2
    acc = correct / len(lines)
    acc_plus = both / (len(lines) // 2)
    return {"acc": acc, "acc_plus": acc_plus, "score": acc * 100 + acc_plus * 100, "questions": len(lines),
            "images": len(lines) // 2, "other_answers": other}


def score_results_dir(results_dir: PathLike) -> dict[str, Any]:
    root = Path(results_dir)
    files = sorted(root.glob("*.txt"))
    if not files:
        raise LetheError(f"{root}: no <subtask>.txt result files")
    subtasks = {p.stem: score_subtask(read_results_file(p), str(p)) for p in files}
    totals = {}
    for kind, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
        total = 0.0
        for n in names:
            if n in subtasks:
                total += subtasks[n]["score"]
        totals[kind] = total
    return {**totals, "subtasks": subtasks,
            "missing_subtasks": [n for n in PERCEPTION + COGNITION if n not in subtasks]}


# ------------------------------------------------------------------------------------------ benchmark layout
@dataclass(frozen=True)
class MMEQuestion:
    subtask: str
    image: str       # file name, as written in the results file
    image_path: str
    question: str
    gt: str          # as in the benchmark ("Yes"/"No")
    index: int       # position of the question within its image's file

    @property
    def id(self) -> str:
        return f"{self.subtask}/{self.image}/{self.index}"


def _find_image(folder: Path, stem: str, txt: Path) -> Path:
    img = find_image(folder, stem)
    if img is None:
        raise LetheError(f"{txt}: no image {stem}.* in {folder}")
    return img


def read_benchmark(root: PathLike) -> list[MMEQuestion]:
    """The official MME release: ``<root>/<subtask>/images/<img>`` with
    ``<root>/<subtask>/questions_answers_YN/<img stem>.txt``, or images and txt files side by side in
    ``<root>/<subtask>/``. Each txt line: ``question\\tYes|No``."""
    root = Path(root)
    if not root.is_dir():
        raise LetheError(f"{root}: MME data directory not found")
    out: list[MMEQuestion] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = sub / "questions_answers_YN"
        img_dir = sub / "images" if qa_dir.is_dir() else sub
        txt_dir = qa_dir if qa_dir.is_dir() else sub
        for txt in sorted(txt_dir.glob("*.txt")):
            img = _find_image(img_dir, txt.stem, txt)
            k = 0
            for lineno, line in enumerate(read_text(txt).splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 2 or parts[1].strip().lower() not in ("yes", "no"):
                    raise LetheError(f"{txt}:{lineno}: expected 'question<TAB>Yes|No'")
                out.append(MMEQuestion(sub.name, img.name, str(img), parts[0], parts[1].strip(), k))
                k += 1
    if not out:
        raise LetheError(f"{root}: no MME questions found")
    return out


def write_results_dir(questions: Sequence[MMEQuestion], answers: Mapping[str, str], results_dir: PathLike) -> None:
    """The official results files from benchmark questions and answers keyed by ``MMEQuestion.id``.

    Tabs and newlines inside an answer become spaces (they would break the format)."""
    by_sub: dict[str, list[str]] = {}
    for q in questions:
        if q.id not in answers:
            raise LetheError(f"no answer for MME question {q.id}")
        ans = " ".join(answers[q.id].replace("\t", " ").splitlines()) if answers[q.id] else ""
        by_sub.setdefault(q.subtask, []).append(f"{q.image}\t{q.question}\t{q.gt}\t{ans}\n")
    for sub, lines in by_sub.items():
        atomic_write_text(Path(results_dir) / f"{sub}.txt", "".join(lines))
