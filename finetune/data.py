"""EFUF's training data: positive / negative objects (``pos_neg.json``), sentences, and gold instruction data.

Thresholds are applied at load time, as in the original: ``score > norm_thres`` → positive, ``score < hal_thres``
→ negative (hallucinated), in between → unused. One training example pairs the i-th negative with a positive,
a gold and (when used) a sentence sample drawn from seeded permutations that cycle: the negatives define the
epoch, as in the original, and the pairing depends only on (seed, index), so resumed runs see the same data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from common.errors import LetheError
from common.io import read_json
from common.models import Sample

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Item:
    image: str  # path
    prompt: str
    context: str
    target: str
    score: float
    add_eos: bool


def load_pos_neg(path: str | Path, image_dir: str | Path, prompt: str, hal_thres: float,
                 norm_thres: float) -> tuple[list[Item], list[Item]]:
    rows = read_json(path)
    if not isinstance(rows, list):
        raise LetheError(f"{path}: expected a JSON list of {{image, sentence, position, score}} entries")
    pos, neg = [], []
    for n, r in enumerate(rows):
        try:
            image, sentence, position, score = r["image"], r["sentence"], int(r["position"]), float(r["score"])
        except (KeyError, TypeError, ValueError) as e:
            raise LetheError(f"{path}: entry {n} lacks a valid {e.args[0] if e.args else 'field'!s} "
                             "(need image, sentence, position, score)") from None
        if not 0 <= position <= len(sentence):
            raise LetheError(f"{path}: entry {n}: position {position} outside its sentence")
        item = Item(str(Path(image_dir) / image), prompt, sentence[:position], sentence[position:], score, False)
        if score > norm_thres:
            pos.append(item)
        elif score < hal_thres:
            neg.append(item)
    return pos, neg


def load_sentences(path: str | Path, image_dir: str | Path, prompt: str, hal_thres: float,
                   sentence_thres: float) -> list[Item]:
    rows = read_json(path)
    out = []
    for n, r in enumerate(rows):
        try:
            if float(r["min"]) > hal_thres and float(r["mean"]) > sentence_thres:
                out.append(Item(str(Path(image_dir) / r["image"]), prompt, "", r["sentence"], float(r["mean"]), True))
        except (KeyError, TypeError, ValueError):
            raise LetheError(f"{path}: entry {n} needs image, sentence, mean, min") from None
    return out


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

    def __getitem__(self, i: int) -> dict[str, list[Item]]:
        out = {"neg": [self.neg[i]]}
        for k, items in self.others.items():
            n = self.per_step[k]
            out[k] = [items[j] for j in self.orders[k][i * n:(i + 1) * n]]
        return out


def to_sample(item: Item) -> Sample:
    return Sample(item.image, item.prompt, target=item.target, context=item.context, add_eos=item.add_eos)
