"""EFUF's training data: positive / negative objects (``pos_neg.json``), sentences, and gold instruction data.

Thresholds are applied at load time, as in the original: ``score > norm_thres`` → positive, ``score < hal_thres``
→ negative (hallucinated), in between → unused. One training example pairs the i-th negative with a positive,
a gold and (when used) a sentence sample drawn from seeded permutations that cycle: the negatives define the
epoch, as in the original, and the pairing depends only on (seed, index), so resumed runs see the same data.

Every entry is checked when loaded: a score (``pos_neg.json`` score, ``sentences.json`` mean / min) that is not a
finite number on the CLIP scale (``CLIP_SCORE_BOUND``) is refused in one error naming the first few entries and
the count; ``check_images`` names missing image files. ``finetune/train.py`` runs all of it before the model loads.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from common.errors import LetheError
from common.io import read_json
from common.models import Sample

IMAGE_PLACEHOLDER = "<image>"


#: Bound on a CLIP score in pos_neg.json / sentences.json. Our scores are CLIP's logits, ``logit_scale · cos``, and
#: CLIP clamps ``logit_scale`` at 100 while ``cos`` is in [−1, 1]: every real score lies in [−100, 100] (EFUF's
#: ViT-B/32 scores sit around 15–40). A value outside, or NaN / ±inf, is a broken file, not a score: a −1e6
#: negative turns the (55 − score) weight of gradient ascent into a diverging loss, and NaN fails both threshold
#: comparisons, so its entry would silently vanish.
CLIP_SCORE_BOUND = 100.0
_SHOW = 5  # how many bad entries an error names


@dataclass(frozen=True)
class Item:
    image: str  # path
    prompt: str
    context: str
    target: str
    score: float
    add_eos: bool


def _as_score(value) -> float | None:
    """The value as a float if it is a valid CLIP score (a finite number in [−bound, bound]), else None."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and -CLIP_SCORE_BOUND <= x <= CLIP_SCORE_BOUND else None


def _refuse_bad_scores(path: str | Path, bad: list[tuple[int, str, object]]) -> None:
    """One error naming the first few entries whose score field is not a valid CLIP score, and how many there are."""
    if not bad:
        return
    shown = ", ".join(f"entry {n} {key}={value!r}" for n, key, value in bad[:_SHOW])
    more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
    raise LetheError(f"{path}: {len(bad)} entries have a score that is not a finite number within "
                     f"[-{CLIP_SCORE_BOUND:g}, {CLIP_SCORE_BOUND:g}] (the CLIP logit scale): {shown}{more}")


def _json_list(path: str | Path, what: str) -> list:
    rows = read_json(path)
    if not isinstance(rows, list):
        raise LetheError(f"{path}: expected a JSON list of {what} entries")
    return rows


def load_pos_neg(path: str | Path, image_dir: str | Path, prompt: str, hal_thres: float,
                 norm_thres: float) -> tuple[list[Item], list[Item]]:
    """Every entry is checked (scores within the CLIP scale, positions inside their sentence) before any is used."""
    rows = _json_list(path, "{image, sentence, position, score}")
    pos, neg = [], []
    bad: list[tuple[int, str, object]] = []
    for n, r in enumerate(rows):
        try:
            image, sentence, position, raw = r["image"], r["sentence"], int(r["position"]), r["score"]
        except (KeyError, TypeError, ValueError) as e:
            raise LetheError(f"{path}: entry {n} lacks a valid {e.args[0] if e.args else 'field'!s} "
                             "(need image, sentence, position, score)") from None
        if not 0 <= position <= len(sentence):
            raise LetheError(f"{path}: entry {n}: position {position} outside its sentence")
        score = _as_score(raw)
        if score is None:
            bad.append((n, "score", raw))
            continue
        item = Item(str(Path(image_dir) / image), prompt, sentence[:position], sentence[position:], score, False)
        if score > norm_thres:
            pos.append(item)
        elif score < hal_thres:
            neg.append(item)
    _refuse_bad_scores(path, bad)
    return pos, neg


