"""EFUF's pos_neg.json / sentences.json (finetune/format_data.py) and their loaders (finetune/data.py)."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from common.errors import LetheError
from finetune.data import load_pos_neg, load_sentences
from finetune.format_data import find_subsentence, format_rows, main, subsentences

GIRAFFE = "A giraffe stands in a grassy field. The giraffe is wearing a necklace and has a long, curved neck."


def _pieces(caption: str) -> list[str]:
    return [caption[a:b] for a, b in subsentences(caption)]


# ============================================================================================== sub-sentences
@pytest.mark.parametrize("caption", [
    "", "no punctuation at all", "end.", "...", ",leading comma", "a,,b", "a, b. c; d! e? f: g",
    "Wait!?! What... yes;: no", "It is 3.5 m tall, really.", GIRAFFE, "  spaced ,  out  .  ", ".,;!?:",
    "trailing punctuation run!!!", "one\nline, two\tline",
])
def test_subsentences_are_re_split_pieces(caption):
    assert _pieces(caption) == re.split("[,.;!?:]+", caption)
    spans = subsentences(caption)
    assert spans[0][0] == 0 and spans[-1][1] == len(caption)
    assert all(a <= b for a, b in spans) and all(b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))


def test_subsentences_random_strings_match_re_split():
    rng = random.Random(0)
    for _ in range(500):
        caption = "".join(rng.choice("ab ,.;!?:-'") for _ in range(rng.randint(0, 30)))
        assert _pieces(caption) == re.split("[,.;!?:]+", caption), caption


def test_subsentences_exact_spans():
    assert subsentences("") == [(0, 0)]
    assert subsentences("a, b.") == [(0, 1), (2, 4), (5, 5)]
    assert subsentences("x;;y") == [(0, 1), (3, 4)]


# ============================================================================================== find_subsentence
def test_find_subsentence_without_position_is_first_whole_word_piece():
    caption = "A dog runs. The cat sleeps, and the dog barks."
    assert find_subsentence(caption, "dog") == (0, 10)
    assert caption[slice(*find_subsentence(caption, "cat"))] == " The cat sleeps"
    assert caption[slice(*find_subsentence(caption, "barks"))] == " and the dog barks"
    assert find_subsentence(caption, "horse") is None
    assert find_subsentence(caption, "Dog") is None  # exact text, as the objects come from the caption


def test_find_subsentence_with_position_takes_the_piece_at_that_position():
    caption = "A dog runs. The cat sleeps, and the dog barks."
    second = caption.rindex("dog")
    assert find_subsentence(caption, "dog", second) == (27, 45)
    assert caption[27:45] == " and the dog barks"
    assert find_subsentence(caption, "dog", 2) == (0, 10)
    assert find_subsentence(caption, "dog", caption.index(",")) is None  # on the punctuation itself
    assert find_subsentence(caption, "dog", len(caption)) is None


def test_find_subsentence_is_word_bounded():
    caption = "A category of toys, a cat on a mat, some cats."
    # the original's substring test picked the first piece ("cat" in "category")
    assert [p for p in re.split("[,.;!?:]+", caption) if "cat" in p][0] == "A category of toys"
    assert caption[slice(*find_subsentence(caption, "cat"))] == " a cat on a mat"
    assert caption[slice(*find_subsentence(caption, "cats"))] == " some cats"
    assert find_subsentence("A category of toys.", "cat") is None
    assert find_subsentence("a t-shirt, a shirt", "shirt") == (0, 9)  # "-" is a word boundary
    assert find_subsentence("axb and more, then a+b", "a+b") == (13, 22)  # regex characters are literal


def test_giraffe_example_from_the_notes():
    # efuf.md §2.2: object "necklace" → target " The giraffe is wearing a necklace and has a long"
    start = GIRAFFE.index("necklace")
    pos_neg, _ = format_rows([{"image": "g.jpg", "caption": GIRAFFE, "scores": [18.5],
                               "objects": [{"text": "necklace", "start": start, "end": start + 8}]}])
    (entry,) = pos_neg
    assert entry["sentence"][entry["position"]:] == " The giraffe is wearing a necklace and has a long"
    assert entry["sentence"][:entry["position"]] == "A giraffe stands in a grassy field."
    assert entry == {"image": "g.jpg", "sentence": "A giraffe stands in a grassy field. The giraffe is wearing a "
                     "necklace and has a long", "position": 35, "score": 18.5}
    # the same without a position (a plain string object, as in the original objects.txt)
    assert format_rows([{"image": "g.jpg", "caption": GIRAFFE, "objects": ["necklace"], "scores": [18.5]}])[0] == \
        pos_neg


# ============================================================================================== format_rows
def _obj(caption: str, text: str, nth: int = 0) -> dict:
    """The object as insight/object.py writes it: the nth whole-word mention with its span."""
    start = [m.start() for m in re.finditer(r"\b" + re.escape(text) + r"\b", caption)][nth]
    return {"text": text, "category": text, "start": start, "end": start + len(text)}


def test_format_rows_original_format():
    c1 = "A dog runs on the grass, a frisbee flies. The dog jumps!"
    c2 = "Two cups; a plate: a fork."
    c3 = "An empty wall."
    rows = [
        {"image": "COCO_train2014_000000000001.jpg", "caption": c1, "scores": [35.25, 20.0, None, 33],
         "objects": [_obj(c1, "dog"), _obj(c1, "frisbee"), _obj(c1, "grass"), _obj(c1, "dog", 1)]},
        {"image": "COCO_train2014_000000000002.jpg", "caption": c2, "scores": [30.0, 25.0, 29.0],
         "objects": [_obj(c2, "cups"), _obj(c2, "plate"), _obj(c2, "fork")]},
        {"image": "COCO_train2014_000000000003.jpg", "caption": c3, "objects": [], "scores": []},
        {"image": "COCO_train2014_000000000004.jpg", "caption": c2, "objects": ["plate", "spoon"],
         "scores": [31.5, 12.0]},  # plain strings: located by word; "spoon" is nowhere
    ]
    pos_neg, sentences = format_rows(rows)
    assert pos_neg == [
        {"image": "COCO_train2014_000000000001.jpg", "sentence": "A dog runs on the grass", "position": 0,
         "score": 35.25},
        {"image": "COCO_train2014_000000000001.jpg", "sentence": "A dog runs on the grass, a frisbee flies",
         "position": 24, "score": 20.0},
        {"image": "COCO_train2014_000000000002.jpg", "sentence": "Two cups", "position": 0, "score": 30.0},
        {"image": "COCO_train2014_000000000002.jpg", "sentence": "Two cups; a plate", "position": 9, "score": 25.0},
        {"image": "COCO_train2014_000000000002.jpg", "sentence": "Two cups; a plate: a fork", "position": 18,
         "score": 29.0},
        {"image": "COCO_train2014_000000000004.jpg", "sentence": "Two cups; a plate", "position": 9, "score": 31.5},
    ]
    assert all(list(e) == ["image", "sentence", "position", "score"] for e in pos_neg)
    assert all(isinstance(e["score"], float) and isinstance(e["position"], int) for e in pos_neg)
    assert [e["sentence"][e["position"]:] for e in pos_neg] == [
        "A dog runs on the grass", " a frisbee flies", "Two cups", " a plate", " a fork", " a plate"]
    # the second "dog" (score 33) is the same object: EFUF keeps each object once per caption, at its first mention
    # sentences: only captions whose objects all have a score (row 1 has a None, row 3 no objects)
    assert sentences == [
        {"image": "COCO_train2014_000000000002.jpg", "sentence": c2, "mean": 28.0, "min": 25.0},
        {"image": "COCO_train2014_000000000004.jpg", "sentence": c2, "mean": 21.75, "min": 12.0},
    ]
    assert all(list(s) == ["image", "sentence", "mean", "min"] for s in sentences)


def test_format_rows_errors_name_the_line():
    good = {"image": "a.jpg", "caption": "A cat.", "objects": ["cat"], "scores": [30.0]}
    with pytest.raises(LetheError, match=r"^scores\.jsonl:2: 2 objects but 1 scores$"):
        format_rows([good, {**good, "objects": ["cat", "mat"]}], "scores.jsonl")
    with pytest.raises(LetheError, match=r"^<rows>:3: 1 objects but 0 scores$"):
        format_rows([good, good, {**good, "scores": []}])
    with pytest.raises(LetheError, match=r"^s:1: missing field 'scores'$"):
        format_rows([{k: v for k, v in good.items() if k != "scores"}], "s")


# ============================================================================================== CLI
def _write_scores(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SCORE_ROWS = [
    {"image_id": 9, "image": "COCO_train2014_000000000009.jpg", "caption": GIRAFFE,
     "objects": [_obj(GIRAFFE, "giraffe"), _obj(GIRAFFE, "field"), _obj(GIRAFFE, "necklace"), _obj(GIRAFFE, "neck")],
     "scores": [34.5, 28.0, 18.25, 31.0]},
    {"image_id": 25, "image": "COCO_train2014_000000000025.jpg", "caption": "A bus, a car.",
     "objects": [_obj("A bus, a car.", "bus"), _obj("A bus, a car.", "car")], "scores": [None, 40.0]},
]


def test_cli_writes_both_files_atomically_and_they_round_trip(tmp_path, capsys):
    scores = _write_scores(tmp_path / "scores.jsonl", SCORE_ROWS)
    out = tmp_path / "out"
    argv = ["--scores_path", str(scores), "--pos_neg_data_path", str(out / "pos_neg.json"),
            "--sentence_data_path", str(out / "sentences.json")]
    assert main(argv) == 0
    assert "5 objects" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["pos_neg.json", "sentences.json"]  # no temp files left
    pos_neg = json.loads((out / "pos_neg.json").read_text())
    sentences = json.loads((out / "sentences.json").read_text())
    assert (pos_neg, sentences) == format_rows(SCORE_ROWS)
    assert [(e["sentence"][e["position"]:], e["score"]) for e in pos_neg] == [
        ("A giraffe stands in a grassy field", 34.5), ("A giraffe stands in a grassy field", 28.0),
        (" The giraffe is wearing a necklace and has a long", 18.25), (" curved neck", 31.0), (" a car", 40.0)]
    assert sentences == [{"image": "COCO_train2014_000000000009.jpg", "sentence": GIRAFFE, "mean": 27.9375,
                          "min": 18.25}]
    # what training loads from them: thresholds 23 / 32 → one positive, one negative, three unused
    pos, neg = load_pos_neg(out / "pos_neg.json", "imgs", "Describe.", 23.0, 32.0)
    assert [(p.context, p.target, p.score) for p in pos] == [("", "A giraffe stands in a grassy field", 34.5),
                                                             ("A bus,", " a car", 40.0)]
    assert [(n.context, n.target) for n in neg] == [("A giraffe stands in a grassy field.",
                                                     " The giraffe is wearing a necklace and has a long")]
    assert load_sentences(out / "sentences.json", "imgs", "Describe.", 23.0, 27.5) == []  # min 18.25 < 23
    assert len(load_sentences(out / "sentences.json", "imgs", "Describe.", 18.0, 27.5)) == 1


def test_cli_bad_input_leaves_existing_outputs_alone(tmp_path, capsys, monkeypatch):
    scores = _write_scores(tmp_path / "scores.jsonl", [SCORE_ROWS[0], {**SCORE_ROWS[1], "scores": [40.0]}])
    pn, st = tmp_path / "pos_neg.json", tmp_path / "sentences.json"
    pn.write_text("old\n")
    st.write_text("old\n")
    argv = ["--scores_path", str(scores), "--pos_neg_data_path", str(pn), "--sentence_data_path", str(st)]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: {scores}:2: 2 objects but 1 scores"]
    assert pn.read_text() == st.read_text() == "old\n"
    # a failure while writing (here: the final rename) leaves the old file and no temp file
    _write_scores(scores, SCORE_ROWS)
    import common.io

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(common.io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        main(argv)
    assert pn.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "pos_neg.json", "scores.jsonl", "sentences.json"]


def test_cli_error_line_number_counts_blank_lines(tmp_path, capsys):
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps(SCORE_ROWS[0]) + "\n\n" + json.dumps({**SCORE_ROWS[1], "scores": []}) + "\n")
    assert main(["--scores_path", str(scores), "--pos_neg_data_path", str(tmp_path / "p.json"),
                 "--sentence_data_path", str(tmp_path / "s.json")]) == 2
    assert f"{scores}:3:" in capsys.readouterr().err


# ============================================================================================== the released format
ORIGINAL_POS_NEG = """[
  {
    "image": "COCO_train2014_000000000009.jpg",
    "sentence": "The image shows a plate of food with broccoli",
    "position": 0,
    "score": 33.61808395385742
  },
  {
    "image": "COCO_train2014_000000000009.jpg",
    "sentence": "The image shows a plate of food with broccoli, carrots and a fork",
    "position": 46,
    "score": 21.870180130004883
  },
  {
    "image": "COCO_train2014_000000000025.jpg",
    "sentence": "A giraffe stands in a grassy field. The giraffe is wearing a necklace and has a long",
    "position": 35,
    "score": 23.0
  },
  {
    "image": "COCO_train2014_000000000025.jpg",
    "sentence": "A giraffe stands in a grassy field",
    "position": 0,
    "score": 32.0
  },
  {
    "image": "COCO_train2014_000000000030.jpg",
    "sentence": "A vase with flowers on a table. There is a cat",
    "position": 31,
    "score": 14.25
  }
]"""


def test_released_format_loads_with_the_thresholds(tmp_path):
    # as the original format_data.py writes it: json.dump(results, f, indent=2), no label field
    path = tmp_path / "pos_neg.json"
    path.write_text(ORIGINAL_POS_NEG)
    pos, neg = load_pos_neg(path, tmp_path / "images", "USER: <image>\nPlease describe the image. ASSISTANT:", 23, 32)
    assert [(p.image, p.context, p.target, p.score, p.add_eos) for p in pos] == [
        (str(tmp_path / "images" / "COCO_train2014_000000000009.jpg"), "",
         "The image shows a plate of food with broccoli", 33.61808395385742, False)]
    assert [(n.image, n.context, n.target, n.score) for n in neg] == [
        (str(tmp_path / "images" / "COCO_train2014_000000000009.jpg"),
         "The image shows a plate of food with broccoli,", " carrots and a fork", 21.870180130004883),
        (str(tmp_path / "images" / "COCO_train2014_000000000030.jpg"), "A vase with flowers on a table.",
         " There is a cat", 14.25)]
    assert all(p.prompt.endswith("ASSISTANT:") for p in pos + neg)
    # 23.0 and 32.0 are unused (strict thresholds); the split moves with the thresholds
    pos, neg = load_pos_neg(path, "images", "p", 23.5, 31.5)
    assert sorted(p.score for p in pos) == [32.0, 33.61808395385742]
    assert sorted(n.score for n in neg) == [14.25, 21.870180130004883, 23.0]
    # our writer produces the same shape: the entries of a formatted row load the same way
    ours = tmp_path / "ours.json"
    c = "The image shows a plate of food with broccoli, carrots and a fork."
    rows = [{"image": "COCO_train2014_000000000009.jpg", "caption": c, "objects": ["broccoli", "carrots"],
             "scores": [33.61808395385742, 21.870180130004883]}]
    ours.write_text(json.dumps(format_rows(rows)[0], indent=2))
    assert json.loads(ours.read_text()) == json.loads(path.read_text())[:2]


def test_released_format_bad_entries(tmp_path):
    path = tmp_path / "pos_neg.json"
    path.write_text(json.dumps([{"image": "a.jpg", "sentence": "abc", "position": 1, "score": 10.0},
                                {"image": "a.jpg", "sentence": "abc", "score": 10.0}]))
    with pytest.raises(LetheError, match="entry 1 lacks a valid position"):
        load_pos_neg(path, "i", "p", 23, 32)
    path.write_text(json.dumps([{"image": "a.jpg", "sentence": "abc", "position": 4, "score": 10.0}]))
    with pytest.raises(LetheError, match="entry 0: position 4 outside its sentence"):
        load_pos_neg(path, "i", "p", 23, 32)


def test_format_rows_keep_each_object_once_per_caption():
    """EFUF's unit: an object repeated in a caption (same category, or same text in any case) counts once, at its
    first mention, in pos_neg.json and in the sentence's mean / min."""
    c = "A cup, a mug and a Cup. A plate."
    objs = [{"text": "cup", "category": "cup", "start": 2, "end": 5},
            {"text": "mug", "category": "cup", "start": 9, "end": 12},
            {"text": "Cup", "category": "cup", "start": 19, "end": 22},
            {"text": "plate", "category": "plate", "start": 26, "end": 31}]
    pos_neg, sentences = format_rows([{"image": "a.jpg", "caption": c, "objects": objs,
                                       "scores": [30.0, 10.0, 20.0, 26.0]}])
    assert [(e["sentence"][e["position"]:], e["score"]) for e in pos_neg] == [("A cup", 30.0), (" A plate", 26.0)]
    assert sentences == [{"image": "a.jpg", "sentence": c, "mean": 28.0, "min": 26.0}]
    # plain strings (an objects.txt-style list): the same text in another case is the same object
    pos_neg, _ = format_rows([{"image": "b.jpg", "caption": c, "objects": ["cup", "Cup", "plate"],
                               "scores": [31.0, 5.0, 26.0]}])
    assert [e["score"] for e in pos_neg] == [31.0, 26.0]
