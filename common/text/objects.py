"""Object mentions in captions: a synonym vocabulary (COCO's 80 categories by default, or any list) matched the
way the canonical CHAIR script does it — nltk-style word tokens of the lower-cased caption, Pattern-style
singularisation, the two-word merges, then a synonym lookup — plus the character span of every mention.

Two rule sets: the canonical one (Rohrbach et al.'s ``utils/chair.py``, HEAD of LisaAnne/Hallucination; the
Maxlinn/OPERA ports carry the same tables) and EFUF's (``evaluate/eval_auto.py`` of starreeze/efuf, from RLHF-V:
its synonym list, items stripped, and merges built from that list's multi-word forms). See ``build_merges`` and
``build_efuf_merges``.

Shared by the CHAIR scorer (``evaluate/chair.py``) and EFUF's object extraction (``insight/object.py``).
Synonyms file format (CHAIR / EFUF ``synonyms.txt``): one line per category, ``category, syn1, syn2, ...``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from common.errors import LetheError
from common.text.singular import singularize
from common.text.wordtok import word_tokenize

PathLike = str | os.PathLike

DEFAULT_SYNONYMS = Path(__file__).resolve().parent / "data" / "coco_synonyms.txt"

# The canonical two-word merges: Rohrbach et al.'s ``coco_double_words``, entry for entry and in order (HEAD of
# LisaAnne/Hallucination utils/chair.py, which appended "train track"; Maxlinn's and OPERA's chair.py agree), the
# repeated "hot dog"/"teddy bear" and the unreachable three-word "stove top oven" kept. "train track" is merged into
# one token that is no object, so the "train" of "train tracks" is not counted.
COCO_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "hot dog", "teddy bear", "home plate",
    "train track",
)
# "baby/adult <animal>" -> animal and "passenger <vehicle>" -> vehicle (else "baby"/"adult"/"passenger" = person).
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal",
                "cub")
VEHICLE_WORDS = ("jet", "train")
# Merges that map to another token; applied after the lists above (so "bow tie" -> "tie" wins over "bow tie").
SPECIAL_MERGES = (("bow tie", "tie"), ("toilet seat", "toilet"), ("wine glas", "wine glass"))

# EFUF's eval_auto.py: its dataset/synonyms.txt is the canonical list plus these forms (and without the double
# spaces, which it strips anyway); its two-word merges are every multi-word form of its list plus these two, then
# the same animal/vehicle/special rules. So, unlike the canonical script, "dining table", "coffee table" and
# "remote control" are single tokens and " motor bike"/" cheesecake" match.
EFUF_EXTRA_SYNONYMS = (("person", "brother"), ("person", "pedestrian"), ("dining table", "coffee table"),
                       ("remote", "remote control"))
EFUF_EXTRA_DOUBLE_WORDS = ("home plate", "train track")


def load_synonyms(path: PathLike = DEFAULT_SYNONYMS, strip_items: bool = False) -> dict[str, str]:
    """Map every surface form to its category: one line per category, ``category, syn1, syn2, ...``.

    Lines are parsed as the canonical script does (``line.strip().split(", ")``), so a double space after a comma
    leaves a leading space in the item (which then never matches) unless ``strip_items`` (EFUF's parsing).
    A form listed under two categories maps to the later one.
    """
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: synonyms file not found")
    mapping: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        items = line.strip().split(", ")
        if not items[0]:
            continue
        for item in items:
            mapping[item.strip() if strip_items else item] = items[0]
    if not mapping:
        raise LetheError(f"{path}: no categories")
    return mapping


def load_efuf_synonyms(path: PathLike | None = None) -> dict[str, str]:
    """EFUF's vocabulary: ``path`` with its items stripped; by default the COCO list plus ``EFUF_EXTRA_SYNONYMS``
    (which is EFUF's ``dataset/synonyms.txt``)."""
    if path is not None:
        return load_synonyms(path, strip_items=True)
    mapping = load_synonyms(DEFAULT_SYNONYMS, strip_items=True)
    mapping.update({form: category for category, form in EFUF_EXTRA_SYNONYMS})
    return mapping


def _add_special_merges(merges: dict[str, str]) -> None:
    for animal in ANIMAL_WORDS:
        merges[f"baby {animal}"] = animal
        merges[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        merges[f"passenger {vehicle}"] = vehicle
    merges.update(SPECIAL_MERGES)


def _add_extra_merges(merges: dict[str, str], extra: Iterable[str]) -> None:
    for w in extra:
        w = " ".join(w.split())
        if w:
            merges[w] = w


def build_merges(default: bool = True, extra: Iterable[str] = ()) -> dict[str, str]:
    """The two-word merge table: ``"w1 w2" -> token`` (the canonical rules unless ``default`` is False)."""
    merges: dict[str, str] = {}
    if default:
        merges.update({w: w for w in COCO_DOUBLE_WORDS})
        _add_special_merges(merges)
    _add_extra_merges(merges, extra)
    return merges


def build_efuf_merges(synonyms: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """EFUF's merge table: every multi-word form of ``synonyms``, ``EFUF_EXTRA_DOUBLE_WORDS``, then the
    animal/vehicle/special rules (as its ``load_mappings`` builds ``double_word_map``)."""
    double_words = [w for w in synonyms if len(w.strip().split(" ")) >= 2] + list(EFUF_EXTRA_DOUBLE_WORDS)
    merges = {w: w for w in double_words}
    _add_special_merges(merges)
    _add_extra_merges(merges, extra)
    return merges


@dataclass(frozen=True)
class Mention:
    text: str      # the surface text in the caption (e.g. "bottles", "teddy bear")
    category: str  # its category (canonical name)
    start: int
    end: int


@dataclass(frozen=True)
class Extraction:
    tokens: list[str]       # tokens after singularisation and merges (the canonical "words" / Len basis)
    words: list[str]        # object mentions as surface forms
    categories: list[str]   # their categories


class ObjectExtractor:
    """Caption -> object mentions. Precompiled: one set lookup per token, singularisation cached."""

    def __init__(self, synonyms: Mapping[str, str], merges: Mapping[str, str], toilet_seat_rule: bool = True):
        self.synonyms = dict(synonyms)
        self.merges = dict(merges)
        self._merge_heads = frozenset(k.split(" ")[0] for k in self.merges)
        self.toilet_seat_rule = toilet_seat_rule

    @classmethod
    def canonical(cls, synonyms_path: PathLike = DEFAULT_SYNONYMS, default_merges: bool = True,
                  extra_merges: Iterable[str] = ()) -> "ObjectExtractor":
        return cls(load_synonyms(synonyms_path), build_merges(default_merges, extra_merges),
                   toilet_seat_rule=default_merges)

    @classmethod
    def efuf(cls, synonyms_path: PathLike | None = None, extra_merges: Iterable[str] = ()) -> "ObjectExtractor":
        """EFUF's eval_auto.py rules (its vocabulary and merges; the tokenizer and singulariser stay ours)."""
        synonyms = load_efuf_synonyms(synonyms_path)
        return cls(synonyms, build_efuf_merges(synonyms, extra_merges), toilet_seat_rule=True)

    def tokens(self, caption: str) -> list[str]:
        words = [singularize(w) for w in word_tokenize(caption.lower())]
        out, i, n = [], 0, len(words)
        heads, merges = self._merge_heads, self.merges
        while i < n:
            if words[i] in heads:
                pair = " ".join(words[i:i + 2])
                if pair in merges:
                    out.append(merges[pair])
                    i += 2
                    continue
            out.append(words[i])
            i += 1
        return out

    def extract(self, caption: str) -> Extraction:
        tokens = self.tokens(caption)
        words = tokens
        if self.toilet_seat_rule and "toilet" in tokens and "seat" in tokens:
            words = [w for w in tokens if w != "seat"]
        syn = self.synonyms
        words = [w for w in words if w in syn]
        return Extraction(tokens, words, [syn[w] for w in words])

    def mentions(self, caption: str) -> list[Mention]:
        """Object mentions with their character spans in ``caption`` (same mentions as ``extract``)."""
        low = caption.lower()
        spans: list[tuple[int, int]] = []
        cursor = 0
        for tok in word_tokenize(low):
            i = low.find(tok, cursor)
            if i < 0:  # quotes become `` / '' : no span, but keep the token count aligned
                spans.append((cursor, cursor))
                continue
            spans.append((i, i + len(tok)))
            cursor = i + len(tok)
        words = [singularize(w) for w in word_tokenize(low)]
        out: list[Mention] = []
        merged: list[tuple[str, int, int]] = []
        i, n = 0, len(words)
        while i < n:
            if words[i] in self._merge_heads and " ".join(words[i:i + 2]) in self.merges:
                merged.append((self.merges[" ".join(words[i:i + 2])], spans[i][0], spans[i + 1][1]))
                i += 2
                continue
            merged.append((words[i], *spans[i]))
            i += 1
        tokens = [m[0] for m in merged]
        drop_seat = self.toilet_seat_rule and "toilet" in tokens and "seat" in tokens
        for word, a, b in merged:
            if word in self.synonyms and not (drop_seat and word == "seat"):
                out.append(Mention(caption[a:b], self.synonyms[word], a, b))
        return out