def load_sentences(path: str | Path, image_dir: str | Path, prompt: str, hal_thres: float,
                   sentence_thres: float) -> list[Item]:
    """Sentences whose ``min`` > hal_thres and ``mean`` > sentence_thres; every mean / min must be a CLIP score."""
    rows = _json_list(path, "{image, sentence, mean, min}")
    out = []
    bad: list[tuple[int, str, object]] = []
    for n, r in enumerate(rows):
        try:
            image, sentence, raw_mean, raw_min = r["image"], r["sentence"], r["mean"], r["min"]
        except (KeyError, TypeError):
            raise LetheError(f"{path}: entry {n} needs image, sentence, mean, min") from None
        if not isinstance(sentence, str):
            raise LetheError(f"{path}: entry {n}: sentence is not a string")
        mean, low = _as_score(raw_mean), _as_score(raw_min)
        bad += [(n, key, raw) for key, raw, v in (("mean", raw_mean, mean), ("min", raw_min, low)) if v is None]
        if mean is None or low is None:
            continue
        if low > hal_thres and mean > sentence_thres:
            out.append(Item(str(Path(image_dir) / image), prompt, "", sentence, mean, True))
    _refuse_bad_scores(path, bad)
    return out


def missing_images(items: Sequence[Item]) -> list[str]:
    """Image paths of ``items`` that are not files (each once, in order)."""
    seen: dict[str, bool] = {}
    for it in items:
        if it.image not in seen:
            seen[it.image] = Path(it.image).is_file()
    return [p for p, ok in seen.items() if not ok]


def check_images(items: Sequence[Item], source: str | Path) -> None:
    """Refuse, in one line, items whose image file is missing (training would only fail when it reaches them)."""
    missing = missing_images(items)
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise LetheError(f"{source}: {len(missing)} images not found: {', '.join(missing[:_SHOW])}{more}")


def load_gold(path: str | Path, image_dir: str | Path, size: int, score: float) -> list[Item]:
    """The first ``size`` entries of a LLaVA instruction file (mix665k format) whose image exists; first turn."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise LetheError(f"{path}: expected the LLaVA instruction format (a list of {{image, conversations}})")
    out = []
    for n, r in enumerate(rows):
        if len(out) >= size:
            break
        if "image" not in r:
            continue
        conv = r.get("conversations")
        if not isinstance(conv, list) or len(conv) < 2 or conv[0].get("from") != "human":
            raise LetheError(f"{path}: entry {n} has no human→gpt first turn in 'conversations'")
        img = Path(image_dir) / r["image"]
        if not img.is_file():
            continue
        question = conv[0]["value"].replace(IMAGE_PLACEHOLDER + "\n", "").replace("\n" + IMAGE_PLACEHOLDER, "")
        question = question.replace(IMAGE_PLACEHOLDER, "").strip()
        out.append(Item(str(img), question, "", conv[1]["value"], score, True))
    return out


class EfufDataset(torch.utils.data.Dataset):
    """Example i = (negative i, and cycling seeded draws of positive / gold / sentence samples)."""

    def __init__(self, neg: Sequence[Item], others: dict[str, Sequence[Item]], per_step: dict[str, int], seed: int):
        if not neg:
            raise LetheError("no negative (hallucinated) samples: check --hal_clip_thres against the scores")
        self.neg = list(neg)
        self.others = {k: list(v) for k, v in others.items() if per_step.get(k, 0) > 0}
        for k, v in self.others.items():
            if not v:
                raise LetheError(f"no {k} samples (check the thresholds / data paths), or set its weight to 0")
        self.per_step = per_step
        self.orders: dict[str, list[int]] = {}
        rng = random.Random(seed)
        for k, items in self.others.items():
            need = len(self.neg) * per_step[k]
            order: list[int] = []
            while len(order) < need:
                perm = list(range(len(items)))
                rng.shuffle(perm)
                order += perm
            self.orders[k] = order[:need]

    def __len__(self) -> int:
        return len(self.neg)

    @property
    def lengths(self) -> list[int]:
        """Per example, its longest sample's text (prompt + context + target) in characters: what length-grouped
        sampling sorts by (a batch pads to its longest sample)."""
        def size(it: Item) -> int:
            return len(it.prompt) + len(it.context) + len(it.target)

        return [max(size(it) for items in self[i].values() for it in items) for i in range(len(self))]

    def __getitem__(self, i: int) -> dict[str, list[Item]]:
        out = {"neg": [self.neg[i]]}
        for k, items in self.others.items():
            n = self.per_step[k]
            out[k] = [items[j] for j in self.orders[k][i * n:(i + 1) * n]]
        return out


def to_sample(item: Item) -> Sample:
    return Sample(item.image, item.prompt, target=item.target, context=item.context, add_eos=item.add_eos)
