"""STIC's preference data for stage 1: reading, checking, and one collator that builds DPO batches through the model
layer.

A preference file is ``generate_pref.py``'s jsonl or ``convert_jsonl_to_json.py``'s JSON list (the released
``pref_data.json`` has the same records). Each record::

    {"image": "COCO_train2014_….jpg",
     "chosen":   [{"role": "user", "content": x}, {"role": "assistant", "content": y_preferred}],
     "rejected": [{"role": "user", "content": x}, {"role": "assistant", "content": y_dispreferred}], ...}

(LLaVA's ``{"from": "human"|"gpt", "value": …}`` turns are read too). The prompt ``x`` is the user turn without an
``<image>`` placeholder: the family's chat format puts the image where its model expects it.

Every record and every image is checked before the model loads; a bad one is one ``error:`` line naming the file
and the line (jsonl) or entry (JSON list).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import LetheError
from common.io import iter_jsonl_numbered, load_image, read_json

IMAGE_PLACEHOLDER = "<image>"


@dataclass
class PrefRecord:
    image: str  # path (image_folder / record["image"])
    prompt: str
    chosen: str
    rejected: str
    where: str  # "pref.jsonl line 7": for error messages


def _turns(value: Any, where: str, key: str) -> tuple[str, str]:
    """(user text, assistant text) of a two-turn conversation in either message layout."""
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(t, dict) for t in value):
        raise LetheError(f"{where}: '{key}' must be a list of two turns (user, assistant)")
    role_key, text_key = ("role", "content") if "role" in value[0] else ("from", "value")
    user = [t for t in value if t.get(role_key) in ("user", "human")]
    bot = [t for t in value if t.get(role_key) in ("assistant", "gpt")]
    if not user or not bot or not isinstance(user[0].get(text_key), str) or not isinstance(bot[-1].get(text_key), str):
        raise LetheError(f"{where}: '{key}' needs a user turn and an assistant turn with text")
    return user[0][text_key], bot[-1][text_key]


def strip_image_placeholder(text: str) -> str:
    return text.replace(IMAGE_PLACEHOLDER + "\n", "").replace("\n" + IMAGE_PLACEHOLDER, "") \
        .replace(IMAGE_PLACEHOLDER, "").strip()


def _rows(path: Path):
    if path.suffix == ".jsonl":
        for n, row in iter_jsonl_numbered(path):
            yield f"{path} line {n}", row
        return
    rows = read_json(path)
    if not isinstance(rows, list):
        raise LetheError(f"{path}: expected a JSON list of preference records (or a .jsonl file)")
    for n, row in enumerate(rows):
        yield f"{path} entry {n}", row


def load_pref_data(path: str | Path, image_folder: str | Path, check_images: bool = True) -> list[PrefRecord]:
    """Every record of ``path``, checked: fields present, one prompt for both answers, the image there and
    decodable (``check_images``: PIL's header + data check, no resize)."""
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: preference data not found")
    out: list[PrefRecord] = []
    for where, row in _rows(path):
        if not isinstance(row, dict):
            raise LetheError(f"{where}: expected an object with image, chosen and rejected")
        for key in ("image", "chosen", "rejected"):
            if key not in row:
                raise LetheError(f"{where}: no '{key}'")
        if not isinstance(row["image"], str) or not row["image"]:
            raise LetheError(f"{where}: 'image' must be a file name")
        x_c, y_c = _turns(row["chosen"], where, "chosen")
        x_r, y_r = _turns(row["rejected"], where, "rejected")
        if strip_image_placeholder(x_c) != strip_image_placeholder(x_r):
            raise LetheError(f"{where}: 'chosen' and 'rejected' answer different prompts")
        out.append(PrefRecord(str(Path(image_folder) / row["image"]), strip_image_placeholder(x_c), y_c, y_r, where))
    if not out:
        raise LetheError(f"{path}: no preference records")
    if check_images:
        for r in out:
            _check_image(r)
    return out


def _check_image(r: PrefRecord) -> None:
    from PIL import Image, UnidentifiedImageError

    p = Path(r.image)
    if not p.is_file():
        raise LetheError(f"{r.where}: image {p} not found")
    try:
        with Image.open(p) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LetheError(f"{r.where}: image {p} does not decode ({type(e).__name__})") from None


def to_dataset(records: list[PrefRecord]):
    """A ``datasets.Dataset`` with TRL's vision-preference columns (``image`` makes TRL treat it as vision data;
    here the column holds the path and the collator decodes it)."""
    from datasets import Dataset

    return Dataset.from_dict({"image": [r.image for r in records], "prompt": [r.prompt for r in records],
                              "chosen": [r.chosen for r in records], "rejected": [r.rejected for r in records],
                              "where": [r.where for r in records]})


class PreferenceCollator:
    """Rows → TRL's DPO batch: ``[chosen…, rejected…]`` stacked on dim 0, each the same image and prompt, built by
    the model layer's forward map (the family's chat format and tokenization, labels on the answer only), and
    ``completion_mask`` = the answer tokens (+ EOS), which TRL's loss sums log-probs over."""

    def __init__(self, vlm, image_transform=None):
        self.vlm = vlm
        self.image_transform = image_transform

    def _image(self, row: dict):
        try:
            im = load_image(row["image"])
        except LetheError as e:
            raise LetheError(f"{row.get('where', row['image'])}: {e}") from None
        return self.image_transform(im) if self.image_transform else im

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        from common.models import IGNORE_INDEX, Sample

        images = [self._image(r) for r in rows]
        samples = [Sample(im, r["prompt"], target=r["chosen"]) for im, r in zip(images, rows)]
        samples += [Sample(im, r["prompt"], target=r["rejected"]) for im, r in zip(images, rows)]
        batch = self.vlm.build_batch(samples)
        return {**batch.inputs, "completion_mask": (batch.labels != IGNORE_INDEX).long()}


def mean_answer_tokens(vlm, records: list[PrefRecord]) -> float:
    """Mean token count of the preferred answers (+ EOS), as the forward map tokenizes them."""
    ids = vlm.tokenizer([r.chosen for r in records], add_special_tokens=False)["input_ids"]  # one batched call
    return sum(len(x) + 1 for x in ids) / max(1, len(ids))
