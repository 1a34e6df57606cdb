"""Writers of the toy world's data files: COCO instances/captions, vocabulary, pretraining caption corpus.

Every file goes through ``Writer``: atomic (temp file + ``os.replace``), skipped when the bytes on disk are
already identical (so a re-run with the same seed changes nothing, not even mtimes), and recorded so that stale
files of an earlier, larger run can be pruned.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from common.io import atomic_path
from common.toy.world import (
    CATEGORIES,
    NUMBER_WORDS,
    OPPOSITE,
    YES_NO_SUFFIX,
    Split,
    WorldConfig,
    add_hallucination,
    category_by_name,
    coco_bbox,
    coco_polygon,
    colour_question,
    count_question,
    existence_question,
    object_mask,
    position_question,
    relation,
    render_caption,
    render_scene,
    rng_for,
    scene_category_ids,
    scene_counts,
)

# Folders the generator owns inside the output directory; ``prune`` only ever deletes there.
MANAGED = ("images", "annotations", "pope", "mme", "gqa", "scienceqa", "qbench", "llava")
MANAGED_SUFFIXES = (".png", ".json", ".jsonl", ".txt")
TOP_LEVEL = ("objects.json", "synonyms.txt", "bias.json", "pretrain_captions_train.jsonl", "manifest.json")


class Writer:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.written: set[str] = set()
        self.n_written = 0
        self.n_unchanged = 0
        umask = os.umask(0)  # the temp files of atomic_path are 0600; give the data the usual permissions
        os.umask(umask)
        self.mode = 0o666 & ~umask

    def bytes(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        self.written.add(Path(rel).as_posix())
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                self.n_unchanged += 1
                return path
        except FileNotFoundError:
            pass
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
            os.chmod(tmp, self.mode)
        self.n_written += 1
        return path

    def text(self, rel: str, text: str) -> Path:
        return self.bytes(rel, text.encode("utf-8"))

    def json(self, rel: str, obj: Any, indent: int | None = None) -> Path:
        return self.text(rel, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")

    def jsonl(self, rel: str, rows: Iterable[dict]) -> Path:
        return self.text(rel, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def png(self, rel: str, im: Image.Image) -> Path:
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=6)
        return self.bytes(rel, buf.getvalue())

    def copy(self, rel: str, src_rel: str) -> Path:
        return self.bytes(rel, (self.root / src_rel).read_bytes())

    def prune(self) -> int:
        """Delete files in the generator's folders that this run did not write (left by a larger earlier run)."""
        removed = 0
        for top in MANAGED:
            base = self.root / top
            if not base.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(base, topdown=False):
                for fn in filenames:
                    p = Path(dirpath) / fn
                    rel = p.relative_to(self.root).as_posix()
                    if rel not in self.written and fn.endswith(MANAGED_SUFFIXES):
                        p.unlink()
                        removed += 1
                if dirpath != str(base) and not os.listdir(dirpath):
                    os.rmdir(dirpath)
        return removed


# --------------------------------------------------------------------------------------------------- vocabulary

COCO_INFO = {
    "description": "Lethe toy world (synthetic, COCO format)",
    "version": "1.0",
    "year": 2024,
    "contributor": "common.toy",
    "url": "",
    "date_created": "2024-01-01 00:00:00",
}
COCO_LICENSES = [{"id": 1, "name": "CC0 (synthetic)", "url": ""}]


def coco_categories() -> list[dict[str, Any]]:
    return [{"supercategory": c.supercategory, "id": c.id, "name": c.name} for c in CATEGORIES]


def write_vocabulary(w: Writer, cfg: WorldConfig) -> None:
    # CHAIR / EFUF synonyms.txt: one line per category, "canonical, syn1, syn2, ..."
    w.text("synonyms.txt", "".join(", ".join(c.synonyms) + "\n" for c in CATEGORIES))
    w.json("objects.json", {
        "image_size": cfg.image_size,
        "grid": cfg.grid,
        "cell": cfg.cell,
        "categories": [
            {"id": c.id, "name": c.name, "plural": c.plural, "synonyms": list(c.synonyms), "color": c.color,
             "rgb": list(c.rgb), "shape": c.shape, "supercategory": c.supercategory}
            for c in CATEGORIES
        ],
    }, indent=2)


# --------------------------------------------------------------------------------------------------- COCO splits


def coco_images(split: Split, size: int) -> list[dict[str, Any]]:
    return [
        {"license": 1, "file_name": fn, "coco_url": "", "height": size, "width": size,
         "date_captured": "2024-01-01 00:00:00", "flickr_url": "", "id": iid}
        for iid, fn in zip(split.image_ids, split.file_names)
    ]


