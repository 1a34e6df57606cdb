"""CHAIR: the canonical per-caption loop (a straight port of Rohrbach et al.'s chair.py, OPERA/Maxlinn version with
Recall and Len) against ``evaluate.chair`` on the same 5,000 synthetic captions. Checks that every number and
every per-caption mention list agree, then prints both times and the ratio.

    python benchmarks/bench_chair.py [--captions 5000] [--seed 0] [--runs 3] [--threads 1]

The canonical side keeps its own copy of the canonical tables (the double words, animal and vehicle words and the
special merges, as at the HEAD of LisaAnne/Hallucination utils/chair.py) and imports no list or merge table from
the product, so "identical" also checks the product's tables; the synonyms file is read by path and must be the
canonical ``data/synonyms.txt`` byte for byte (sha256 checked). Both sides share ``common.text.wordtok``
(nltk.word_tokenize semantics; nltk is not installed) and ``common.text.singular`` (Pattern's singularize).
The canonical side tries every Treebank rule (as NLTK does), singularises every token afresh (Pattern has no cache)
and rebuilds ``set(mscoco_objects)`` for every token, as the original does. Ours skips Treebank rules whose
trigger characters are absent, caches singularisation, looks tokens up in a prebuilt dict and only tries a
two-word merge when the token can start one.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_bench.py

from common.text.objects import ObjectExtractor  # noqa: E402
from common.text.singular import singularize  # noqa: E402
from common.text.wordtok import word_tokenize  # noqa: E402
from evaluate.chair import Caption, compute_chair  # noqa: E402

# The canonical script's own data, copied here on purpose (not imported from common.text.objects).
SYNONYMS_PATH = os.path.join(ROOT, "common", "text", "data", "coco_synonyms.txt")
SYNONYMS_SHA256 = "b685537b36fe21b791c87151b96a991ceb582edff19f3da204dcc7a7905502f2"  # LisaAnne data/synonyms.txt
CANONICAL_DOUBLE_WORDS = [
    'motor bike', 'motor cycle', 'air plane', 'traffic light', 'street light', 'traffic signal', 'stop light',
    'fire hydrant', 'stop sign', 'parking meter', 'suit case', 'sports ball', 'baseball bat', 'baseball glove',
    'tennis racket', 'wine glass', 'hot dog', 'cell phone', 'mobile phone', 'teddy bear', 'hair drier',
    'potted plant', 'bow tie', 'laptop computer', 'stove top oven', 'hot dog', 'teddy bear', 'home plate',
    'train track']
CANONICAL_ANIMAL_WORDS = ['bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe',
                          'animal', 'cub']
CANONICAL_VEHICLE_WORDS = ['jet', 'train']

_singularize_uncached = singularize.__wrapped__


class CanonicalCHAIR:
    """The canonical evaluator, ported line by line (minus file loading)."""

    def __init__(self, imid_to_objects: dict[int, set[str]], synonyms_path: str = SYNONYMS_PATH):
        self.imid_to_objects = imid_to_objects
        with open(synonyms_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        assert digest == SYNONYMS_SHA256, f"{synonyms_path} is not the canonical synonyms.txt"
        synonyms = open(synonyms_path).readlines()
        synonyms = [s.strip().split(", ") for s in synonyms]
        self.mscoco_objects = []
        self.inverse_synonym_dict = {}
        for synonym in synonyms:
            self.mscoco_objects.extend(synonym)
            for s in synonym:
                self.inverse_synonym_dict[s] = synonym[0]
        self.double_word_dict = {}
        for double_word in CANONICAL_DOUBLE_WORDS:
            self.double_word_dict[double_word] = double_word
        for animal_word in CANONICAL_ANIMAL_WORDS:
            self.double_word_dict["baby %s" % animal_word] = animal_word
            self.double_word_dict["adult %s" % animal_word] = animal_word
        for vehicle_word in CANONICAL_VEHICLE_WORDS:
            self.double_word_dict["passenger %s" % vehicle_word] = vehicle_word
        self.double_word_dict["bow tie"] = "tie"
        self.double_word_dict["toilet seat"] = "toilet"
        self.double_word_dict["wine glas"] = "wine glass"

    def caption_to_words(self, caption):
        words = word_tokenize(caption.lower(), fast=False)  # every Treebank rule tried, as NLTK does
        words = [_singularize_uncached(w) for w in words]
        i = 0
        double_words = []
        idxs = []
        while i < len(words):
            idxs.append(i)
            double_word = " ".join(words[i:i + 2])
            if double_word in self.double_word_dict:
                double_words.append(self.double_word_dict[double_word])
                i += 2
            else:
                double_words.append(words[i])
                i += 1
        words = double_words
        if ("toilet" in words) & ("seat" in words):
            words = [word for word in words if word != "seat"]
        idxs = [idxs[idx] for idx, word in enumerate(words) if word in set(self.mscoco_objects)]
        words = [word for word in words if word in set(self.mscoco_objects)]
        node_words = []
        for word in words:
            node_words.append(self.inverse_synonym_dict[word])
        return words, node_words, idxs, double_words

    def compute_chair(self, caps, imids):
        num_caps = num_hallucinated_caps = hallucinated_word_count = coco_word_count = len_caps = 0.
        num_recall_gt_objects = num_gt_objects = 0.
        output = {"sentences": []}
        for cap, imid in zip(caps, imids):
            words, node_words, idxs, raw_words = self.caption_to_words(cap)
            gt_objects = self.imid_to_objects[imid]
            cap_dict = {"image_id": imid, "caption": cap, "mscoco_hallucinated_words": [],
                        "mscoco_gt_words": list(gt_objects), "mscoco_generated_words": list(node_words),
                        "hallucination_idxs": [], "words": raw_words}
            cap_dict["metrics"] = {"CHAIRs": 0, "CHAIRi": 0, "Recall": 0}
            coco_word_count += len(node_words)
            hallucinated = False
            recall_gt_objects = set()
            for word, node_word, idx in zip(words, node_words, idxs):
                if node_word not in gt_objects:
                    hallucinated_word_count += 1
                    cap_dict["mscoco_hallucinated_words"].append((word, node_word))
                    cap_dict["hallucination_idxs"].append(idx)
                    hallucinated = True
                else:
                    recall_gt_objects.add(node_word)
            num_caps += 1
            len_caps += len(raw_words)
            if hallucinated:
                num_hallucinated_caps += 1
            num_gt_objects += len(gt_objects)
            num_recall_gt_objects += len(recall_gt_objects)
            cap_dict["metrics"]["CHAIRs"] = int(hallucinated)
            cap_dict["metrics"]["CHAIRi"] = 0.
            if len(words) > 0:
                cap_dict["metrics"]["CHAIRi"] = len(cap_dict["mscoco_hallucinated_words"]) / float(len(words))
            output["sentences"].append(cap_dict)
        output["overall_metrics"] = {"CHAIRs": num_hallucinated_caps / num_caps,
                                     "CHAIRi": hallucinated_word_count / coco_word_count,
                                     "Recall": num_recall_gt_objects / num_gt_objects,
                                     "Len": len_caps / num_caps}
        return output


# ------------------------------------------------------------------------------------------ synthetic input
OBJECT_PHRASES = [
    "dog", "dogs", "puppy", "cat", "kittens", "man", "men", "woman", "women", "people", "children", "child",
    "teddy bear", "teddy bears", "hot dog", "hot dogs", "wine glass", "wine glasses", "toilet", "toilet seat",
    "seat", "chair", "couch", "sofa", "tv", "laptop", "cell phone", "mobile phone", "bus", "buses", "car", "cars",
    "traffic light", "stop sign", "fire hydrant", "bench", "bird", "birds", "horse", "sheep", "cow", "cattle",
    "elephant", "bear", "zebra", "giraffes", "backpack", "umbrella", "handbag", "tie", "bow tie", "suitcase",
    "frisbee", "skis", "snowboard", "ball", "kite", "baseball bat", "skateboard", "surfboard", "tennis racket",
    "bottle", "cup", "fork", "knife", "knives", "spoon", "bowl", "banana", "bananas", "apple", "sandwich", "orange",
    "broccoli", "carrot", "pizza", "donut", "cake", "bed", "dining table", "table", "desk", "mouse", "remote",
    "keyboard", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "books", "clock", "vase",
    "scissors", "hair drier", "toothbrush", "baby elephant", "adult giraffe", "passenger train", "train tracks",
    "motor bike", "glasses", "boat", "airplane", "jet", "bicycle", "bike", "truck", "tree", "grass", "sky", "wall",
    "train track", "home plate", "coffee table", "passenger jet", "baby bird", "cheesecake", "pedestrian",
]
TEMPLATES = [
    "The image shows a {0} next to a {1}.", "There are two {0} and a {1} on the {2}.",
    "A {0}, a {1} and some {2} can be seen in the scene. The {0} is near the {1}.",
    "In the background, a {0} stands beside a {1}; a {2} is visible too!",
    "The picture features a {0} ({1}) with a {2} - it's a busy scene. Overall, the {0} looks happy.",
    "Is that a {0}? Yes, and the {1}'s owner holds a {2}.",
]


def synthetic(n: int, seed: int, canonical: CanonicalCHAIR) -> tuple[list[str], list[int], dict[int, set[str]]]:
    """n captions over n/5 images; about 70% of the object phrases are of the image's ground-truth categories."""
    rnd = random.Random(seed)
    by_category: dict[str, list[str]] = {}
    for phrase in OBJECT_PHRASES:
        for cat in sorted(set(canonical.caption_to_words(f"a {phrase}.")[1])):
            by_category.setdefault(cat, []).append(phrase)
    categories = sorted(by_category)
    n_images = max(1, n // 5)
    gt = {i: set(rnd.sample(categories, rnd.randint(2, 6))) for i in range(n_images)}
    caps, imids = [], []
    for _ in range(n):
        imid = rnd.randrange(n_images)
        pool = [p for c in sorted(gt[imid]) for p in by_category[c]]

        def phrase() -> str:
            return rnd.choice(pool) if rnd.random() < 0.7 else rnd.choice(OBJECT_PHRASES)

        sentences = [rnd.choice(TEMPLATES).format(phrase(), phrase(), phrase()) for _ in range(rnd.randint(1, 4))]
        caps.append(" ".join(sentences))
        imids.append(imid)
    return caps, imids, gt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CHAIR itself is single-threaded Python)")
    args = ap.parse_args(argv)
    from _bench import Timings, fix_threads, result

    threads = fix_threads(args.threads)

    canonical = CanonicalCHAIR({})
    caps, imids, gt = synthetic(args.captions, args.seed, canonical)
    canonical.imid_to_objects = gt
    t = Timings()
    for _ in range(max(1, args.runs)):
        with t.measure("original"):
            ref = canonical.compute_chair(caps, imids)
        singularize.cache_clear()
        with t.measure("ours"):
            extractor = ObjectExtractor.canonical()
            metrics, details = compute_chair([Caption(i, c) for i, c in zip(imids, caps)], extractor, gt)
    for key in ("CHAIRs", "CHAIRi", "Recall", "Len"):
        assert metrics[key] == ref["overall_metrics"][key], (key, metrics[key], ref["overall_metrics"][key])
    for s, d in zip(ref["sentences"], details):
        assert [list(p) for p in zip(s["mscoco_generated_words"])] == [[c] for _, c in d["mentions"]]
        assert [list(p) for p in s["mscoco_hallucinated_words"]] == d["hallucinated"]
        assert len(s["words"]) == d["Len"]
    print(f"{args.captions} captions, {len(gt)} images: CHAIRs={metrics['CHAIRs']:.4f} "
          f"CHAIRi={metrics['CHAIRi']:.4f} Recall={metrics['Recall']:.4f} Len={metrics['Len']:.2f} (identical)")
    print(f"canonical loop vs evaluate.chair ({threads} thread(s)): {t.line()}")
    result("chair", t.ratio(), True, threads, wall_ratio=round(t.ratio(kind="wall"), 4), captions=args.captions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
