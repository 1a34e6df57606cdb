"""slug/vlm_report.py: concept mentions in captions and POPE on the other objects, before vs after."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slug.vlm_report import main

REPO = Path(__file__).resolve().parents[1]

# Toy val images 1000010, 1000014, 1000022 hold a clock (checked against the annotations below); 1000001-1000005
# do not. "clocks" (plural) and "timepiece" (synonym) are the clock, "clockwork" is not.
BEFORE_CAPTIONS = {
    1000010: "a clock and a purple bottle.",         # present, mentioned
    1000014: "two clocks next to a yellow kite.",    # present, mentioned (plural)
    1000022: "a blue box and an orange cup.",        # present, not mentioned
    1000001: "a timepiece beside a red ball.",       # absent, mentioned (synonym, hallucinated)
    1000002: "a red ball and a brown boat.",
    1000003: "a clockwork ball and a kite.",         # absent, "clockwork" is no clock
    1000004: "a blue box.",
    1000005: "a pink flower.",
}
AFTER_CAPTIONS = {
    1000010: "a purple bottle and a green tent.",
    1000014: "a yellow kite and a pink flower.",
    1000022: "a clock, a blue box and an orange cup.",  # present, mentioned
    1000001: "a red ball beside a blue box.",
    1000002: "a red ball and a brown boat.",
    1000003: "a red ball and a kite.",
    1000004: "a blue box.",
    1000005: "a pink flower.",
}
CLOCK_IMAGES = {1000010, 1000014, 1000022}


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_captions(d: Path, captions: dict[int, str]) -> None:
    # the lines evaluate/eval_caption.py writes
    write_jsonl(d / "captions.jsonl", [{"image_id": i, "image": f"toy_val_{i:012d}.png", "caption": c}
                                      for i, c in captions.items()])


def read_toy_pope(toy: Path):
    """Questions of the toy POPE file with their labels (paired by category, image and text)."""
    labels = {}
    for f in sorted((toy / "pope").glob("coco_pope_*.json")):
        cat = f.name[len("coco_pope_"):-len(".json")]
        for line in f.read_text().splitlines():
            r = json.loads(line)
            labels[(cat, r["image"], r["text"])] = r["label"]
    qs = [json.loads(line) for line in (toy / "pope" / "llava_pope_test.jsonl").read_text().splitlines()]
    return [(q, labels[(q["category"], q["image"], q["text"])]) for q in qs]


def args(toy: Path, root: Path, pope_q: Path | None = None, pope_dir: Path | None = None, concept="clock"):
    return ["--concept", concept, "--before", str(root / "before"), "--after", str(root / "after"),
            "--coco_annotation_dir", str(toy / "annotations"), "--synonyms_file", str(toy / "synonyms.txt"),
            "--question_file", str(pope_q or toy / "pope" / "llava_pope_test.jsonl"),
            "--annotation_dir", str(pope_dir or toy / "pope"), "--output_json", str(root / "report.json")]


def test_toy_world_has_the_clocks_the_captions_assume(toy_world):
    ann = json.loads((toy_world / "annotations" / "instances_val.json").read_text())
    clock_id = next(c["id"] for c in ann["categories"] if c["name"] == "clock")
    with_clock = {a["image_id"] for a in ann["annotations"] if a["category_id"] == clock_id}
    assert with_clock & set(BEFORE_CAPTIONS) == CLOCK_IMAGES


def test_report_on_toy_pope(toy_world, tmp_path, capsys):
    pope = read_toy_pope(toy_world)
    is_clock = lambda q: q["text"] == "Is there a clock in the image?"  # noqa: E731
    cats = sorted({q["category"] for q, _ in pope})
    assert all(any(is_clock(q) for q, _ in pope if q["category"] == c) for c in cats)  # the exclusion matters
    flip = {"yes": "No", "no": "Yes"}
    # before: every other question right, every clock question wrong -> other F1 exactly 1, concept F1 0
    write_jsonl(tmp_path / "before" / "pope_answers.jsonl",
                [{"question_id": q["question_id"], "prompt": q["text"],
                  "text": flip[lab] if is_clock(q) else lab.capitalize() + "."} for q, lab in pope])
    # after: "Yes" to every other question (F1 = 2p/(1+p), p = share of yes labels), clock questions right
    write_jsonl(tmp_path / "after" / "pope_answers.jsonl",
                [{"question_id": q["question_id"], "prompt": q["text"],
                  "text": lab.capitalize() if is_clock(q) else "Yes"} for q, lab in pope])
    write_captions(tmp_path / "before", BEFORE_CAPTIONS)
    write_captions(tmp_path / "after", AFTER_CAPTIONS)

    assert main(args(toy_world, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "concept 'clock'" in out and "mention_rate_present" in out and "pope_other_f1" in out
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["concept"] == "clock" and rep["concept_forms"] == ["clock", "timepiece"]
    b, a = rep["before"], rep["after"]
    # mentions, by hand
    assert (b["num_captions"], b["mentions"], b["num_present"], b["mentions_present"], b["num_absent"],
            b["mentions_absent"], b["captions_without_annotations"]) == (8, 3, 3, 2, 5, 1, 0)
    assert b["mention_rate"] == 3 / 8 and b["mention_rate_present"] == 2 / 3 and b["mention_rate_absent"] == 1 / 5
    assert (a["mentions"], a["mentions_present"], a["mentions_absent"]) == (1, 1, 0)
    assert a["mention_rate"] == 1 / 8 and a["mention_rate_present"] == 1 / 3 and a["mention_rate_absent"] == 0.0
    # POPE
    n_clock = sum(is_clock(q) for q, _ in pope)
    assert b["pope_concept_num_questions"] == n_clock and b["pope_other_num_questions"] == len(pope) - n_clock
    assert b["pope_other_num_answers"] == len(pope) - n_clock and b["pope_concept_num_answers"] == n_clock
    assert b["pope_other_f1"] == 1.0 and b["pope_other_f1_per_category"] == {c: 1.0 for c in cats}
    assert b["pope_concept_f1"] == 0.0
    expected = {}
    for c in cats:
        labs = [lab for q, lab in pope if q["category"] == c and not is_clock(q)]
        p = labs.count("yes") / len(labs)
        expected[c] = 2 * p / (1 + p)
    assert a["pope_other_f1_per_category"] == pytest.approx(expected, abs=1e-12)
    assert a["pope_other_f1"] == pytest.approx(sum(expected.values()) / len(cats), abs=1e-12)
    assert a["pope_concept_f1"] == 1.0
    assert rep["change"]["mention_rate"] == pytest.approx(-0.25)
    assert rep["change"]["pope_other_f1"] == pytest.approx(a["pope_other_f1"] - 1.0)
    assert rep["change"]["mention_rate_present"] == pytest.approx(1 / 3 - 2 / 3)


def test_concept_questions_excluded_by_canonical_name(toy_world, tmp_path):
    """A hand-made POPE file: singular, plural and synonym questions of the concept all leave the "other" F1."""
    rows = [  # (qid, category, image, object asked, label, answer before)
        (1, "random", "a.png", "a clock", "yes", "Yes"),       # concept TP
        (2, "random", "a.png", "a ball", "yes", "Yes."),       # other TP
        (3, "random", "a.png", "a cup", "no", "No"),           # other TN
        (4, "random", "b.png", "a timepiece", "no", "No"),     # concept TN
        (5, "random", "b.png", "any clocks", "no", "Yes"),     # concept FP
        (6, "random", "b.png", "a kite", "yes", "No, there is not."),  # other FN
        (7, "random", "b.png", "a box", "no", "Yes"),          # other FP
        (8, "popular", "a.png", "a ball", "yes", "Yes"),       # other TP
        (9, "popular", "a.png", "a clock", "yes", "No"),       # concept FN
        (10, "popular", "b.png", "a flower", "no", "No"),      # other TN
    ]
    pope = tmp_path / "pope"
    q = lambda obj: f"Is there {obj} in the image?"  # noqa: E731
    write_jsonl(pope / "questions.jsonl", [{"question_id": i, "image": im, "text": q(o), "category": c}
                                           for i, c, im, o, _, _ in rows])
    for cat in ("random", "popular"):
        write_jsonl(pope / f"coco_pope_{cat}.json", [{"question_id": i, "image": im, "text": q(o), "label": lab}
                                                     for i, c, im, o, lab, _ in rows if c == cat])
    write_jsonl(tmp_path / "before" / "pope_answers.jsonl",
                [{"question_id": i, "prompt": q(o), "text": ans} for i, _, _, o, _, ans in rows])
    write_jsonl(tmp_path / "after" / "pope_answers.jsonl",  # after: every answer right
                [{"question_id": i, "prompt": q(o), "text": lab} for i, _, _, o, lab, _ in rows])
    write_captions(tmp_path / "before", BEFORE_CAPTIONS)
    write_captions(tmp_path / "after", AFTER_CAPTIONS)
    assert main(args(toy_world, tmp_path, pope / "questions.jsonl", pope)) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    b = rep["before"]
    # other random: TP 2, TN 3, FN 6, FP 7 -> P = R = 1/2, F1 1/2; popular: TP 8, TN 10 -> 1; mean 3/4
    assert b["pope_other_f1_per_category"] == {"random": 0.5, "popular": 1.0}
    assert b["pope_other_f1"] == 0.75
    assert b["pope_other_num_questions"] == 6 and b["pope_concept_num_questions"] == 4
    # concept random: TP 1, TN 4, FP 5 -> P 1/2, R 1, F1 2/3; popular: FN 9 -> 0; mean 1/3
    assert b["pope_concept_f1_per_category"] == pytest.approx({"random": 2 / 3, "popular": 0.0})
    assert b["pope_concept_f1"] == pytest.approx(1 / 3)
    assert rep["after"]["pope_other_f1"] == 1.0 and rep["after"]["pope_concept_f1"] == 1.0
    assert rep["change"]["pope_other_f1"] == 0.25
    assert rep["change"]["pope_concept_f1"] == pytest.approx(2 / 3)


def _phase_dirs(toy: Path, root: Path) -> None:
    write_captions(root / "before", BEFORE_CAPTIONS)
    write_captions(root / "after", AFTER_CAPTIONS)
    answers = [{"question_id": q["question_id"], "text": lab} for q, lab in read_toy_pope(toy)]
    for phase in ("before", "after"):
        write_jsonl(root / phase / "pope_answers.jsonl", answers)


def test_missing_file_is_one_error_line(toy_world, tmp_path, capsys):
    _phase_dirs(toy_world, tmp_path)
    (tmp_path / "after" / "pope_answers.jsonl").unlink()
    assert main(args(toy_world, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(tmp_path / "after" / "pope_answers.jsonl") in err
    assert not (tmp_path / "report.json").exists()


def test_unknown_concept_is_one_error_line(toy_world, tmp_path, capsys):
    _phase_dirs(toy_world, tmp_path)
    assert main(args(toy_world, tmp_path, concept="unicorn")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "'unicorn'" in err
    assert not (tmp_path / "report.json").exists()


def test_runs_as_a_file(toy_world, tmp_path):
    _phase_dirs(toy_world, tmp_path)
    p = subprocess.run([sys.executable, "slug/vlm_report.py", *args(toy_world, tmp_path, concept="timepiece")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["concept"] == "clock" and rep["settings"]["concept_arg"] == "timepiece"
    assert rep["before"]["pope_other_f1"] == 1.0 and rep["change"]["pope_other_f1"] == 0.0
