"""POPE: LLaVA parsing, key-based matching, per-category and mean metrics (fixture: tests/fixtures/eval/pope).

Fixture answers (shuffled; the popular label file is in reverse order, so position matching would be wrong):
  random : 1 yes "Yes."->yes TP | 2 no "No, there is not."->no TN | 3 yes "NO"->yes TP | 4 no "Yes, there..."->yes FP
  popular: 5 yes "no."->no FN | 6 no "Not sure."->yes FP ("Not" is not a no-word) | 7 yes "yes" TP |
           8 no "I do not think so"->no TN
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluate import eval_pope
from evaluate.pope import parse_pope_answer

FIX = Path(__file__).parent / "fixtures" / "eval" / "pope"
ARGS = ["--question_file", str(FIX / "llava_pope_test.jsonl"), "--annotation_dir", str(FIX)]


@pytest.mark.parametrize("text, parsed", [
    ("Yes.", "yes"), ("", "yes"), ("yes", "yes"), ("No", "no"), ("no.", "no"), ("No, there is none.", "no"),
    ("There is not a dog", "no"), ("Not really", "yes"), ("NO", "yes"), ("Yes. No.", "yes"),
    ("Yes, but no dog", "no"), ("No\nthere", "yes"), ("nothing", "yes"),
])
def test_parse_pope_answer(text, parsed):
    assert parse_pope_answer(text) == parsed


def test_pope_scores_by_hand(tmp_path, capsys):
    out = tmp_path / "pope.json"
    assert eval_pope.main(["--score_only", "--answers_file", str(FIX / "answers.jsonl"), *ARGS,
                           "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    rnd, pop = r["random"], r["popular"]
    assert (rnd["TP"], rnd["FP"], rnd["TN"], rnd["FN"]) == (2, 1, 1, 0)
    assert rnd["accuracy"] == 0.75 and rnd["precision"] == pytest.approx(2 / 3) and rnd["recall"] == 1.0
    assert rnd["f1"] == pytest.approx(0.8) and rnd["yes_ratio"] == 0.75
    assert (pop["TP"], pop["FP"], pop["TN"], pop["FN"]) == (1, 1, 1, 1)
    assert [pop[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == [0.5] * 5
    mean = r["mean"]
    assert mean["accuracy"] == pytest.approx(0.625) and mean["precision"] == pytest.approx(7 / 12)
    assert mean["recall"] == pytest.approx(0.75) and mean["f1"] == pytest.approx(0.65)
    assert mean["yes_ratio"] == pytest.approx(0.625) and r["mean_f1"] == pytest.approx(0.65)
    assert (mean["TP"], mean["FP"], mean["TN"], mean["FN"]) == (3, 2, 2, 1)
    assert "mean" in capsys.readouterr().out


def test_answer_without_question_names_the_id(tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"question_id": 1, "text": "yes"}\n{"question_id": 99, "text": "no"}\n')
    rc = eval_pope.main(["--score_only", "--answers_file", str(answers), *ARGS, "--output_json",
                         str(tmp_path / "o.json")])
    assert rc == 2
    assert "question_id 99" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_question_without_label_names_the_id(tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 42, "image": "a.jpg", "text": "Is there a zebra in the image?", '
                         '"category": "random"}\n')
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"question_id": 42, "text": "no"}\n')
    rc = eval_pope.main(["--score_only", "--answers_file", str(answers), "--question_file", str(questions),
                         "--annotation_dir", str(FIX), "--output_json", str(tmp_path / "o.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "question_id 42" in err and "no label" in err


def test_custom_suffix_and_partial_answers(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": "a1", "image": "a.jpg", "text": "Is there a dog in the image? Reply '
                         'briefly.", "category": "random"}\n')
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"question_id": "a1", "text": "no"}\n')
    out = tmp_path / "o.json"
    assert eval_pope.main(["--score_only", "--answers_file", str(answers), "--question_file", str(questions),
                           "--annotation_dir", str(FIX), "--output_json", str(out),
                           "--instruction_suffixes", "Reply briefly."]) == 0
    r = json.loads(out.read_text())
    m = r["random"]
    assert (m["TP"], m["FP"], m["TN"], m["FN"], m["unanswered"]) == (0, 0, 0, 1, 3)
    assert m["precision"] == 0.0 and m["f1"] == 0.0  # zero denominators give 0, not an exception
    assert r["categories_without_answers"] == ["popular"]


def test_malformed_answer_line_names_the_line(tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"question_id": 1, "text": "yes"}\n\n{"question_id": 2, "text": "no"\n')
    rc = eval_pope.main(["--score_only", "--answers_file", str(answers), *ARGS, "--output_json",
                         str(tmp_path / "o.json")])
    assert rc == 2
    assert f"{answers}:3: malformed JSON line" in capsys.readouterr().err
