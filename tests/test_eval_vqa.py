"""GQA, ScienceQA, Q-Bench and MMBench scorers on small hand-built inputs, numbers worked out by hand."""
from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluate import eval_gqa, eval_mmbench, eval_qbench, eval_sqa
from common.errors import LetheError
from evaluate.mmbench import is_correct, read_tsv, score_mmbench
from evaluate.options import infer_option
from evaluate.sqa import parse_sqa_answer

FIX = Path(__file__).parent / "fixtures" / "eval"

B = SimpleNamespace(**runpy.run_path(str(FIX / "builders.py")))  # shared input builders
write_jsonl = B.write_jsonl
write_mmbench_tsv = B.write_mmbench_tsv


# ------------------------------------------------------------------------------------------------------ GQA
@pytest.fixture
def gqa_files(tmp_path):
    q = tmp_path / "testdev_balanced_questions.json"
    q.write_text(json.dumps(B.GQA_QUESTIONS))
    a = write_jsonl(tmp_path / "a.jsonl", [
        {"question_id": "q1", "text": "Yes."},       # -> "yes" right
        {"question_id": "q2", "text": "No"},         # -> "no" right
        {"question_id": "q3", "text": "Red."},       # -> "red" right
        {"question_id": "q4", "text": "the table"},  # exact match only: wrong
    ])
    return q, a


