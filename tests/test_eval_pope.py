"""POPE: LLaVA parsing, key-based matching, per-category and mean metrics (fixture: tests/fixtures/eval/pope).

Fixture answers (shuffled; the popular label file is in reverse order, so position matching would be wrong):
  random : 1 yes "Yes."->yes TP | 2 no "No, there is not."->no TN | 3 yes "NO"->yes TP | 4 no "Yes, there..."->yes FP
  popular: 5 yes "no."->no FN | 6 no "Not sure."->yes FP ("Not" is not a no-word) | 7 yes "yes" TP |
           8 no "I do not think so"->no TN

Releases (fixtures/eval/pope_releases: label files ``first/`` and ``corrected/`` differ only in "imange" -> "image";
the question file is LLaVA's copy of the first release, question ids 3001.., answers shuffled), adversarial:
  3001 umbrella@210789 yes "Yes" TP | 3002 truck no "No." TN | 3003 dining table@210789 yes "No" FN |
  3004 orange yes "No, there is no orange." FN | 3005 car no "Yes, there is a car." FP | 3006 traffic light yes
  "yes" TP | 3007 oven no "There is an oven"->yes FP | 3008 dining table@458338 no "Yes" FP
  -> TP 2, FP 3, TN 1, FN 2: accuracy 3/8, precision 2/5, recall 1/2, F1 4/9, yes_ratio 5/8
  (pairing the two dining-table questions by object alone would swap them: accuracy 5/8).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluate import eval_pope
from evaluate.pope import parse_pope_answer, question_object

FIX = Path(__file__).parent / "fixtures" / "eval" / "pope"
ARGS = ["--question_file", str(FIX / "llava_pope_test.jsonl"), "--annotation_dir", str(FIX)]
REL = FIX.parent / "pope_releases"


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


# ---------------------------------------------------------------------------- releases with different spelling
@pytest.mark.parametrize("text, obj", [
    ("Is there a dog in the image?", "dog"),
    ("Is there an umbrella in the imange?", "umbrella"),  # first POPE releases, 246 questions
    ("Is there an traffic light in the image?", "traffic light"),  # corrected random split, as released
    ("Is there a dining table in the image?\nAnswer the question using a single word or phrase.", "dining table"),
    ("is there a  Hot Dog in the IMAGE ? Please answer yes or no.", "hot dog"),
    ("Is there a skis in the picture?", "skis"),
    ("What color is the car?", None), ("Is there a dog?", None), ("Is there a dog in the kitchen?", None),
])
def test_question_object(text, obj):
    assert question_object(text) == obj


def _score(tmp_path, labels_dir, questions, name):
    out = tmp_path / f"{name}.json"
    assert eval_pope.main(["--score_only", "--answers_file", str(REL / "answers.jsonl"), "--question_file",
                           str(questions), "--annotation_dir", str(labels_dir), "--output_json", str(out)]) == 0
    return json.loads(out.read_text())


def test_either_label_release_gives_the_same_numbers(tmp_path):
    first = (REL / "first" / "coco_pope_adversarial.json").read_text()
    corrected = (REL / "corrected" / "coco_pope_adversarial.json").read_text()
    assert first != corrected and first.replace("imange", "image") == corrected  # they differ only in spelling
    llava_questions = REL / "llava_pope_questions.jsonl"  # copied from the first release: "imange"
    assert "imange" in llava_questions.read_text()
    fixed_questions = tmp_path / "q_fixed.jsonl"
    fixed_questions.write_text(llava_questions.read_text().replace("imange", "image"))
    results = [_score(tmp_path, REL / release, q, f"{release}-{i}")
               for release in ("first", "corrected") for i, q in enumerate((llava_questions, fixed_questions))]
    assert all(r == results[0] for r in results)
    adv = results[0]["adversarial"]
    assert (adv["TP"], adv["FP"], adv["TN"], adv["FN"], adv["unanswered"]) == (2, 3, 1, 2, 0)
    assert adv["accuracy"] == pytest.approx(3 / 8) and adv["precision"] == pytest.approx(2 / 5)
    assert adv["recall"] == pytest.approx(1 / 2) and adv["f1"] == pytest.approx(4 / 9)
    assert adv["yes_ratio"] == pytest.approx(5 / 8) and results[0]["mean_f1"] == pytest.approx(4 / 9)


def _fail(tmp_path, capsys, questions_text=None, labels_text=None):
    questions = tmp_path / "q.jsonl"
    questions.write_text(questions_text or (REL / "llava_pope_questions.jsonl").read_text())
    labels = tmp_path / "labels"
    labels.mkdir(exist_ok=True)
    (labels / "coco_pope_adversarial.json").write_text(
        labels_text or (REL / "first" / "coco_pope_adversarial.json").read_text())
    rc = eval_pope.main(["--score_only", "--answers_file", str(REL / "answers.jsonl"), "--question_file",
                         str(questions), "--annotation_dir", str(labels), "--output_json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "o.json").exists()
    assert err.startswith("error: ") and err.count("\n") == 1  # one line
    return err, questions, labels / "coco_pope_adversarial.json"


def test_unparseable_question_names_file_and_line(tmp_path, capsys):
    lines = (REL / "llava_pope_questions.jsonl").read_text().splitlines(keepends=True)
    lines[1] = json.dumps({"question_id": 3002, "image": "COCO_val2014_000000210789.jpg",
                           "text": "What color is the truck?", "category": "adversarial"}) + "\n"
    err, questions, _ = _fail(tmp_path, capsys, questions_text="".join(lines))
    assert f"{questions}:2: cannot tell which object" in err and "What color is the truck?" in err


def test_unparseable_label_names_file_and_line(tmp_path, capsys):
    rows = (REL / "corrected" / "coco_pope_adversarial.json").read_text().replace(
        "Is there a car in the image?", "Is a car visible?")
    err, _, labels = _fail(tmp_path, capsys, labels_text=rows)
    assert f"{labels}:5: cannot tell which object" in err


def test_ambiguous_and_unmatched_pairs_are_refused(tmp_path, capsys):
    # the same question in both spellings in one label file: which label?
    text = (REL / "first" / "coco_pope_adversarial.json").read_text()
    twice = text + text.splitlines(keepends=True)[0].replace("imange", "image").replace('"yes"', '"no"')
    err, _, labels = _fail(tmp_path, capsys, labels_text=twice)
    assert f"{labels}:9: ambiguous" in err and "'umbrella'" in err and "line 1" in err
    # two questions of one category asking the same thing
    qs = (REL / "llava_pope_questions.jsonl").read_text()
    extra = json.dumps({"question_id": 9999, "image": "COCO_val2014_000000574692.jpg",
                        "text": "Is there an orange in the image?", "category": "adversarial"}) + "\n"
    err, questions, _ = _fail(tmp_path, capsys, questions_text=qs + extra)
    assert f"{questions}:9: ambiguous" in err and "line 4" in err
    # a label file without the asked (image, object)
    rows = [r for r in text.splitlines(keepends=True) if "oven" not in r]
    err, questions, _ = _fail(tmp_path, capsys, labels_text="".join(rows))
    assert f"{REL / 'answers.jsonl'}:1: question_id 3007 ({questions}:7): no label for 'oven'" in err


# ------------------------------------------------------------------------------------------- partial answer files
def test_partial_answers_are_refused_unless_allowed(tmp_path, capsys):
    """3 of the 8 questions answered (an interrupted generation): refused in one line naming the missing counts per
    category; with --allow_partial the json says what is missing, and the table says PARTIAL."""
    lines = (FIX / "answers.jsonl").read_text().splitlines(keepends=True)
    answers = tmp_path / "a.jsonl"
    answers.write_text("".join(lines[:3]))  # question ids 7, 2, 5: popular 2, random 1
    out = tmp_path / "o.json"
    rc = eval_pope.main(["--score_only", "--answers_file", str(answers), *ARGS, "--output_json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and not out.exists()
    assert f"{answers}: answers only 3 of the 8 questions" in err
    assert "popular 2, random 3" in err and "--allow_partial" in err

    assert eval_pope.main(["--score_only", "--answers_file", str(answers), *ARGS, "--output_json", str(out),
                           "--allow_partial"]) == 0
    captured = capsys.readouterr()
    assert "PARTIAL: 5 of 8 questions unanswered" in captured.out
    assert "warning: partial result" in captured.err and "popular 2, random 3" in captured.err
    r = json.loads(out.read_text())
    assert r["complete"] is False and r["num_questions"] == 8
    assert r["missing_answers"] == {"popular": 2, "random": 3}
    assert (r["random"]["num_answers"], r["random"]["missing_answers"]) == (1, 3)
    assert (r["popular"]["num_answers"], r["popular"]["missing_answers"]) == (2, 2)
    # a whole category without answers is named too (and gets no metrics of its own)
    answers.write_text("".join(ln for ln in lines if json.loads(ln)["question_id"] <= 4))
    assert eval_pope.main(["--score_only", "--answers_file", str(answers), *ARGS, "--output_json", str(out),
                           "--allow_partial"]) == 0
    r = json.loads(out.read_text())
    assert r["missing_answers"] == {"popular": 4} and "popular" not in r and r["complete"] is False


def test_complete_answers_say_so(tmp_path):
    out = tmp_path / "o.json"
    assert eval_pope.main(["--score_only", "--answers_file", str(FIX / "answers.jsonl"), *ARGS,
                           "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["complete"] is True and r["missing_answers"] == {} and r["num_questions"] == 8
    assert r["random"]["missing_answers"] == 0 and r["popular"]["missing_answers"] == 0
