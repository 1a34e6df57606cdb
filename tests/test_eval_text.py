"""Tokenizer (nltk.word_tokenize semantics), Pattern-style singularisation and BLEU, checked by hand."""
from __future__ import annotations

import math

import pytest

from evaluate.bleu import corpus_bleu, sentence_bleu
from common.text.objects import (COCO_DOUBLE_WORDS, ObjectExtractor, build_efuf_merges, build_merges,
                                 load_efuf_synonyms, load_synonyms)
from common.text.singular import singularize
from common.text.wordtok import sent_tokenize, treebank_tokenize, word_tokenize


# ------------------------------------------------------------------------------------------------ tokenizer
@pytest.mark.parametrize("text, tokens", [
    # a sentence-internal period is detached only because Punkt splits the sentences first
    ("a dog. a cat.", ["a", "dog", ".", "a", "cat", "."]),
    ("a dog.a cat", ["a", "dog.a", "cat"]),  # no space: not a sentence break
    ("the dog's bowl isn't full", ["the", "dog", "'s", "bowl", "is", "n't", "full"]),
    ("a man (in red) stands, waits; sits: done", ["a", "man", "(", "in", "red", ")", "stands", ",", "waits", ";",
                                                    "sits", ":", "done"]),
    ("it costs $3.88 at 5:30", ["it", "costs", "$", "3.88", "at", "5:30"]),
    ('he said "hi" there', ["he", "said", "``", "hi", "''", "there"]),
    ("wait... what?! ok", ["wait", "...", "what", "?", "!", "ok"]),
    ("i cannot go -- gonna stay", ["i", "can", "not", "go", "--", "gon", "na", "stay"]),
    ("a dog.\n\nanother dog.", ["a", "dog", ".", "another", "dog", "."]),
    ("", []),
    ("   ", []),
])
def test_word_tokenize(text, tokens):
    assert word_tokenize(text) == tokens


def test_abbreviations_keep_their_period_mid_text():
    # "dr" and "st" are abbreviations of NLTK's English Punkt model, "dog" is not
    assert word_tokenize("dr. smith walks to st. mary with a dog. then home.") == [
        "dr.", "smith", "walks", "to", "st.", "mary", "with", "a", "dog", ".", "then", "home", "."]
    assert sent_tokenize("dr. smith walks. he sits.") == ["dr. smith walks.", "he sits."]


def test_closing_bracket_is_realigned_to_its_sentence():
    assert sent_tokenize("(a dog.) a cat.") == ["(a dog.)", "a cat."]


def test_treebank_only_detaches_the_final_period():
    assert treebank_tokenize("a dog. a cat.") == ["a", "dog.", "a", "cat", "."]


# ----------------------------------------------------------------------------------------- singularisation
@pytest.mark.parametrize("plural, singular", [
    ("dogs", "dog"), ("people", "person"), ("women", "woman"), ("men", "man"), ("children", "child"),
    ("knives", "knife"), ("leaves", "leaf"), ("mice", "mouse"), ("skis", "ski"), ("buses", "bus"),
    ("boxes", "box"), ("benches", "bench"), ("sandwiches", "sandwich"), ("tomatoes", "tomato"), ("shoes", "shoe"),
    ("giraffes", "giraffe"), ("oxen", "ox"), ("geese", "goose"), ("teeth", "tooth"), ("calves", "calf"),
    ("wolves", "wolf"), ("skies", "sky"), ("toys", "toy"), ("lives", "life"), ("cacti", "cactus"),
    ("analyses", "analysis"), ("mothers-in-law", "mother-in-law"), ("dogs'", "dog's"), ("tvs", "tv"),
    ("glasses", "glass"), ("donuts", "donut"), ("bananas", "banana"),
    # Pattern's quirks, which the canonical CHAIR numbers depend on
    ("bus", "bu"), ("glass", "glas"), ("cookies", "cookies"), ("ties", "ty"), ("four", "fmy"), ("ears", "ears"),
    ("sheep", "sheep"), ("scissors", "scissors"), ("series", "series"), ("cattle", "cattle"), ("this", "thi"),
    ("is", "is"), ("was", "wa"), ("has", "ha"), ("safari", "safarus"),
])
def test_singularize(plural, singular):
    assert singularize(plural) == singular


