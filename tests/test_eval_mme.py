"""MME: the official calculation.py rules on hand-written results files (tests/fixtures/eval/mme_results).

existence: img1 yes/yes, no/"No, there is no cat." (both right); img2 yes/"yes" right, no/"Yes" wrong
           -> acc 3/4, acc+ 1/2 (img2 has one of two wrong: it counts for acc but not for acc+), score 125
count:     img3 yes/"I think yes" (-> other, wrong), no/"Nope" (-> no, right); img4 yes/" Yes" right, no/"Yes"
           wrong -> acc 2/4, acc+ 0/2, score 50
commonsense_reasoning: both right -> 200
"""
from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluate import eval_mme
from common.errors import LetheError
from evaluate.mme import (ResultLine, parse_mme_answer, read_benchmark, read_results_file, score_results_dir,
                          score_subtask, write_results_dir)

FIX = Path(__file__).parent / "fixtures" / "eval" / "mme_results"

B = SimpleNamespace(**runpy.run_path(str(FIX.parent / "builders.py")))  # shared input builders


@pytest.mark.parametrize("answer, parsed", [
    ("yes", "yes"), ("no", "no"), ("yes\n", "yes"), ("Yes, it is.\n", "yes"), ("No.\n", "no"), ("nope\n", "no"),
    ("not at all\n", "no"), ("I think yes\n", "other"), (" Yes\n", "yes"), ("\n", "other"), ("", "other"),
    ("Noted", "no"), ("a no", "no"), ("y", "other"), ("The answer is yes", "other"),
])
def test_parse_mme_answer(answer, parsed):
    assert parse_mme_answer(answer) == parsed


def test_results_dir_scores_by_hand(tmp_path, capsys):
    out = tmp_path / "mme.json"
    assert eval_mme.main(["--score_only", "--mme_results_dir", str(FIX), "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    ex, cnt, cs = r["subtasks"]["existence"], r["subtasks"]["count"], r["subtasks"]["commonsense_reasoning"]
    assert (ex["acc"], ex["acc_plus"], ex["score"]) == (0.75, 0.5, 125.0)
    assert (cnt["acc"], cnt["acc_plus"], cnt["score"], cnt["other_answers"]) == (0.5, 0.0, 50.0, 1)
    assert (cs["acc"], cs["acc_plus"], cs["score"]) == (1.0, 1.0, 200.0)
    assert r["perception"] == 175.0 and r["cognition"] == 200.0
    assert "OCR" in r["missing_subtasks"] and "existence" not in r["missing_subtasks"]
    assert "perception" in capsys.readouterr().out


def test_one_wrong_answer_counts_for_acc_but_not_acc_plus():
    lines = [ResultLine("a.jpg", "q1", "yes", "Yes\n", 1), ResultLine("a.jpg", "q2", "no", "Yes\n", 2),
             ResultLine("b.jpg", "q1", "yes", "Yes\n", 3), ResultLine("b.jpg", "q2", "no", "No", 4)]
    s = score_subtask(lines)
    assert (s["acc"], s["acc_plus"], s["score"]) == (0.75, 0.5, 125.0)


def test_malformed_results(tmp_path):
    bad = tmp_path / "existence.txt"
    bad.write_text("a.jpg\tq\tYes\tYes\tand a tab\na.jpg\tq2\tNo\tNo\n")
    with pytest.raises(LetheError, match=r"existence.txt:1: expected 4 tab-separated fields"):
        read_results_file(bad)
    bad.write_text("a.jpg\tq\tMaybe\tYes\n")
    with pytest.raises(LetheError, match=r"existence.txt:1: ground truth 'Maybe'"):
        read_results_file(bad)
    bad.write_text("a.jpg\tq\tYes\tYes\n")
    with pytest.raises(LetheError, match="exactly two questions"):
        score_results_dir(tmp_path)
    bad.write_text("a.jpg\tq\tYes\tYes\nb.jpg\tq\tNo\tNo\n")
    with pytest.raises(LetheError, match="consecutive"):
        score_results_dir(tmp_path)


def test_benchmark_reader_both_layouts_and_results_writer(tmp_path):
    B.make_mme_benchmark(tmp_path / "MME")
    qs = read_benchmark(tmp_path / "MME")
    assert [(q.subtask, q.image, q.gt, q.index) for q in qs] == [
        ("artwork", "p1.png", "Yes", 0), ("artwork", "p1.png", "No", 1), ("existence", "e1.png", "Yes", 0),
        ("existence", "e1.png", "No", 1), ("existence", "e2.png", "No", 0), ("existence", "e2.png", "Yes", 1)]
    assert qs[0].image_path == str(tmp_path / "MME" / "artwork" / "images" / "p1.png")
    answers = {q.id: ("Yes" if "dog" in q.question else "No\tbecause\nof reasons") for q in qs}
    write_results_dir(qs, answers, tmp_path / "res")
    assert (tmp_path / "res" / "existence.txt").read_text().splitlines()[1] == \
        "e1.png\tIs there a cat in this image? Please answer yes or no.\tNo\tNo because of reasons"
    r = score_results_dir(tmp_path / "res")
    # artwork: dog->Yes right, cat->No right; existence: e1 both right, e2 dog->Yes wrong, bus->No wrong
    assert r["subtasks"]["artwork"]["score"] == 200.0
    assert (r["subtasks"]["existence"]["acc"], r["subtasks"]["existence"]["acc_plus"]) == (0.5, 0.5)
    assert r["perception"] == 300.0 and r["cognition"] == 0.0
    with pytest.raises(LetheError, match="no answer for MME question existence/e2.png/1"):
        write_results_dir(qs, {k: v for k, v in answers.items() if not k.endswith("e2.png/1")}, tmp_path / "r2")