def test_gqa_accuracy_by_hand(gqa_files, tmp_path):
    q, a = gqa_files
    out = tmp_path / "gqa.json"
    assert eval_gqa.main(["--score_only", "--questions_json", str(q), "--answers_file", str(a),
                          "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["accuracy"], r["binary"], r["open"], r["correct"], r["total"]) == (0.75, 1.0, 0.5, 3, 4)
    assert r["per_semantic_type"] == {"attr": 1.0, "rel": 0.0}


def test_gqa_missing_and_unknown_predictions(gqa_files, tmp_path, capsys):
    q, _ = gqa_files
    a = write_jsonl(tmp_path / "partial.jsonl", [{"question_id": "q1", "text": "yes"}])
    out = tmp_path / "o.json"
    assert eval_gqa.main(["--score_only", "--questions_json", str(q), "--answers_file", str(a),
                          "--output_json", str(out)]) == 2
    assert "no prediction for question 'q2'" in capsys.readouterr().err
    assert eval_gqa.main(["--score_only", "--questions_json", str(q), "--answers_file", str(a),
                          "--output_json", str(out), "--allow_missing"]) == 0
    r = json.loads(out.read_text())
    assert (r["accuracy"], r["total"], r["missing"]) == (1.0, 1, 3)
    a2 = write_jsonl(tmp_path / "unknown.jsonl", [{"question_id": "zz", "text": "yes"}])
    assert eval_gqa.main(["--score_only", "--questions_json", str(q), "--answers_file", str(a2),
                          "--output_json", str(out), "--allow_missing"]) == 2
    assert "'zz'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ ScienceQA
@pytest.mark.parametrize("text, letter", [
    ("A", "A"), ("B. dog", "B"), ("The answer is C.", "C"), ("A.", "FAILED"), ("a", "FAILED"),
    ("The answer is A", "FAILED"), ("The answer is A. The answer is B.", "FAILED"), ("E", "E"), ("F", "FAILED"),
])
def test_parse_sqa_answer(text, letter):
    assert parse_sqa_answer(text) == letter


def test_sqa_accuracy_by_hand(tmp_path):
    problems = {
        "1": {"question": "q", "choices": ["x", "y"], "answer": 0, "image": "image.png", "hint": "", "split": "test"},
        "2": {"question": "q", "choices": ["x", "y", "z"], "answer": 1, "image": "image.png", "hint": "",
              "split": "test"},
        "3": {"question": "q", "choices": ["x", "y", "z"], "answer": 2, "image": None, "hint": "h", "split": "test"},
        "4": {"question": "q", "choices": ["x", "y"], "answer": 0, "image": "image.png", "hint": "", "split": "test"},
        "5": {"question": "q", "choices": ["x", "y"], "answer": 1, "image": "image.png", "hint": "", "split": "test"},
        "6": {"question": "q", "choices": ["x", "y"], "answer": 0, "image": "image.png", "hint": "", "split": "test"},
        "7": {"question": "q", "choices": ["x", "y"], "answer": 0, "image": "image.png", "hint": "", "split": "train"},
        "8": {"question": "q", "choices": ["x", "y"], "answer": 1, "image": "image.png", "hint": "", "split": "test"},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2", "3", "4", "5", "6", "8"],
                                                          "train": ["7"]}))
    res = write_jsonl(tmp_path / "r.jsonl", [
        {"question_id": "1", "prompt": "<image>\nq", "text": "A"},                # right, IMG
        {"question_id": "2", "prompt": "<image>\nq", "text": "B. y"},             # right, IMG
        {"question_id": "3", "prompt": "q", "text": "The answer is C."},          # right, text only
        {"question_id": "4", "prompt": "<image>\nq", "text": "A."},               # FAILED, IMG
        # 5 missing: FAILED, counted in total but not in IMG (LLaVA's placeholder prompt is "Unknown")
        {"question_id": "6", "prompt": "<image>\nq", "text": "A"},                # right, IMG
        {"question_id": "7", "prompt": "<image>\nq", "text": "A"},                # other split: ignored
        {"question_id": "8", "prompt": "<image>\nq", "text": "C"},                # C is not among 2 choices: wrong
    ])
    out = tmp_path / "sqa.json"
    assert eval_sqa.main(["--score_only", "--base_dir", str(tmp_path), "--result_file", str(res),
                          "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["correct"], r["total"], r["img_correct"], r["img_total"]) == (4, 7, 3, 5)
    assert r["accuracy"] == pytest.approx(4 / 7) and r["img_accuracy"] == pytest.approx(3 / 5)
    assert (r["failed_parses"], r["missing"], r["ignored_predictions"]) == (2, 1, 1)


# ------------------------------------------------------------------------------------------------- Q-Bench
@pytest.mark.parametrize("answer, letter", [
    ("B", "B"), ("(B)", "B"), ("B. noise", "B"), ("The answer is B.", "B"), ("The image has noise.", "B"),
    ("A or B", None), ("blur and noise", None), ("Cannot determine the answer", None), ("", None),
])
def test_infer_option(answer, letter):
    assert infer_option(answer, {"A": "blur", "B": "noise", "C": "dark"}) == letter


def test_qbench_by_hand(tmp_path):
    qs = [
        {"img_path": "0.png", "question": "Is it clear?", "candidates": ["Yes", "No"], "correct_ans": "No",
         "type": 0, "concern": 0},
        {"img_path": "1.png", "question": "What distortion?", "candidates": ["blur", "noise", "dark"],
         "correct_ans": "noise", "type": 1, "concern": 1},
        {"img_path": "2.png", "question": "How sharp?", "candidates": ["high", "medium", "low"],
         "correct_ans": "low", "type": 2, "concern": 2},
        {"img_path": "3.png", "question": "Is it bright?", "candidates": ["Yes", "No"], "correct_ans": "Yes",
         "type": 0, "concern": 3},
    ]
    qf = tmp_path / "llvisionqa_dev.json"
    qf.write_text(json.dumps(qs))
    a = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 0, "text": "B"},
                                           {"question_id": 1, "text": "The image has noise."},
                                           {"question_id": 2, "text": "A"}])  # 3 is missing
    out = tmp_path / "q.json"
    assert eval_qbench.main(["--score_only", "--questions_json", str(qf), "--answers_file", str(a),
                             "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["accuracy"], r["correct"], r["total"], r["missing"]) == (0.5, 2, 4, 1)
    assert r["per_type"] == {"how": 0.0, "what": 1.0, "yes-or-no": 0.5}
    assert r["per_concern"] == {"distortion": 1.0, "in-context distortion": 0.0, "in-context other": 0.0,
                                "other": 1.0}


# ------------------------------------------------------------------------------------------------- MMBench
def test_mmbench_circular_by_hand(tmp_path):
    tsv = write_mmbench_tsv(tmp_path / "mmbench.tsv")
    rows = read_tsv(tsv)
    assert rows[1]["options"] == ["yes", "no"] and rows[1]["hint"] == "Look at the sky." and rows[0]["hint"] is None
    a = write_jsonl(tmp_path / "a.jsonl", [
        {"question_id": 0, "text": "C"},         # right
        {"question_id": 1000000, "text": "B"},   # right (bird is B after the rotation)
        {"question_id": 1, "text": "A. yes"},    # right
        {"question_id": 1000001, "text": "A"},   # wrong: the copy asks the same question, answer moved to B
    ])
    out = tmp_path / "m.json"
    assert eval_mmbench.main(["--score_only", "--tsv", str(tsv), "--answers_file", str(a),
                              "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["accuracy"], r["circular_accuracy"], r["num_questions"], r["num_groups"]) == (1.0, 0.5, 2, 2)
    assert r["per_category"] == {"animals": {"accuracy": 1.0, "circular_accuracy": 1.0},
                                 "time": {"accuracy": 1.0, "circular_accuracy": 0.0}}


def test_mmbench_llava_rounds(tmp_path):
    rows = read_tsv(write_mmbench_tsv(tmp_path / "t.tsv"))
    row = rows[0]  # cat dog bird fish, answer C (bird)
    assert is_correct(row, "C", 0)
    assert is_correct(row, "B", 1)      # round 1 shows dog bird fish cat: bird is B
    assert is_correct(row, "A", 2)      # round 2 shows bird fish cat dog
    assert not is_correct(row, "C", 1)
    answers = {(0, 0): "C", (0, 1): "B", (0, 2): "D", (1, 0): "A", (1000000, 0): "B", (1000001, 0): "B"}
    r = score_mmbench(rows, answers)  # round 2 of question 0 is wrong -> its group fails
    assert (r["accuracy"], r["circular_accuracy"]) == (1.0, 0.5)
    with pytest.raises(LetheError, match="question_id 7"):
        score_mmbench(rows, {(7, 0): "A"})
    r = score_mmbench(rows, {(0, 0): "C"})  # unanswered rows count as wrong
    assert (r["accuracy"], r["circular_accuracy"], r["missing"]) == (0.5, 0.0, 3)