def write_split(w: Writer, split: Split) -> None:
    """images/<split>/*.png + annotations/instances_<split>.json + annotations/captions_<split>.json"""
    size = split.scenes[0]["size"] if split.scenes else 0
    anns, caps = [], []
    for iid, fn, scene, specs in zip(split.image_ids, split.file_names, split.scenes, split.captions):
        w.png(f"images/{split.name}/{fn}", render_scene(scene))
        for k, obj in enumerate(scene["objects"]):
            poly = coco_polygon(obj, scene)
            anns.append({
                "segmentation": [poly], "area": float(object_mask(obj, scene).sum()), "iscrowd": 0, "image_id": iid,
                "bbox": coco_bbox(poly, size), "category_id": obj["category_id"], "id": iid * 100 + k,
            })
        for j, spec in enumerate(specs):
            caps.append({"image_id": iid, "id": iid * 10 + j, "caption": render_caption(spec)})
    images = coco_images(split, size)
    w.json(f"annotations/instances_{split.name}.json", {
        "info": COCO_INFO, "licenses": COCO_LICENSES, "images": images, "annotations": anns,
        "categories": coco_categories(),
    })
    w.json(f"annotations/captions_{split.name}.json", {
        "info": COCO_INFO, "licenses": COCO_LICENSES, "images": images, "annotations": caps,
    })


# --------------------------------------------------------------------------------------------------- statistics


def cooccurrence_stats(split: Split) -> dict[str, Any]:
    """Image frequency of each category and image co-occurrence counts of each pair (ground truth)."""
    n = len(CATEGORIES)
    freq = np.zeros(n + 1, dtype=np.int64)
    co = np.zeros((n + 1, n + 1), dtype=np.int64)
    for scene in split.scenes:
        ids = scene_category_ids(scene)
        for a in ids:
            freq[a] += 1
            for b in ids:
                if a != b:
                    co[a, b] += 1
    return {"freq": freq, "cooc": co}


# --------------------------------------------------------------------------------------------------- pretrain corpus


def write_pretrain_corpus(w: Writer, cfg: WorldConfig, train: Split) -> None:
    """pretrain_captions_train.jsonl: the train captions, where for each bias pair A→B a share ``bias_rate`` of the
    captions of images holding A but not B also mention B (exactly round(bias_rate·N) of the N such captions).
    The COCO captions stay clean; bias.json records the pairs and the realised shares."""
    rng = rng_for(cfg.seed, "bias", 0)
    specs = [list(s) for s in train.captions]
    pairs_out = []
    for a, b in cfg.bias_pairs:
        ia, ib = category_by_name(a).id, category_by_name(b).id
        slots = [(i, j) for i, scene in enumerate(train.scenes)
                 if ia in (ids := scene_category_ids(scene)) and ib not in ids
                 for j in range(len(specs[i]))]
        k = int(round(cfg.bias_rate * len(slots)))
        chosen = sorted(rng.permutation(len(slots))[:k].tolist())
        for s in chosen:
            i, j = slots[s]
            specs[i][j] = add_hallucination(rng, specs[i][j], ib)
        pairs_out.append({
            "a": a, "b": b, "a_id": ia, "b_id": ib,
            "eligible_images": len({i for i, _ in slots}), "eligible_captions": len(slots),
            "biased_captions": k, "share": round(k / len(slots), 6) if slots else 0.0,
        })
    rows = [
        {"image_id": iid, "image": fn, "caption": render_caption(spec)}
        for iid, fn, image_specs in zip(train.image_ids, train.file_names, specs)
        for spec in image_specs
    ]
    w.jsonl("pretrain_captions_train.jsonl", rows)
    w.json("bias.json", {
        "description": "A->B: captions of train images with A and without B also mention B in the pretraining "
                       "corpus (pretrain_captions_train.jsonl); COCO captions/instances stay clean. In the truth, "
                       "B is added beside A with probability cooccur_rate.",
        "bias_rate": cfg.bias_rate, "cooccur_rate": cfg.cooccur_rate, "pairs": pairs_out,
    }, indent=2)


# --------------------------------------------------------------------------------------------------- instruction mix

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
DESCRIBE_PROMPTS = ("Describe the image briefly.", "What objects are in this picture?",
                    "Please describe the image.")


DESCRIPTION_SHARE = 0.05  # as in LLaVA's mix665k, where detailed descriptions are a small share of the data