# ---------------------------------------------------------------------------------------- object extraction
def test_two_word_objects_and_special_rules():
    ex = ObjectExtractor.canonical()
    e = ex.extract("Two teddy bears, a hot dog and a wine glass on a toilet seat.")
    assert e.categories == ["teddy bear", "hot dog", "wine glass", "toilet"]
    # "baby/adult X" -> X (not person), "passenger train" -> train (not person), "bow tie" -> tie
    e = ex.extract("A baby elephant, an adult giraffe, a passenger train and a man in a bow tie.")
    assert e.words == ["elephant", "giraffe", "train", "man", "tie"]
    assert e.categories == ["elephant", "giraffe", "train", "person", "tie"]
    # "seat" is dropped whenever "toilet" occurs, otherwise it is a chair
    assert ex.extract("The seat next to the toilet.").categories == ["toilet"]
    assert ex.extract("A seat in the park.").categories == ["chair"]
    # canonical quirks: a singular "bus" is "bu"; " motor bike" has a leading space in the list
    assert ex.extract("A bus and two buses.").categories == ["bus"]
    assert ex.extract("A motor bike and a motorbike.").categories == ["motorcycle"]
    # every mention is returned, repeated ones included
    assert ex.extract("A dog, a dog and dogs.").categories == ["dog", "dog", "dog"]


def test_train_track_is_one_non_object_token():
    # canonical chair.py (LisaAnne/Hallucination HEAD; Maxlinn/OPERA agree) merges "train track": no train there
    ex = ObjectExtractor.canonical()
    assert ex.extract("A train on the train tracks.").categories == ["train"]
    assert ex.extract("A train on the train tracks.").tokens == ["a", "train", "on", "the", "train track", "."]
    assert ex.extract("Train tracks.").categories == []


def test_canonical_merge_table():
    assert len(COCO_DOUBLE_WORDS) == 29 and COCO_DOUBLE_WORDS[-2:] == ("home plate", "train track")
    merges = build_merges()
    # 27 distinct double words + 12 animals x 2 + 2 vehicles + "toilet seat" + "wine glas" ("bow tie" remapped)
    assert len(merges) == 55
    assert (merges["bow tie"], merges["toilet seat"], merges["wine glas"]) == ("tie", "toilet", "wine glass")
    assert (merges["baby cub"], merges["adult animal"], merges["passenger jet"]) == ("cub", "animal", "jet")
    assert "dining table" not in merges and "coffee table" not in merges and "remote control" not in merges


def test_efuf_merge_table_and_vocabulary():
    syn = load_efuf_synonyms()
    # EFUF's synonyms.txt = the canonical list, items stripped, plus four forms
    assert {k: v for k, v in syn.items() if k not in load_synonyms()} == {
        "motor bike": "motorcycle", "cheesecake": "cake", "brother": "person", "pedestrian": "person",
        "coffee table": "dining table", "remote control": "remote"}
    merges = build_efuf_merges(syn)
    assert set(merges) - set(build_merges()) == {"dining table", "coffee table", "remote control"}
    assert set(build_merges()) <= set(merges) and merges["bow tie"] == "tie"
    ex = ObjectExtractor.efuf()
    cap = "A man at the dining table and a coffee table with a remote control, a cheesecake and a motor bike."
    assert ex.extract(cap).words == ["man", "dining table", "coffee table", "remote control", "cheesecake",
                                     "motor bike"]
    assert ex.extract(cap).categories == ["person", "dining table", "dining table", "remote", "cake", "motorcycle"]
    assert ObjectExtractor.canonical().extract(cap).categories == ["person", "dining table", "dining table",
                                                                   "remote"]
    assert ex.extract("A train on the train tracks.").categories == ["train"]
    assert [m.text for m in ex.mentions(cap)] == ["man", "dining table", "coffee table", "remote control",
                                                  "cheesecake", "motor bike"]


