"""The toy world's benchmarks, each in the layout of the official release (see ``dataset/README.md``).

POPE and GQA are built on the val split (as POPE uses COCO val2014); MME, ScienceQA and Q-Bench render their own
images, because their questions need controlled scenes (counts, positions, corruptions).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from common.toy.formats import Writer
from common.toy.world import (
    CATEGORIES,
    OPPOSITE,
    SHAPES,
    YES_NO_SUFFIX,
    Split,
    WorldConfig,
    article,
    category_by_name,
    colour_question,
    corrupt,
    count_question,
    existence_question,
    position_question,
    relation,
    render_scene,
    rng_for,
    sample_scene,
    scene_category_ids,
    scene_counts,
)

ALL_IDS = [c.id for c in CATEGORIES]
COLOURS = [c.color for c in CATEGORIES]


def _cat(cid: int):
    return CATEGORIES[cid - 1]


def _pick(rng: np.random.Generator, items: Sequence, k: int | None = None):
    """rng.choice over a Python list, returning Python objects (one item, or a list of k distinct ones)."""
    if k is None:
        return items[int(rng.integers(len(items)))]
    return [items[int(i)] for i in rng.permutation(len(items))[:k]]


def _shuffled_choices(rng: np.random.Generator, answer: str, distractors: Sequence[str]) -> tuple[list[str], int]:
    choices = [answer, *distractors]
    order = rng.permutation(len(choices)).tolist()
    choices = [choices[i] for i in order]
    return choices, choices.index(answer)


# --------------------------------------------------------------------------------------------------- POPE

POPE_SPLITS = ("random", "popular", "adversarial")


def pope_negatives(kind: str, rng: np.random.Generator, present: Sequence[int], k: int, stats: dict[str, Any],
                   bias_pairs: Sequence[tuple[int, int]]) -> list[int]:
    """k absent categories: uniformly (random), the most frequent (popular), or the ones that co-occur most with
    the present objects (adversarial; the bias partners of present objects come first), as POPE samples them."""
    absent = [c for c in ALL_IDS if c not in present]
    freq, co = stats["freq"], stats["cooc"]
    if kind == "random":
        return _pick(rng, absent, k)
    if kind == "popular":
        return sorted(absent, key=lambda c: (-int(freq[c]), c))[:k]
    if kind == "adversarial":
        partners: list[int] = []
        for a, b in bias_pairs:
            if a in present and b in absent and b not in partners:
                partners.append(b)
        rest = sorted((c for c in absent if c not in partners),
                      key=lambda c: (-sum(int(co[p, c]) for p in present), -int(freq[c]), c))
        return (partners + rest)[:k]
    raise ValueError(kind)


def write_pope(w: Writer, cfg: WorldConfig, val: Split, stats: dict[str, Any]) -> dict[str, int]:
    """pope/llava_pope_test.jsonl (LLaVA's question file, all three splits, ``category`` = split) and
    pope/coco_pope_{random,popular,adversarial}.json (POPE's label files, one JSON object per line, same
    question_ids, same order). Images are the val images (images/val/)."""
    n_img = min(cfg.pope_images, len(val.scenes))
    bias = [(category_by_name(a).id, category_by_name(b).id) for a, b in cfg.bias_pairs]
    positives = []
    for i in range(n_img):
        present = scene_category_ids(val.scenes[i])
        k = min(cfg.pope_per_image, len(present), len(ALL_IDS) - len(present))
        positives.append(_pick(rng_for(cfg.seed, "pope", 0, i), present, k))
    questions, counts = [], {}
    qid = 0
    for s, kind in enumerate(POPE_SPLITS):
        labels = []
        for i in range(n_img):
            present = scene_category_ids(val.scenes[i])
            pos = positives[i]
            neg = pope_negatives(kind, rng_for(cfg.seed, "pope", s + 1, i), present, len(pos), stats, bias)
            for p, n in zip(pos, neg):
                for cid, label in ((p, "yes"), (n, "no")):
                    qid += 1
                    text = f"Is there {article(_cat(cid).name)} {_cat(cid).name} in the image?"
                    questions.append({"question_id": qid, "image": val.file_names[i], "text": text, "category": kind})
                    labels.append({"question_id": qid, "image": val.file_names[i], "text": text, "label": label})
        w.jsonl(f"pope/coco_pope_{kind}.json", labels)
        counts[kind] = len(labels)
    w.jsonl("pope/llava_pope_test.jsonl", questions)
    return counts


# --------------------------------------------------------------------------------------------------- MME

MME_SUBTASKS = ("existence", "count", "position", "color")


def mme_item(cfg: WorldConfig, subtask: str, i: int) -> tuple[dict[str, Any], str, str]:
    """(scene, question whose answer is Yes, question whose answer is No) for one MME image."""
    rng = rng_for(cfg.seed, "mme", MME_SUBTASKS.index(subtask), i)
    max_obj = min(3, cfg.max_objects)
    if subtask == "existence":
        scene = sample_scene(rng, cfg, n_objects=int(rng.integers(1, max_obj + 1)))
        present = scene_category_ids(scene)
        yes = _pick(rng, present)
        no = _pick(rng, [c for c in ALL_IDS if c not in present])
        q_yes, q_no = existence_question(yes), existence_question(no)
    elif subtask == "count":
        cid = _pick(rng, ALL_IDS)
        n = int(rng.integers(1, min(3, cfg.grid * cfg.grid - 1) + 1))
        others = _pick(rng, [c for c in ALL_IDS if c != cid], int(rng.integers(0, 2)))
        scene = sample_scene(rng, cfg, categories=[cid] * n + others)
        wrong = _pick(rng, [m for m in (1, 2, 3, 4) if m != n])
        q_yes, q_no = count_question(cid, n), count_question(cid, wrong)
    elif subtask == "position":
        a, b = _pick(rng, ALL_IDS, 2)
        scene = sample_scene(rng, cfg, categories=[a, b])
        oa = next(o for o in scene["objects"] if o["category_id"] == a)
        ob = next(o for o in scene["objects"] if o["category_id"] == b)
        rel = relation(oa, ob)
        assert rel is not None
        q_yes, q_no = position_question(a, b, rel), position_question(a, b, OPPOSITE[rel])
    elif subtask == "color":
        scene = sample_scene(rng, cfg, n_objects=int(rng.integers(1, max_obj + 1)))
        cid = _pick(rng, scene_category_ids(scene))
        right = _cat(cid).color
        wrong = _pick(rng, [c for c in COLOURS if c != right])
        q_yes, q_no = colour_question(cid, right), colour_question(cid, wrong)
    else:
        raise ValueError(subtask)
    return scene, q_yes + YES_NO_SUFFIX, q_no + YES_NO_SUFFIX


def write_mme(w: Writer, cfg: WorldConfig) -> dict[str, int]:
    """mme/<subtask>/images/<name>.png + mme/<subtask>/questions_answers_YN/<name>.txt (two lines:
    ``question<TAB>Yes`` then ``question<TAB>No``), as in MME_Benchmark_release_version."""
    counts = {}
    for subtask in MME_SUBTASKS:
        for i in range(cfg.mme_per_subtask):
            scene, q_yes, q_no = mme_item(cfg, subtask, i)
            name = f"{i + 1:012d}"
            w.png(f"mme/{subtask}/images/{name}.png", render_scene(scene))
            w.text(f"mme/{subtask}/questions_answers_YN/{name}.txt", f"{q_yes}\tYes\n{q_no}\tNo")
        counts[subtask] = cfg.mme_per_subtask
    return counts


# --------------------------------------------------------------------------------------------------- GQA

GQA_SUFFIX = "\nAnswer the question using a single word or phrase."
GQA_KINDS = ("exist", "queryAttr", "chooseAttr", "logicAnd", "positionChoose", "queryObject")
GQA_TYPES = {
    "exist": {"structural": "verify", "semantic": "obj", "detailed": "exist"},
    "queryAttr": {"structural": "query", "semantic": "attr", "detailed": "queryAttr"},
    "chooseAttr": {"structural": "choose", "semantic": "attr", "detailed": "chooseAttr"},
    "logicAnd": {"structural": "logical", "semantic": "obj", "detailed": "logicAnd"},
    "positionChoose": {"structural": "choose", "semantic": "rel", "detailed": "positionChoose"},
    "queryObject": {"structural": "query", "semantic": "cat", "detailed": "categoryThis"},
}


def gqa_question(kind: str, rng: np.random.Generator, scene: dict[str, Any]) -> tuple[str, str, str] | None:
    """(question, answer, fullAnswer) of one kind about a scene, or None when the kind does not apply."""
    present = scene_category_ids(scene)
    absent = [c for c in ALL_IDS if c not in present]
    counts = scene_counts(scene)

    def the(cid: int) -> str:  # "the ball" / "the balls"
        return f"the {_cat(cid).name if counts.get(cid, 1) == 1 else _cat(cid).plural}"

    def be(cid: int) -> str:
        return "is" if counts.get(cid, 1) == 1 else "are"

    if kind == "exist":
        if rng.random() < 0.5:
            c = _pick(rng, present)
            what = f"{article(_cat(c).name)} {_cat(c).name}" if counts[c] == 1 else _cat(c).plural
            return (f"Is there {article(_cat(c).name)} {_cat(c).name} in the image?", "yes",
                    f"Yes, there {be(c)} {what}.")
        c = _pick(rng, absent)
        return (f"Is there {article(_cat(c).name)} {_cat(c).name} in the image?", "no",
                f"No, there are no {_cat(c).plural}.")
    if kind == "queryAttr":
        c = _pick(rng, present)
        return (f"What color {be(c)} {the(c)}?", _cat(c).color, f"{the(c).capitalize()} {be(c)} {_cat(c).color}.")
    if kind == "chooseAttr":
        c = _pick(rng, present)
        other = _pick(rng, [x for x in COLOURS if x != _cat(c).color])
        pair = [_cat(c).color, other] if rng.random() < 0.5 else [other, _cat(c).color]
        return (f"{be(c).capitalize()} {the(c)} {pair[0]} or {pair[1]}?", _cat(c).color,
                f"{the(c).capitalize()} {be(c)} {_cat(c).color}.")
    if kind == "logicAnd":
        if len(present) < 2:  # "yes" needs two present categories; keep the answers balanced
            return None
        a = _pick(rng, present)
        if rng.random() < 0.5:
            b = _pick(rng, [c for c in present if c != a])
            ans, full = "yes", f"Yes, there are both {article(_cat(a).name)} {_cat(a).name} and " \
                               f"{article(_cat(b).name)} {_cat(b).name}."
        else:
            b = _pick(rng, absent)
            ans, full = "no", f"No, there is {article(_cat(a).name)} {_cat(a).name} but no {_cat(b).name}."
        x, y = (a, b) if rng.random() < 0.5 else (b, a)
        return (f"Are there both {article(_cat(x).name)} {_cat(x).name} and {article(_cat(y).name)} "
                f"{_cat(y).name} in the picture?", ans, full)
    if kind == "positionChoose":
        singles = [o for o in scene["objects"] if counts[o["category_id"]] == 1]
        if len(singles) < 2:
            return None
        oa, ob = _pick(rng, singles, 2)
        rel = relation(oa, ob)
        a, b = _cat(oa["category_id"]).name, _cat(ob["category_id"]).name
        if rel in ("left", "right"):
            return (f"Is the {a} to the left or to the right of the {b}?", rel, f"The {a} is to the {rel} of the {b}.")
        return (f"Is the {a} above or below the {b}?", rel, f"The {a} is {rel} the {b}.")
    if kind == "queryObject":
        c = _pick(rng, present)
        noun = _cat(c).name if counts[c] == 1 else _cat(c).plural
        return (f"What is the {_cat(c).color} object?" if counts[c] == 1 else f"What are the {_cat(c).color} objects?",
                noun, f"The {_cat(c).color} {'object is a' if counts[c] == 1 else 'objects are'} {noun}.")
    raise ValueError(kind)


def write_gqa(w: Writer, cfg: WorldConfig, val: Split, per_image: int = 3) -> dict[str, int]:
    """gqa/testdev_balanced_questions.json (qid → question record as in GQA), gqa/llava_gqa_testdev_balanced.jsonl
    (LLaVA's question file) and gqa/images/<imageId>.png (copies of the val images, imageId = file stem)."""
    n_img = min(cfg.gqa_images, len(val.scenes))
    records: dict[str, Any] = {}
    llava = []
    qid = 20_000_000
    for i in range(n_img):
        scene, fn = val.scenes[i], val.file_names[i]
        image_id = fn.rsplit(".", 1)[0]
        w.copy(f"gqa/images/{image_id}.png", f"images/val/{fn}")
        rng = rng_for(cfg.seed, "gqa", i)
        made = 0
        for kind in _pick(rng, list(GQA_KINDS), len(GQA_KINDS)):
            if made == per_image:
                break
            q = gqa_question(kind, rng, scene)
            if q is None:
                continue
            question, answer, full = q
            qid += 1
            key = str(qid)
            records[key] = {
                "semantic": [], "entailed": [], "equivalent": [key], "question": question, "imageId": image_id,
                "isBalanced": True, "groups": {"global": None, "local": f"toy-{kind}"}, "answer": answer,
                "semanticStr": "", "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
                "types": dict(GQA_TYPES[kind]), "fullAnswer": full,
            }
            llava.append({"question_id": key, "image": f"{image_id}.png", "text": question + GQA_SUFFIX,
                          "category": "default"})
            made += 1
    w.json("gqa/testdev_balanced_questions.json", records)
    w.jsonl("gqa/llava_gqa_testdev_balanced.jsonl", llava)
    return {"images": n_img, "questions": len(records)}


# --------------------------------------------------------------------------------------------------- ScienceQA

SQA_IMAGE_KINDS = ("identify", "absent", "count", "color", "leftmost")


def sqa_image_problem(kind: str, rng: np.random.Generator, scene: dict[str, Any]) -> dict[str, Any] | None:
    present = scene_category_ids(scene)
    absent = [c for c in ALL_IDS if c not in present]
    counts = scene_counts(scene)
    names = lambda ids: [_cat(c).name for c in ids]  # noqa: E731
    n_distr = int(rng.integers(2, 4))
    if kind == "identify":
        c = _pick(rng, present)
        choices, ans = _shuffled_choices(rng, _cat(c).name, names(_pick(rng, absent, n_distr)))
        return dict(question="Which of these objects can you see in the picture?", choices=choices, answer=ans,
                    category="Object recognition", skill="Identify objects in a picture",
                    solution=f"Look at the picture. There is {article(_cat(c).name)} {_cat(c).name} in it.")
    if kind == "absent":
        if len(present) < 2:
            return None
        c = _pick(rng, absent)
        shown = _pick(rng, present, min(len(present), n_distr))
        choices, ans = _shuffled_choices(rng, _cat(c).name, names(shown))
        return dict(question="Which of these objects is NOT in the picture?", choices=choices, answer=ans,
                    category="Object recognition", skill="Identify objects in a picture",
                    solution=f"Look at the picture. There is no {_cat(c).name} in it.")
    if kind == "count":
        n = len(scene["objects"])
        others = [str(m) for m in range(1, 7) if m != n]
        choices, ans = _shuffled_choices(rng, str(n), _pick(rng, others, n_distr))
        return dict(question="How many objects are in the picture?", choices=choices, answer=ans,
                    category="Counting", skill="Count objects in a picture",
                    solution=f"Count the objects in the picture. There {'is' if n == 1 else 'are'} {n}.")
    if kind == "color":
        c = _pick(rng, present)
        choices, ans = _shuffled_choices(rng, _cat(c).color,
                                         _pick(rng, [x for x in COLOURS if x != _cat(c).color], n_distr))
        noun = _cat(c).name if counts[c] == 1 else _cat(c).plural
        verb = "is" if counts[c] == 1 else "are"
        return dict(question=f"What color {verb} the {noun} in the picture?", choices=choices, answer=ans,
                    category="Colors", skill="Identify colors in a picture",
                    solution=f"Look at the picture. The {noun} {verb} {_cat(c).color}.")
    if kind == "leftmost":
        col = min(o["col"] for o in scene["objects"])
        left = [o for o in scene["objects"] if o["col"] == col]
        if len(left) != 1 or len(present) < 2:
            return None
        c = left[0]["category_id"]
        distr = [x for x in present if x != c] + _pick(rng, absent, 2)
        choices, ans = _shuffled_choices(rng, _cat(c).name, names(distr[:n_distr]))
        return dict(question="Which object is farthest to the left in the picture?", choices=choices, answer=ans,
                    category="Spatial relations", skill="Locate objects in a picture",
                    solution=f"Look at the picture. The {_cat(c).name} is farthest to the left.")
    raise ValueError(kind)


def sqa_text_problem(rng: np.random.Generator) -> dict[str, Any]:
    c = _cat(_pick(rng, ALL_IDS))
    if rng.random() < 0.5:  # world knowledge (seen in the captions)
        choices, ans = _shuffled_choices(rng, c.color, _pick(rng, [x for x in COLOURS if x != c.color], 3))
        return dict(question=f"In the toy world, what color is every {c.name}?", choices=choices, answer=ans,
                    hint="", category="Colors", skill="Recall the colors of toy objects",
                    solution=f"Every {c.name} in the toy world is {c.color}.")
    shape = c.shape.replace("_", " ")
    others = [s.replace("_", " ") for s in SHAPES if s != c.shape]
    choices, ans = _shuffled_choices(rng, shape, _pick(rng, others, 3))
    return dict(question=f"What shape is a {c.name} in the toy world?", choices=choices, answer=ans,
                hint=f"In the toy world, {article(c.name)} {c.name} is drawn as {article(c.color)} {c.color} {shape}.",
                category="Reading", skill="Use a text to answer a question",
                solution=f"The text says that {article(c.name)} {c.name} is drawn as {article(shape)} {shape}.")


SQA_MINI = 100


def write_scienceqa(w: Writer, cfg: WorldConfig) -> dict[str, int]:
    """scienceqa/problems.json (pid → problem), scienceqa/pid_splits.json and
    scienceqa/images/<split>/<pid>/image.png, as in the ScienceQA release."""
    problems: dict[str, Any] = {}
    splits: dict[str, list[str]] = {}
    pid = 0
    for s, (split, n) in enumerate((("train", cfg.sqa_train), ("val", cfg.sqa_val), ("test", cfg.sqa_test))):
        splits[split] = []
        for i in range(n):
            rng = rng_for(cfg.seed, "sqa", s, i)
            pid += 1
            key = str(pid)
            if rng.random() < cfg.sqa_text_only_rate:
                p, image = sqa_text_problem(rng), None
            else:
                p = None
                while p is None:  # resample until a kind applies to the scene
                    scene = sample_scene(rng, cfg)
                    p = sqa_image_problem(_pick(rng, list(SQA_IMAGE_KINDS)), rng, scene)
                p["hint"] = ""
                image = "image.png"
                w.png(f"scienceqa/images/{split}/{key}/image.png", render_scene(scene))
            problems[key] = {
                "question": p["question"], "choices": p["choices"], "answer": p["answer"], "hint": p["hint"],
                "image": image, "task": "closed choice", "grade": "grade1" if image else "grade2",
                "subject": "natural science", "topic": "toy-world", "category": p["category"], "skill": p["skill"],
                "lecture": "", "solution": p["solution"], "split": split,
            }
            splits[split].append(key)
    splits["trainval"] = splits["train"] + splits["val"]
    for split in ("train", "val", "test"):
        splits[f"mini{split}"] = splits[split][:SQA_MINI]
    w.json("scienceqa/problems.json", problems)
    w.json("scienceqa/pid_splits.json", splits)
    return {k: len(splits[k]) for k in ("train", "val", "test")}


# --------------------------------------------------------------------------------------------------- Q-Bench

# distortion → level → parameter (blur: Gaussian radius px; noise: sigma in grey levels; brightness: factor)
QB_PARAMS = {
    "blur": {1: 0.8, 2: 1.4, 3: 2.2},
    "noise": {1: 8.0, 2: 20.0, 3: 40.0},
    "dark": {1: 0.6, 2: 0.35},
    "bright": {1: 1.6, 2: 2.4},
}


def qbench_truth(kind: str, distortion: str, level: int) -> str:
    """Correct answer of a question kind for an image with that distortion (``none`` has level 0)."""
    if kind == "clarity":
        if distortion in ("blur", "noise"):
            return "Medium" if level == 1 else "Low"
        return "High"
    if kind == "blurry":
        return "Yes" if distortion == "blur" else "No"
    if kind == "noisy":
        return "Yes" if distortion == "noise" else "No"
    if kind == "brightness":
        return {"dark": "Too dark", "bright": "Too bright"}.get(distortion, "Normal")
    if kind == "distortion":
        return {"blur": "Blur", "noise": "Noise", "dark": "Underexposure", "bright": "Overexposure"}[distortion]
    if kind == "edges":
        return "No" if distortion == "blur" else "Yes"
    raise ValueError(kind)


QB_QUESTIONS = {
    # kind: (question, candidates, type, concern)
    "clarity": ("How is the clarity of this image?", ["High", "Medium", "Low"], "How", "Other"),
    "blurry": ("Is this image blurry?", ["Yes", "No"], "Yes-or-No", "Distortion"),
    "noisy": ("Is there noticeable noise in this image?", ["Yes", "No"], "Yes-or-No", "Distortion"),
    "brightness": ("How is the brightness of this image?", ["Too dark", "Normal", "Too bright"], "How", "Other"),
    "distortion": ("What is the most severe distortion in this image?",
                   ["Blur", "Noise", "Underexposure", "Overexposure"], "What", "Distortion"),
    "edges": ("Are the edges of the {obj} in this image sharp?", ["Yes", "No"], "Yes-or-No", "In-context Distortion"),
}


def _qbench_distortion(kind: str, rng: np.random.Generator) -> tuple[str, int]:
    """A distortion chosen so that each question kind's answers come out balanced."""
    lv = lambda d: int(rng.integers(1, len(QB_PARAMS[d]) + 1))  # noqa: E731
    if kind in ("blurry", "noisy", "edges"):
        target = "noise" if kind == "noisy" else "blur"
        if rng.random() < 0.5:
            return target, lv(target)
        d = _pick(rng, ["none", "dark", "bright", "noise" if target == "blur" else "blur"])
        return (d, 0) if d == "none" else (d, lv(d))
    if kind == "clarity":
        answer = _pick(rng, ["High", "Medium", "Low"])
        d = _pick(rng, ["blur", "noise"])
        if answer == "High":
            d = _pick(rng, ["none", "none", "dark", "bright"])
            return (d, 0) if d == "none" else (d, 1)
        return d, 1 if answer == "Medium" else int(rng.integers(2, 4))
    if kind == "brightness":
        d = _pick(rng, ["dark", "none", "bright"])
        return (d, 0) if d == "none" else (d, lv(d))
    if kind == "distortion":
        d = _pick(rng, ["blur", "noise", "dark", "bright"])
        return d, lv(d) if d in ("dark", "bright") else int(rng.integers(2, 4))
    raise ValueError(kind)


def qbench_apply(im, distortion: str, level: int, seed: int):
    if distortion == "none":
        return corrupt(im, "none", 0.0)
    p = QB_PARAMS[distortion][level]
    if distortion in ("dark", "bright"):
        return corrupt(im, "brightness", p)
    return corrupt(im, distortion, p, seed=seed)


def write_qbench(w: Writer, cfg: WorldConfig) -> dict[str, int]:
    """qbench/llvisionqa_dev.json (Q-Bench A1 list of questions) + qbench/images/*.png (corrupted toy scenes) +
    qbench/toy_distortions.json (img_path → distortion, level, parameter, noise seed, clean scene) for checks."""
    items, meta = [], {}
    kinds = list(QB_QUESTIONS)
    for i in range(cfg.qbench):
        rng = rng_for(cfg.seed, "qbench", i)
        kind = kinds[i % len(kinds)] if i < len(kinds) else _pick(rng, kinds)
        scene = sample_scene(rng, cfg)
        distortion, level = _qbench_distortion(kind, rng)
        noise_seed = int(rng.integers(2**31))
        name = f"{i + 1:05d}.png"
        w.png(f"qbench/images/{name}", qbench_apply(render_scene(scene), distortion, level, noise_seed))
        question, candidates, qtype, concern = QB_QUESTIONS[kind]
        if "{obj}" in question:
            question = question.format(obj=_cat(_pick(rng, scene_category_ids(scene))).name)
        items.append({"img_path": name, "question": question, "candidates": list(candidates),
                      "correct_ans": qbench_truth(kind, distortion, level), "type": qtype, "concern": concern})
        meta[name] = {"distortion": distortion, "level": level,
                      "param": QB_PARAMS[distortion][level] if level else 0.0, "noise_seed": noise_seed,
                      "scene": scene}
    w.json("qbench/llvisionqa_dev.json", items, indent=1)
    w.json("qbench/toy_distortions.json", meta)
    return {"questions": len(items)}


#: images per category in the classification set (a constant, not a WorldConfig field: the set is for evaluation
#: only, and manifest.json — whose config the toy models' stamp hashes — does not list it, so adding it retrained
#: nothing)
CLASSIFICATION_PER_CLASS = 30


def write_classification(w: Writer, cfg: WorldConfig, per_class: int = CLASSIFICATION_PER_CLASS) -> dict[str, int]:
    """classification/val/<name>/<name>_NNN.png: single-object scenes, one folder per category (ImageNet-val
    layout) for zero-shot classification (SLUG's forget and retain accuracy), + classification/classes.json
    ``{folder: class name}``."""
    for c in CATEGORIES:
        for k in range(per_class):
            scene = sample_scene(rng_for(cfg.seed, "classify", c.id, k), cfg, categories=[c.id])
            w.png(f"classification/val/{c.name}/{c.name}_{k:03d}.png", render_scene(scene))
    w.json("classification/classes.json", {c.name: c.name for c in CATEGORIES}, indent=1)
    return {"classes": len(CATEGORIES), "images": len(CATEGORIES) * per_class}