def instruction_turns(rng: np.random.Generator, scene: dict[str, Any], caption: str) -> list[tuple[str, str]]:
    """Truthful question/answer turns about a scene (existence, colour, count) in a random order; a share
    ``DESCRIPTION_SHARE`` of the conversations start with a description request answered by the clean caption."""
    counts = scene_counts(scene)
    present = list(counts)
    absent = [c.id for c in CATEGORIES if c.id not in counts]
    turns = [(DESCRIBE_PROMPTS[int(rng.integers(len(DESCRIBE_PROMPTS)))], caption)]
    c = CATEGORIES[present[int(rng.integers(len(present)))] - 1]
    turns.append((f"Is there a {c.name} in the image?{SHORT_ANSWER}", "Yes"))
    if absent:
        a = CATEGORIES[absent[int(rng.integers(len(absent)))] - 1]
        turns.append((f"Is there a {a.name} in the image?{SHORT_ANSWER}", "No"))
    turns.append((f"What color is the {c.name}?{SHORT_ANSWER}", c.color.capitalize()))
    n = counts[c.id]
    turns.append((f"How many {c.plural} are there in the image?{SHORT_ANSWER}",
                  (NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)).capitalize()))
    qa = [turns[i] for i in rng.permutation(len(turns) - 1) + 1]
    return [turns[0]] + qa if rng.random() < DESCRIPTION_SHARE else qa


VERIFY_TURNS = 2  # yes/no verification turns that end every conversation


def verification_turns(rng: np.random.Generator, scene: dict[str, Any],
                       k: int = VERIFY_TURNS) -> list[tuple[str, str]]:
    """``k`` yes/no questions of distinct kinds about a scene, each true or false with probability 1/2, as the
    evaluation asks MME's (its question, then LLaVA's short-answer line; VQA-style verification questions are part
    of LLaVA's mix665k): existence ("Is there a ball in this image?"), colour ("Is there a red ball in this
    image?"), count ("Are there two boxes in this image?") and, when two objects are alone in their category,
    position ("Is the ball on the left of the box?")."""
    counts = scene_counts(scene)
    present = list(counts)
    absent = [c.id for c in CATEGORIES if c.id not in counts]
    singles = [o for o in scene["objects"] if counts[o["category_id"]] == 1]
    pairs = [(a, b) for a in singles for b in singles if a is not b]  # distinct cells: a relation always holds
    kinds = (["existence"] if absent else []) + ["colour", "count"] + (["position"] if pairs else [])
    turns = []
    for kind in [kinds[i] for i in rng.permutation(len(kinds))[:k]]:
        yes = bool(rng.random() < 0.5)
        if kind == "position":
            a, b = pairs[int(rng.integers(len(pairs)))]
            rel = relation(a, b)
            q = position_question(a["category_id"], b["category_id"], rel if yes else OPPOSITE[rel])
        elif kind == "existence":
            pool = present if yes else absent
            q = existence_question(pool[int(rng.integers(len(pool)))])
        else:
            cid = present[int(rng.integers(len(present)))]
            if kind == "colour":
                wrong = [c.color for c in CATEGORIES if c.id != cid]
                q = colour_question(cid, CATEGORIES[cid - 1].color if yes else wrong[int(rng.integers(len(wrong)))])
            else:
                wrong = [m for m in (1, 2, 3, 4) if m != counts[cid]]
                q = count_question(cid, counts[cid] if yes else wrong[int(rng.integers(len(wrong)))])
        turns.append((q + YES_NO_SUFFIX + SHORT_ANSWER, "Yes" if yes else "No"))
    return turns


def write_instruction_mix(w: Writer, cfg: WorldConfig, train: Split) -> int:
    """llava/llava_v1_5_mix665k.json: LLaVA's instruction format (the "gold" retention data of EFUF, and STIC's
    stage-2 data), built from the clean train captions, truthful QA and yes/no verification turns; image paths
    relative to the dataset root."""
    rows = []
    for i, (iid, fn, scene, specs) in enumerate(zip(train.image_ids, train.file_names, train.scenes,
                                                     train.captions)):
        rng = rng_for(cfg.seed, "mix", i)
        turns = instruction_turns(rng, scene, render_caption(specs[0]))
        turns += verification_turns(rng_for(cfg.seed, "verify", i), scene)  # last: the first turn stays as it was
        conv = []
        for j, (q, a) in enumerate(turns):
            conv.append({"from": "human", "value": ("<image>\n" if j == 0 else "") + q})
            conv.append({"from": "gpt", "value": a})
        rows.append({"id": f"toy-{iid:012d}", "image": f"images/train/{fn}", "conversations": conv})
    w.json("llava/llava_v1_5_mix665k.json", rows)
    return len(rows)
