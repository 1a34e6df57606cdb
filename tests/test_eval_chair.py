"""CHAIR on a hand-built COCO fixture (tests/fixtures/eval/coco + captions.jsonl), numbers worked out by hand.

Ground truth (instances + objects in the reference captions, val and train files pooled):
  1 {dog, person}   2 {teddy bear, toilet}   3 {bus, cup, person} (the reference "A red bus with people."
  adds person; its singular "bus" is "bu")   4 {toilet, chair}   5 {bicycle} (train split)   6 {} (no annotation)
Generated captions -> mentions (category), hallucinated marked *:
  1 dog dog man(person) dogs(dog) cat*      16 tokens  recall 2/2
  2 teddy bear, hot dog*, toilet (seat)      9 tokens  recall 2/2
  3 buses(bus) -- the singular "bus" is "bu" 11 tokens  recall 1/3
  4 toilet, wine glass* -- "seat" dropped    11 tokens  recall 1/2
  5 bicycle                                  3 tokens  recall 1/1
  6 cat*                                     3 tokens  recall 0/0
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluate import eval_auto
from common.text.objects import ObjectExtractor
from evaluate.chair import chair_extractor, compute_chair, load_ground_truth, read_captions
from common.errors import LetheError

FIX = Path(__file__).parent / "fixtures" / "eval"
COCO = FIX / "coco"
CAPTIONS = FIX / "captions.jsonl"


@pytest.fixture(scope="module")
def scored():
    ex = ObjectExtractor.canonical()
    caps = read_captions(CAPTIONS)
    gt = load_ground_truth(COCO, ex, {c.image_id for c in caps})
    return ex, caps, gt


def test_ground_truth_pools_instances_and_captions_over_splits(scored):
    _, _, gt = scored
    assert gt.objects == {1: {"dog", "person"}, 2: {"teddy bear", "toilet"}, 3: {"bus", "cup", "person"},
                          4: {"toilet", "chair"}, 5: {"bicycle"}}
    assert sorted(gt.files) == ["captions_train2014.json", "captions_val2014.json", "instances_train2014.json",
                                "instances_val2014.json"]
    assert gt.references[1] == ["A dog lying on the floor.", "A man with his dog."]


def test_chair_every_mention_counts(scored):
    ex, caps, gt = scored
    m, details = compute_chair(caps, ex, gt.objects)
    assert m["num_captions"] == 6
    assert m["object_mentions"] == 13          # 5 + 3 + 1 + 2 + 1 + 1
    assert m["hallucinated_mentions"] == 4     # cat, hot dog, wine glass, cat
    assert m["hallucinated_captions"] == 4     # captions 1, 2, 4, 6
    assert m["CHAIRs"] == pytest.approx(4 / 6)
    assert m["CHAIRi"] == pytest.approx(4 / 13)
    assert m["Recall"] == pytest.approx(7 / 10)  # (2 + 2 + 1 + 1 + 1 + 0) / (2 + 2 + 3 + 2 + 1 + 0)
    assert m["Len"] == pytest.approx(53 / 6)     # 16 + 9 + 11 + 11 + 3 + 3 tokens after merges
    d1 = details[0]
    assert d1["mentions"] == [["dog", "dog"], ["dog", "dog"], ["man", "person"], ["dog", "dog"], ["cat", "cat"]]
    assert d1["hallucinated"] == [["cat", "cat"]]
    assert (d1["CHAIRs"], d1["CHAIRi"], d1["Recall"], d1["Len"]) == (1, 0.2, 1.0, 16)
    assert details[2]["mentions"] == [["bus", "bus"]] and details[2]["Recall"] == pytest.approx(1 / 3)
    assert details[3]["mentions"] == [["toilet", "toilet"], ["wine glass", "wine glass"]]
    assert details[5]["gt_objects"] == [] and details[5]["CHAIRs"] == 1


def test_chair_dedup_per_caption(scored):
    ex, caps, gt = scored
    m, details = compute_chair(caps, ex, gt.objects, dedup_per_caption=True)
    assert m["object_mentions"] == 11          # caption 1: dog, man, cat
    assert m["hallucinated_mentions"] == 4
    assert m["CHAIRi"] == pytest.approx(4 / 11)
    assert m["CHAIRs"] == pytest.approx(4 / 6)
    assert m["Recall"] == pytest.approx(7 / 10)
    assert details[0]["mentions"] == [["dog", "dog"], ["man", "person"], ["cat", "cat"]]


def test_eval_auto_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run" / "chair.json"
    rc = eval_auto.main(["--caption_eval_path", str(CAPTIONS), "--coco_annotation_dir", str(COCO),
                         "--output_json", str(out), "--bleu"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert (m["CHAIRs"], m["CHAIRi"], m["Recall"]) == pytest.approx((4 / 6, 4 / 13, 0.7))
    assert (m["Len"], m["num_captions"], m["object_mentions"], m["hallucinated_mentions"]) == \
        (pytest.approx(53 / 6), 6, 13, 4)
    assert m["images_without_annotations"] == 1
    # BLEU over the 5 captions that have references (image 6 has none); word level, all references of an image
    assert m["bleu_num_captions"] == 5
    assert 0 < m["BLEU-4"] < m["BLEU-2"] < m["BLEU-1"] < 1
    details = [json.loads(x) for x in (tmp_path / "run" / "chair_details.jsonl").read_text().splitlines()]
    assert [d["image_id"] for d in details] == [1, 2, 3, 4, 5, 6]
    assert details[5]["bleu"] is None
    assert "CHAIRs" in capsys.readouterr().out


def test_eval_auto_dedup_flag_and_limit(tmp_path):
    out = tmp_path / "c.json"
    assert eval_auto.main(["--caption_eval_path", str(CAPTIONS), "--coco_annotation_dir", str(COCO),
                           "--output_json", str(out), "--dedup_per_caption", "--limit", "2"]) == 0
    m = json.loads(out.read_text())
    # captions 1 and 2 only: mentions 3 + 3, hallucinated 1 + 1
    assert (m["num_captions"], m["object_mentions"], m["hallucinated_mentions"]) == (2, 6, 2)
    assert m["CHAIRs"] == 1.0 and m["CHAIRi"] == pytest.approx(2 / 6)
    assert m["settings"]["dedup_per_caption"] is True


# Captions whose counts depend on the two-word merge table (ground truth: 5 {bicycle}, 1 {dog, person},
# 4 {toilet, chair}).
#   a  5 "A bicycle next to the train tracks."
#        canonical: "train track" is one non-object token -> bicycle; 7 tokens
#        (without the "train track" merge, as this project had it: bicycle, train*; 8 tokens)
#   b  1 "A man and a dog at the dining table near a pedestrian and a cheesecake."
#        canonical: man(person) dog table(dining table)*; "pedestrian" is no synonym, " cheesecake" never matches;
#        16 tokens.  efuf: man dog "dining table"* pedestrian(person) cheesecake(cake)*; 15 tokens
#   c  4 "A toilet next to a coffee table with a remote control and a motor bike."
#        canonical: toilet table(dining table)* remote*; " motor bike" never matches; 15 tokens.
#        efuf: toilet "coffee table"* "remote control"* "motor bike"(motorcycle)*; 13 tokens
MERGE_CAPTIONS = [
    (5, "A bicycle next to the train tracks."),
    (1, "A man and a dog at the dining table near a pedestrian and a cheesecake."),
    (4, "A toilet next to a coffee table with a remote control and a motor bike."),
]


def _write_captions(path, rows):
    path.write_text("".join(json.dumps({"image_id": i, "image": f"{i}.jpg", "caption": c}) + "\n" for i, c in rows))
    return path


def test_canonical_train_track_merge_by_hand(tmp_path):
    caps = _write_captions(tmp_path / "caps.jsonl", MERGE_CAPTIONS)
    out = tmp_path / "c.json"
    assert eval_auto.main(["--caption_eval_path", str(caps), "--coco_annotation_dir", str(COCO),
                           "--output_json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert (m["object_mentions"], m["hallucinated_mentions"], m["hallucinated_captions"]) == (7, 3, 2)
    assert m["CHAIRs"] == pytest.approx(2 / 3)     # the old table made caption a hallucinated too: 3/3
    assert m["CHAIRi"] == pytest.approx(3 / 7)     # old: 4/8
    assert m["Recall"] == pytest.approx(4 / 5)     # (1 + 2 + 1) / (1 + 2 + 2)
    assert m["Len"] == pytest.approx(38 / 3)       # (7 + 16 + 15) / 3; old: 39 / 3
    assert m["settings"]["chair_variant"] == "canonical" and m["settings"]["dedup_per_caption"] is False
    details = [json.loads(x) for x in (tmp_path / "c_details.jsonl").read_text().splitlines()]
    assert details[0]["mentions"] == [["bicycle", "bicycle"]] and details[0]["Len"] == 7
    assert details[2]["hallucinated"] == [["table", "dining table"], ["remote", "remote"]]


def test_efuf_variant_merges_and_vocabulary_by_hand(tmp_path):
    caps = _write_captions(tmp_path / "caps.jsonl", MERGE_CAPTIONS)
    out = tmp_path / "c.json"
    assert eval_auto.main(["--caption_eval_path", str(caps), "--coco_annotation_dir", str(COCO),
                           "--output_json", str(out), "--chair_variant", "efuf"]) == 0
    m = json.loads(out.read_text())
    assert (m["object_mentions"], m["hallucinated_mentions"], m["hallucinated_captions"]) == (10, 5, 2)
    assert (m["CHAIRs"], m["CHAIRi"], m["Recall"]) == pytest.approx((2 / 3, 5 / 10, 4 / 5))
    assert m["Len"] == pytest.approx(35 / 3)       # (7 + 15 + 13) / 3
    assert m["settings"]["chair_variant"] == "efuf" and m["settings"]["dedup_per_caption"] is True
    details = [json.loads(x) for x in (tmp_path / "c_details.jsonl").read_text().splitlines()]
    assert details[1]["mentions"] == [["man", "person"], ["dog", "dog"], ["dining table", "dining table"],
                                      ["pedestrian", "person"], ["cheesecake", "cake"]]
    assert details[2]["hallucinated"] == [["coffee table", "dining table"], ["remote control", "remote"],
                                          ["motor bike", "motorcycle"]]


def test_efuf_variant_counts_each_word_once(tmp_path):
    caps = _write_captions(tmp_path / "caps.jsonl", [(1, "A dog, two dogs and a cat near the table and a table.")])
    ex = chair_extractor("efuf")
    gt = load_ground_truth(COCO, ex, {1})
    m, details = compute_chair(read_captions(caps), ex, gt.objects, dedup_per_caption=True)
    assert details[0]["mentions"] == [["dog", "dog"], ["cat", "cat"], ["table", "dining table"]]
    assert (m["object_mentions"], m["hallucinated_mentions"]) == (3, 2)


def test_efuf_variant_refuses_no_default_merges(tmp_path, capsys):
    rc = eval_auto.main(["--caption_eval_path", str(CAPTIONS), "--coco_annotation_dir", str(COCO),
                         "--output_json", str(tmp_path / "c.json"), "--chair_variant", "efuf", "--no_default_merges"])
    assert rc == 2
    assert "canonical variant only" in capsys.readouterr().err
    with pytest.raises(LetheError, match="unknown CHAIR variant"):
        chair_extractor("opera")


def test_efuf_txt_caption_file(tmp_path):
    txt = tmp_path / "captions_eval.txt"
    txt.write_text("COCO_val2014_000000000001.jpg ### A dog and a cat.\n"
                   "COCO_val2014_000000000002.jpg ### A toilet.\n")
    caps = read_captions(txt)
    assert [(c.image_id, c.caption) for c in caps] == [(1, "A dog and a cat."), (2, "A toilet.")]


def test_custom_vocabulary(tmp_path):
    syn = tmp_path / "syn.txt"
    syn.write_text("dog, puppy\nperson, man\ncat, kitten\nbicycle\nbus\ncup\ntoilet\nchair\nteddy bear\n"
                   "wine glass\nhot dog\n")
    caps = tmp_path / "caps.jsonl"
    caps.write_text(json.dumps({"image_id": 1, "image": "x.jpg", "caption": "A puppy, a kitten and a dog."}) + "\n")
    out = tmp_path / "c.json"
    assert eval_auto.main(["--caption_eval_path", str(caps), "--coco_annotation_dir", str(COCO),
                           "--output_json", str(out), "--synonyms", str(syn), "--no_default_merges"]) == 0
    m = json.loads(out.read_text())
    assert (m["object_mentions"], m["hallucinated_mentions"]) == (3, 1)  # puppy, kitten*, dog


def test_category_missing_from_vocabulary_is_an_error(tmp_path, capsys):
    syn = tmp_path / "syn.txt"
    syn.write_text("dog\n")
    rc = eval_auto.main(["--caption_eval_path", str(CAPTIONS), "--coco_annotation_dir", str(COCO),
                         "--output_json", str(tmp_path / "c.json"), "--synonyms", str(syn)])
    assert rc == 2
    assert "is not in the synonyms list" in capsys.readouterr().err


def test_missing_annotation_files_and_bad_caption_lines(tmp_path):
    with pytest.raises(LetheError, match="instances_"):
        load_ground_truth(tmp_path, ObjectExtractor.canonical())
    bad = tmp_path / "caps.jsonl"
    bad.write_text('{"image_id": 1, "caption": "a dog"}\n{"image_id": 2, "caption": \n')
    with pytest.raises(LetheError, match=r"caps.jsonl:2: malformed JSON line"):
        read_captions(bad)
    bad.write_text('{"image": "no_digits.jpg", "caption": "a dog"}\n')
    with pytest.raises(LetheError, match=r"caps.jsonl:1: no 'image_id'"):
        read_captions(bad)


def test_canonical_port_in_the_benchmark_agrees(capsys):
    """benchmarks/bench_chair.py asserts identical numbers and mention lists; run it on a few captions."""
    import runpy

    bench = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_chair.py"))
    assert bench["main"](["--captions", "300", "--seed", "3"]) == 0
    assert "(identical)" in capsys.readouterr().out


@pytest.mark.parametrize("name, text, extra", [
    ("caps.jsonl", "", []), ("caps.jsonl", "\n\n", []), ("caps.txt", "\n", []), ("caps.json", "[]", []),
    ("caps.jsonl", '{"image_id": 1, "caption": "a dog"}\n', ["--limit", "0"]),
])
def test_no_captions_is_an_error_not_a_perfect_score(tmp_path, capsys, name, text, extra):
    """An empty captions file (a generation that died before its first batch) used to score CHAIR 0.0 (perfect),
    exit 0; now one error line, exit 2, and no output."""
    caps = tmp_path / name
    caps.write_text(text)
    out = tmp_path / "c.json"
    rc = eval_auto.main(["--caption_eval_path", str(caps), "--coco_annotation_dir", str(COCO), "--output_json",
                         str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert (str(caps) in err and "no captions" in err) if not extra else "--limit 0" in err
    assert not out.exists() and not (tmp_path / "c_details.jsonl").exists()
    with pytest.raises(LetheError, match="no captions"):
        compute_chair([], ObjectExtractor.canonical(), {})