def test_extra_merges_and_no_default_merges(tmp_path):
    ex = ObjectExtractor.canonical(extra_merges=["coffee  table"])
    assert ex.extract("A cup on the coffee table.").categories == ["cup"]
    assert ObjectExtractor.canonical().extract("A cup on the coffee table.").categories == ["cup", "dining table"]
    syn = tmp_path / "syn.txt"
    syn.write_text("circle, ring, round thing\nsquare, box\n")
    custom = ObjectExtractor.canonical(syn, default_merges=False)
    assert custom.extract("A ring, two boxes and a toilet seat.").categories == ["circle", "square"]
    assert custom.extract("A round thing.").categories == []  # no merges: a two-word form never matches
    # EFUF builds its merges from the vocabulary, so a custom two-word form does match
    assert ObjectExtractor.efuf(syn).extract("A round thing and a ring.").categories == ["circle", "circle"]


# ------------------------------------------------------------------------------------------------------ BLEU
def test_sentence_bleu_by_hand():
    s = sentence_bleu([["the", "cat", "sat", "on", "the", "mat"]], ["the", "cat", "sat"])
    bp = math.exp(1 - 6 / 3)  # hypothesis shorter than the reference
    assert s[1] == pytest.approx(bp, rel=1e-12)  # p1 = 3/3
    assert s[2] == pytest.approx(bp, rel=1e-12)  # p2 = 2/2
    assert 0 < s[4] < 1e-70  # no 4-gram: NLTK's method0 gives a vanishing, not an undefined, score


def test_corpus_bleu_pools_counts_by_hand():
    refs = [[["the", "cat"]], [["the", "dog"]]]
    hyps = [["the", "cat"], ["a", "big", "dog"]]
    s = corpus_bleu(refs, hyps, max_orders=(1, 2))
    assert s[1] == pytest.approx(3 / 5)  # (2 + 1) / (2 + 3); c = 5 > r = 4 so BP = 1
    assert s[2] == pytest.approx(math.sqrt(3 / 5 * 1 / 3))  # p2 = (1 + 0) / (1 + 2)


def test_closest_reference_length_tie_takes_the_shorter():
    s = sentence_bleu([["a", "b", "c"], ["a", "b", "c", "d", "e"]], ["a", "b", "c", "d"], max_orders=(1,))
    assert s[1] == 1.0  # r = 3 (not 5), so no brevity penalty


def test_bleu_without_any_match_is_zero():
    assert corpus_bleu([[["a"]]], [["b"]]) == {1: 0.0, 2: 0.0, 4: 0.0}


def test_fast_path_equals_every_rule_tried():
    import random

    rnd = random.Random(0)
    pieces = ["dog", "cats.", "dr.", "a.", "3.", "...", "?", "!", "(", ")", '"', "'", "''", "``", "'s", "n't",
              "cannot", "gonna", "'tis", "--", "\u2014", "“x”", "«y»", ",", ";", ":", "5:30", "$", "%", "*", "<",
              "\n"]
    for _ in range(2000):
        text = " ".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 12)))
        assert word_tokenize(text) == word_tokenize(text, fast=False), text


def test_mentions_carry_character_spans():
    from common.text.objects import ObjectExtractor

    ex = ObjectExtractor.canonical()
    cap = 'Two Dogs and a "teddy bear" sit near the toilet seat; a baby elephant, and wine glasses.'
    got = [(m.text, m.category, m.start, m.end) for m in ex.mentions(cap)]
    assert got == [("Dogs", "dog", 4, 8), ("teddy bear", "teddy bear", 16, 26), ("toilet seat", "toilet", 41, 52),
                   ("baby elephant", "elephant", 56, 69), ("wine glasses", "wine glass", 75, 87)]
    assert [m.category for m in ex.mentions(cap)] == ex.extract(cap).categories
    assert all(cap[m.start:m.end] == m.text for m in ex.mentions(cap))
