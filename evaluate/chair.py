"""CHAIR (Rohrbach et al., 2018) exactly as the canonical ``chair.py`` computes it, or EFUF's variant.

Canonical (``variant="canonical"``; Rohrbach et al.'s ``utils/chair.py`` at the HEAD of LisaAnne/Hallucination,
the same tables as Maxlinn's and OPERA's ports). Per caption: ``word_tokenize(caption.lower())`` -> ``singularize``
each token -> two-word merges (COCO multi-word names, "home plate" and "train track" (one non-object token, so
"train tracks" is no train), "baby/adult <animal>" -> animal, "passenger jet/train" -> jet/train, "bow tie" -> tie,
"toilet seat" -> toilet, "wine glas" -> wine glass) -> drop "seat" when "toilet" is present -> keep the tokens that
are in the synonym list and map them to their category. Every mention counts (CHAIR_i and Recall too) unless
``dedup_per_caption``.

EFUF (``variant="efuf"``; ``evaluate/eval_auto.py`` of starreeze/efuf, from RLHF-V): EFUF's synonym list (the
canonical one, items stripped, plus "brother", "pedestrian", "coffee table", "remote control"), merges = every
multi-word form of that list + "home plate"/"train track" + the same special rules (so "dining table", "coffee
table", "remote control" are one token, " motor bike" and " cheesecake" match), and each surface word counts once
per caption (``dedup_per_caption``). EFUF lemmatises with WordNet; here Pattern-style ``singularize`` stays.

Ground truth per image = categories of its instance annotations plus the objects found (same pipeline) in its
reference captions, pooled over every ``instances_*.json`` / ``captions_*.json`` of the annotation directory.
Canonical quirks kept on purpose: "bus" singularises to "bu" and is never counted, " motor bike"/" cheesecake"
carry a leading space in the canonical list (a double space after the comma) and so never match, "stove top oven"
is a three-word "double word" that can never fire.

Numbers: ``CHAIRs`` = captions with >= 1 hallucinated mention / captions; ``CHAIRi`` = hallucinated mentions /
object mentions; ``Recall`` = sum over captions of |mentioned GT categories| / sum of |GT categories|;
``Len`` = mean number of tokens after the merges (what OPERA's chair.py prints as "Len"). A ratio whose
denominator is 0 is reported as 0.0 (the canonical script raises ZeroDivisionError).
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from common.errors import LetheError
from common.io import PathLike, iter_jsonl_numbered, read_json
from common.text.objects import DEFAULT_SYNONYMS, ObjectExtractor
from common.text.wordtok import word_tokenize

# ----------------------------------------------------------------------------------------------- ground truth
@dataclass
class CocoGroundTruth:
    objects: dict[int, set[str]] = field(default_factory=dict)      # image id -> GT categories
    references: dict[int, list[str]] = field(default_factory=dict)  # image id -> reference captions
    files: list[str] = field(default_factory=list)


def _load_coco(path: Path):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, AssertionError, KeyError) as e:  # bad JSON, not a dict, missing keys
        raise LetheError(f"{path}: malformed COCO annotation file ({e.__class__.__name__}: {e})") from None


def load_ground_truth(annotation_dir: PathLike, extractor: ObjectExtractor,
                      image_ids: Iterable[int] | None = None) -> CocoGroundTruth:
    """Read every ``instances_*.json`` and ``captions_*.json`` in ``annotation_dir`` with ``pycocotools``.

    With ``image_ids`` only those images are kept (the result for them is the same).
    """
    root = Path(annotation_dir)
    inst_files = sorted(root.glob("instances_*.json"))
    cap_files = sorted(root.glob("captions_*.json"))
    if not inst_files or not cap_files:
        raise LetheError(f"{root}: needs instances_*.json and captions_*.json COCO annotation files")
    wanted = None if image_ids is None else set(image_ids)
    gt = CocoGroundTruth(files=[p.name for p in inst_files + cap_files])
    for path in inst_files:
        coco = _load_coco(path)
        for ann in coco.anns.values():
            imid = ann["image_id"]
            if wanted is not None and imid not in wanted:
                continue
            cat = coco.cats.get(ann["category_id"])
            if cat is None:
                raise LetheError(f"{path}: annotation {ann.get('id')} has unknown category_id "
                                     f"{ann['category_id']}")
            name = cat["name"]
            if name not in extractor.synonyms:
                raise LetheError(f"{path}: category {name!r} is not in the synonyms list")
            gt.objects.setdefault(imid, set()).add(extractor.synonyms[name])
    for path in cap_files:
        coco = _load_coco(path)
        for ann in coco.anns.values():
            imid = ann["image_id"]
            if wanted is not None and imid not in wanted:
                continue
            gt.objects.setdefault(imid, set()).update(extractor.extract(ann["caption"]).categories)
            gt.references.setdefault(imid, []).append(ann["caption"])
    return gt


# -------------------------------------------------------------------------------------------------- variants
CHAIR_VARIANTS = ("canonical", "efuf")


def chair_extractor(variant: str = "canonical", synonyms_path: PathLike | None = None, default_merges: bool = True,
                    extra_merges: Iterable[str] = ()) -> ObjectExtractor:
    """The matcher of a CHAIR variant. ``synonyms_path`` None: the variant's own list (canonical: the COCO file
    as is; efuf: EFUF's). ``default_merges`` False (a custom vocabulary) is canonical-only: EFUF derives its merges
    from the vocabulary."""
    if variant == "canonical":
        return ObjectExtractor.canonical(synonyms_path or DEFAULT_SYNONYMS, default_merges=default_merges,
                                         extra_merges=extra_merges)
    if variant == "efuf":
        if not default_merges:
            raise LetheError("the efuf CHAIR variant builds its merges from the vocabulary; "
                             "no_default_merges applies to the canonical variant only")
        return ObjectExtractor.efuf(synonyms_path, extra_merges=extra_merges)
    raise LetheError(f"unknown CHAIR variant {variant!r} (one of {', '.join(CHAIR_VARIANTS)})")


# ------------------------------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class Caption:
    image_id: int
    caption: str
    image: str = ""


_TRAILING_INT = re.compile(r"(\d+)$")


def image_id_from_name(name: str) -> int | None:
    """COCO file name -> image id (``COCO_train2014_000000123456.jpg`` / ``000000123456.jpg`` -> 123456)."""
    m = _TRAILING_INT.search(Path(name).stem)
    return int(m.group(1)) if m else None


def read_captions(path: PathLike) -> list[Caption]:
    """Captions from jsonl ``{"image_id", "image", "caption"}`` (``.json``: a list of such objects;
    ``.txt``: EFUF's ``image ### caption`` lines). A missing image_id is parsed from the image name.
    A file without any caption is refused (its CHAIR would be a perfect-looking 0.0)."""
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise LetheError(f"{path}: file not found")
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.replace("### gpt: ", "").split("###")
            if len(parts) < 2:
                raise LetheError(f"{path}:{lineno}: expected 'image ### caption'")
            rows.append((lineno, {"image": parts[0].strip(), "caption": parts[1].strip()}))
    elif path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise LetheError(f"{path}: expected a list of caption objects")
        rows = list(enumerate(data, 1))
    else:
        rows = list(iter_jsonl_numbered(path))
    out = []
    for lineno, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("caption"), str):
            raise LetheError(f"{path}:{lineno}: no 'caption' string")
        imid = row.get("image_id")
        if imid is None:
            imid = image_id_from_name(str(row.get("image", "")))
        if imid is None:
            raise LetheError(f"{path}:{lineno}: no 'image_id' and none in the image name")
        try:
            imid = int(imid)
        except (TypeError, ValueError):
            raise LetheError(f"{path}:{lineno}: image_id {imid!r} is not an integer") from None
        out.append(Caption(imid, row["caption"], str(row.get("image", ""))))
    if not out:  # CHAIR of nothing would print 0.0, a perfect score
        raise LetheError(f"{path}: no captions (an empty file: was generation interrupted before its first batch?)")
    return out


# -------------------------------------------------------------------------------------------------- scoring
def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def compute_chair(captions: Sequence[Caption], extractor: ObjectExtractor, gt_objects: Mapping[int, set[str]],
                  dedup_per_caption: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Overall metrics and one detail record per caption. No captions is an error, not a perfect 0.0."""
    if not captions:
        raise LetheError("no captions to score")
    n_hal_caps = n_hal = n_mentions = n_gt = n_recalled = n_tokens = 0
    details = []
    empty: set[str] = set()
    for cap in captions:
        ex = extractor.extract(cap.caption)
        gt = gt_objects.get(cap.image_id, empty)
        pairs = list(zip(ex.words, ex.categories))
        if dedup_per_caption:
            seen: set[str] = set()
            pairs = [p for p in pairs if not (p[0] in seen or seen.add(p[0]))]
        hallucinated = [[w, c] for w, c in pairs if c not in gt]
        recalled = {c for _, c in pairs if c in gt}
        n_mentions += len(pairs)
        n_hal += len(hallucinated)
        n_hal_caps += bool(hallucinated)
        n_gt += len(gt)
        n_recalled += len(recalled)
        n_tokens += len(ex.tokens)
        details.append({
            "image_id": cap.image_id, "image": cap.image, "caption": cap.caption,
            "mentions": [[w, c] for w, c in pairs], "hallucinated": hallucinated, "gt_objects": sorted(gt),
            "CHAIRs": int(bool(hallucinated)), "CHAIRi": _ratio(len(hallucinated), len(pairs)),
            "Recall": _ratio(len(recalled), len(gt)), "Len": len(ex.tokens),
        })
    n_caps = len(captions)
    metrics = {
        "CHAIRs": _ratio(n_hal_caps, n_caps), "CHAIRi": _ratio(n_hal, n_mentions), "Recall": _ratio(n_recalled, n_gt),
        "Len": _ratio(n_tokens, n_caps), "num_captions": n_caps, "object_mentions": n_mentions,
        "hallucinated_mentions": n_hal, "hallucinated_captions": n_hal_caps, "gt_objects": n_gt,
        "recalled_gt_objects": n_recalled,
    }
    return metrics, details


def compute_bleu(captions: Sequence[Caption], references: Mapping[int, list[str]]) -> tuple[dict[str, Any], list]:
    """Corpus BLEU-1/2/4 (word level: the CHAIR tokenizer on lower-cased text) against all reference captions of
    each image, plus sentence BLEU per caption (``None`` where an image has no references)."""
    from evaluate.bleu import corpus_bleu, sentence_bleu

    refs_tok: dict[int, list[list[str]]] = {}
    hyps, refss, per_caption = [], [], []
    for cap in captions:
        refs = references.get(cap.image_id)
        if not refs:
            per_caption.append(None)
            continue
        if cap.image_id not in refs_tok:
            refs_tok[cap.image_id] = [word_tokenize(r.lower()) for r in refs]
        hyp = word_tokenize(cap.caption.lower())
        hyps.append(hyp)
        refss.append(refs_tok[cap.image_id])
        s = sentence_bleu(refss[-1], hyp)
        per_caption.append({f"BLEU-{n}": v for n, v in s.items()})
    scores = corpus_bleu(refss, hyps) if hyps else {1: 0.0, 2: 0.0, 4: 0.0}
    metrics = {f"BLEU-{n}": v for n, v in scores.items()}
    metrics["bleu_num_captions"] = len(hyps)
    return metrics, per_caption
