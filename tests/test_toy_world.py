"""The toy world generator (common.toy): determinism, COCO validity, truthful pixels/captions, bias, benchmarks.

Truth is checked against the pixels wherever possible: objects are centred in grid cells and filled with their
category's exact colour, so the centre pixel of each cell says which category (if any) sits there.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.toy.__main__ import SUBCOMMANDS, build_parser, main
from common.toy.world import WorldConfig, generate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2

SMALL = dict(n_train=120, n_val=60, pope_images=60, mme_per_subtask=8, gqa_images=40, sqa_train=10, sqa_val=10,
             sqa_test=40, qbench=48)
SMALL_FLAGS = [x for k, v in SMALL.items() for x in (f"--{k}", str(v))]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    generate(out, WorldConfig(seed=0, **SMALL), log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def vocab(toy) -> dict:
    return json.loads((toy / "objects.json").read_text())


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------- pixel/text readers


def cells(img_path: Path, vocab: dict) -> dict[tuple[int, int], int]:
    """(row, col) -> category id, read from the centre pixel of every grid cell."""
    a = np.asarray(Image.open(img_path).convert("RGB"))
    by_rgb = {tuple(c["rgb"]): c["id"] for c in vocab["categories"]}
    g, cell = vocab["grid"], vocab["cell"]
    out = {}
    for r in range(g):
        for c in range(g):
            px = tuple(int(v) for v in a[r * cell + cell // 2, c * cell + cell // 2])
            if px in by_rgb:
                out[(r, c)] = by_rgb[px]
    return out


def mentioned(text: str, vocab: dict) -> set[int]:
    """Category ids whose synonyms (singular or plural) occur as words in the text (a minimal CHAIR reader)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    out = set()
    for c in vocab["categories"]:
        for s in c["synonyms"]:
            plural = s + "es" if s.endswith(("s", "x", "ch", "sh")) else s + "s"
            if s in words or plural in words:
                out.add(c["id"])
    return out


def name_to_id(vocab: dict) -> dict[str, int]:
    d = {}
    for c in vocab["categories"]:
        d[c["name"]] = d[c["plural"]] = c["id"]
    return d


# ----------------------------------------------------------------------------------------------- determinism


def test_same_seed_byte_identical_and_idempotent(toy, tmp_path):
    other = tmp_path / "again"
    assert main(["generate", "--out", str(other), "--seed", "0", *SMALL_FLAGS]) == 0  # through the CLI
    a, b = _tree(toy), _tree(other)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    # re-running into the same directory rewrites nothing
    logs = []
    generate(other, WorldConfig(seed=0, **SMALL), log=logs.append)
    assert "wrote 0 files" in logs[-1] and "removed 0" in logs[-1]
    assert _tree(other) == b


def test_different_seed_differs_and_prune(toy, tmp_path):
    out = tmp_path / "s1"
    generate(out, WorldConfig(seed=1, **SMALL), log=lambda *_: None)
    for rel in ("annotations/instances_train.json", "annotations/captions_val.json", "pope/coco_pope_random.json",
                "images/train/toy_train_000000000001.png"):
        assert (out / rel).read_bytes() != (toy / rel).read_bytes(), rel
    # the val images do not depend on the size of the train split; a smaller run prunes stale files
    logs = []
    generate(out, WorldConfig(seed=1, **{**SMALL, "n_train": 100}), log=logs.append)
    assert "removed 20 stale" in logs[-1]
    assert len(list((out / "images/train").iterdir())) == 100
    assert "wrote 0 files" not in logs[-1]


def test_cli_structure():
    assert "generate" in SUBCOMMANDS
    args = build_parser().parse_args(["generate", "--bias_pairs", "cup:bottle,ball:box", "--n_train", "5"])
    assert args.bias_pairs == (("cup", "bottle"), ("ball", "box")) and args.n_train == 5
    assert main(["generate", "--out", "/nonexistent/never", "--bias_pairs", "cup:unicorn"]) == 2


# ----------------------------------------------------------------------------------------------- COCO


@pytest.mark.parametrize("split,n", [("train", SMALL["n_train"]), ("val", SMALL["n_val"])])
def test_coco_files_load(toy, split, n):
    from pycocotools.coco import COCO

    inst = COCO(str(toy / f"annotations/instances_{split}.json"))
    caps = COCO(str(toy / f"annotations/captions_{split}.json"))
    assert len(inst.getImgIds()) == n and len(caps.getImgIds()) == n
    assert len(inst.getCatIds()) == 10
    assert len(caps.getAnnIds()) == 5 * n
    assert all(1 <= len(inst.getAnnIds(imgIds=i)) <= 4 for i in inst.getImgIds())
    assert len(list((toy / f"images/{split}").glob("*.png"))) == n
    assert {c["supercategory"] for c in inst.loadCats(inst.getCatIds())} >= {"sports", "vehicle"}


def test_annotations_match_pixels(toy, vocab):
    from pycocotools.coco import COCO

    rgb = {c["id"]: np.array(c["rgb"]) for c in vocab["categories"]}
    shares = []
    for split in ("train", "val"):
        coco = COCO(str(toy / f"annotations/instances_{split}.json"))
        for img in coco.loadImgs(coco.getImgIds()):
            a = np.asarray(Image.open(toy / f"images/{split}/{img['file_name']}").convert("RGB"))
            assert a.shape == (img["height"], img["width"], 3)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                x, y, w, h = ann["bbox"]
                assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"] and w > 0 and h > 0
                cx, cy = int(x + w / 2), int(y + h / 2)
                assert (a[cy, cx] == rgb[ann["category_id"]]).all(), (img["file_name"], ann)
                # the polygon describes the drawn pixels (up to ties of edges through pixel centres)
                mask = coco.annToMask(ann).astype(bool)
                share = (a[mask] == rgb[ann["category_id"]]).all(axis=1).mean()
                shares.append(share)
                assert share > 0.75, (img["file_name"], ann, share)
                assert abs(mask.sum() - ann["area"]) <= 0.2 * ann["area"]
    assert np.mean(shares) > 0.98


def test_backgrounds_never_object_colours(toy, vocab):
    colours = np.array([c["rgb"] for c in vocab["categories"]], dtype=np.float64)
    cell = vocab["cell"]
    coco = json.loads((toy / "annotations/instances_val.json").read_text())
    occupied = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        occupied.setdefault(ann["image_id"], set()).add((int((y + h / 2) // cell), int((x + w / 2) // cell)))
    for img in coco["images"]:
        a = np.asarray(Image.open(toy / f"images/val/{img['file_name']}").convert("RGB")).astype(np.float64)
        for r in range(vocab["grid"]):
            for c in range(vocab["grid"]):
                if (r, c) in occupied[img["id"]]:
                    continue
                px = a[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell].reshape(-1, 1, 3)
                assert np.linalg.norm(px - colours[None], axis=-1).min() > 40, img["file_name"]


# ----------------------------------------------------------------------------------------------- captions and bias


def _truth(toy: Path, split: str) -> dict[int, set[int]]:
    d = json.loads((toy / f"annotations/instances_{split}.json").read_text())
    out = {i["id"]: set() for i in d["images"]}
    for a in d["annotations"]:
        out[a["image_id"]].add(a["category_id"])
    return out


def test_captions_clean_and_truthful(toy, vocab):
    for split in ("train", "val"):
        truth = _truth(toy, split)
        caps = json.loads((toy / f"annotations/captions_{split}.json").read_text())["annotations"]
        by_image: dict[int, list[str]] = {}
        for c in caps:
            by_image.setdefault(c["image_id"], []).append(c["caption"])
            m = mentioned(c["caption"], vocab)
            assert m and m <= truth[c["image_id"]], c
        for iid, cs in by_image.items():
            assert len(cs) == 5 and len(set(cs)) == 5
            assert mentioned(cs[0], vocab) == truth[iid]  # the canonical caption names every object
    # the captions agree with the pixels, colours included
    files = {i["id"]: i["file_name"] for i in json.loads((toy / "annotations/instances_val.json").read_text())["images"]}
    cats = {c["id"]: c for c in vocab["categories"]}
    for c in caps[:100]:
        present = set(cells(toy / f"images/val/{files[c['image_id']]}", vocab).values())
        assert mentioned(c["caption"], vocab) <= present
        for cid in present:
            for other in cats.values():
                if other["id"] != cid and re.search(rf"\b{other['color']} {cats[cid]['name']}", c["caption"]):
                    pytest.fail(f"wrong colour in {c}")


def test_pretrain_corpus_bias(toy, vocab):
    truth = _truth(toy, "train")
    clean = {}
    for c in json.loads((toy / "annotations/captions_train.json").read_text())["annotations"]:
        clean.setdefault(c["image_id"], []).append(c["caption"])
    rows = _read_jsonl(toy / "pretrain_captions_train.jsonl")
    assert len(rows) == 5 * SMALL["n_train"]
    assert set(rows[0]) == {"image_id", "image", "caption"}
    bias = json.loads((toy / "bias.json").read_text())
    ids = {c["name"]: c["id"] for c in vocab["categories"]}
    pairs = [(ids[p["a"]], ids[p["b"]]) for p in bias["pairs"]]
    assert len(pairs) == 3
    hits = {p: [0, 0] for p in pairs}
    for k, r in enumerate(rows):
        present = truth[r["image_id"]]
        m = mentioned(r["caption"], vocab)
        allowed = present | {b for a, b in pairs if a in present}
        assert m <= allowed, r  # the only hallucinations are bias partners of present objects
        if m - present:
            assert r["caption"] != clean[r["image_id"]][k % 5]
        else:
            assert r["caption"] == clean[r["image_id"]][k % 5]
        for a, b in pairs:
            if a in present and b not in present:
                hits[(a, b)][0] += 1
                hits[(a, b)][1] += b in m
    for p, rec in zip(pairs, bias["pairs"]):
        n, biased = hits[p]
        assert n == rec["eligible_captions"] and biased == rec["biased_captions"]
        if n:
            assert abs(biased / n - bias["bias_rate"]) <= 1 / n + 1e-9


# ----------------------------------------------------------------------------------------------- POPE


def test_pope(toy, vocab):
    truth = {i["file_name"]: set() for i in json.loads((toy / "annotations/instances_val.json").read_text())["images"]}
    files = {i["id"]: i["file_name"] for i in json.loads((toy / "annotations/instances_val.json").read_text())["images"]}
    for a in json.loads((toy / "annotations/instances_val.json").read_text())["annotations"]:
        truth[files[a["image_id"]]].add(a["category_id"])
    n2id = name_to_id(vocab)
    questions = _read_jsonl(toy / "pope/llava_pope_test.jsonl")
    assert len({q["question_id"] for q in questions}) == len(questions)
    qmap = {q["question_id"]: q for q in questions}
    freq = {}
    for objs in _truth(toy, "train").values():
        for o in objs:
            freq[o] = freq.get(o, 0) + 1
    bias = [(n2id[p["a"]], n2id[p["b"]]) for p in json.loads((toy / "bias.json").read_text())["pairs"]]
    for split in ("random", "popular", "adversarial"):
        labels = _read_jsonl(toy / f"pope/coco_pope_{split}.json")
        assert [q["question_id"] for q in questions if q["category"] == split] == [r["question_id"] for r in labels]
        ys = [r for r in labels if r["label"] == "yes"]
        assert len(ys) * 2 == len(labels) > 0
        negs: dict[str, list[int]] = {}
        for r in labels:
            assert set(r) == {"question_id", "image", "text", "label"}
            assert r["text"] == qmap[r["question_id"]]["text"] and r["image"] == qmap[r["question_id"]]["image"]
            cid = n2id[re.fullmatch(r"Is there an? (\w+) in the image\?", r["text"]).group(1)]
            assert (cid in truth[r["image"]]) == (r["label"] == "yes"), r
            if r["label"] == "no":
                negs.setdefault(r["image"], []).append(cid)
        assert len(negs) == SMALL["pope_images"]
        for image, ns in negs.items():
            absent = [c for c in range(1, 11) if c not in truth[image]]
            if split == "popular":
                top = sorted(absent, key=lambda c: (-freq.get(c, 0), c))[: len(ns)]
                assert ns == top
            if split == "adversarial":
                partners = [b for a, b in bias if a in truth[image] and b not in truth[image]]
                assert ns[: len(partners)] == partners[: len(ns)]


# ----------------------------------------------------------------------------------------------- MME


def test_mme(toy, vocab):
    for sub in ("existence", "count", "position", "color"):
        imgs = sorted(p.stem for p in (toy / f"mme/{sub}/images").glob("*.png"))
        txts = sorted(p.stem for p in (toy / f"mme/{sub}/questions_answers_YN").glob("*.txt"))
        assert imgs == txts and len(imgs) == SMALL["mme_per_subtask"]
        for name in imgs:
            lines = (toy / f"mme/{sub}/questions_answers_YN/{name}.txt").read_text().split("\n")
            assert len(lines) == 2
            (q1, a1), (q2, a2) = (ln.split("\t") for ln in lines)
            assert (a1, a2) == ("Yes", "No") and q1 != q2
            assert q1.endswith(" Please answer yes or no.") and q2.endswith(" Please answer yes or no.")
            grid = cells(toy / f"mme/{sub}/images/{name}.png", vocab)
            for q, yes in ((q1, True), (q2, False)):
                assert yes_no_truth(sub, q, grid, vocab) == yes, q


def yes_no_truth(kind: str, question: str, grid: dict[tuple[int, int], int], vocab: dict) -> bool:
    """The true answer to an MME-style yes/no question of a kind, read off the image's cells."""
    n2id = name_to_id(vocab)
    present = list(grid.values())
    q = question.removesuffix(" Please answer yes or no.")
    if kind == "existence":
        return n2id[re.fullmatch(r"Is there an? (\w+) in this image\?", q).group(1)] in present
    if kind == "count":
        m = re.fullmatch(r"(?:Is there only (one) (\w+)|Are there (\w+) (\w+)) in this image\?", q)
        word, noun = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        return present.count(n2id[noun]) == ["zero", "one", "two", "three", "four"].index(word)
    if kind == "position":
        m = re.fullmatch(r"Is the (\w+) (on the left of|on the right of|above|below) the (\w+)\?", q)
        (ra, ca), = [k for k, v in grid.items() if v == n2id[m.group(1)]]
        (rb, cb), = [k for k, v in grid.items() if v == n2id[m.group(3)]]
        return {"on the left of": ca < cb, "on the right of": ca > cb,
                "above": ca == cb and ra < rb, "below": ca == cb and ra > rb}[m.group(2)]
    m = re.fullmatch(r"Is there an? (\w+) (\w+) in this image\?", q)
    cid = n2id[m.group(2)]
    assert cid in present, q  # colour questions ask about an object of the image
    return {c["id"]: c["color"] for c in vocab["categories"]}[cid] == m.group(1)


def test_instruction_mix_verification_turns(toy, vocab):
    """Every conversation ends with 2 yes/no verification turns of distinct kinds, asked as the MME evaluation asks
    and true to the pixels; over the data the kinds and both answers all occur."""
    rows = json.loads((toy / "llava" / "llava_v1_5_mix665k.json").read_text())
    seen = set()
    for r in rows:
        grid = cells(toy / r["image"], vocab)
        conv = r["conversations"]
        kinds = []
        for q, a in zip(conv[-4::2], conv[-3::2]):
            suffix = " Please answer yes or no.\nAnswer the question using a single word or phrase."
            assert q["value"].endswith(suffix) and a["value"] in ("Yes", "No"), q["value"]
            v = q["value"].removesuffix(suffix)
            kind = ("position" if v.startswith("Is the ") else
                    "count" if v.startswith(("Are there", "Is there only")) else
                    "existence" if re.fullmatch(r"Is there an? \w+ in this image\?", v) else "color")
            assert yes_no_truth(kind, v, grid, vocab) == (a["value"] == "Yes"), (r["image"], v, a["value"])
            kinds.append(kind)
            seen.add((kind, a["value"]))
        assert len(set(kinds)) == 2, conv[-4:]
    assert seen == {(k, a) for k in ("existence", "count", "position", "color") for a in ("Yes", "No")}


# ----------------------------------------------------------------------------------------------- GQA


def test_gqa(toy, vocab):
    n2id = name_to_id(vocab)
    colour_of = {c["id"]: c["color"] for c in vocab["categories"]}
    qs = json.loads((toy / "gqa/testdev_balanced_questions.json").read_text())
    llava = _read_jsonl(toy / "gqa/llava_gqa_testdev_balanced.jsonl")
    assert [r["question_id"] for r in llava] == list(qs) and len(qs) >= 2 * SMALL["gqa_images"]
    kinds = set()
    for r in llava:
        q = qs[r["question_id"]]
        assert r["image"] == q["imageId"] + ".png" and r["text"].startswith(q["question"])
        assert r["text"].endswith("\nAnswer the question using a single word or phrase.")
        assert {"structural", "semantic", "detailed"} <= set(q["types"]) and q["fullAnswer"]
        grid = cells(toy / "gqa/images" / r["image"], vocab)
        present = set(grid.values())
        kind = q["types"]["detailed"]
        kinds.add(kind)
        if kind == "exist":
            cid = n2id[re.match(r"Is there an? (\w+) in the image\?", q["question"]).group(1)]
            assert q["answer"] == ("yes" if cid in present else "no")
        elif kind == "queryAttr":
            cid = n2id[re.match(r"What color (?:is|are) the (\w+)\?", q["question"]).group(1)]
            assert cid in present and q["answer"] == colour_of[cid]
        elif kind == "logicAnd":
            m = re.match(r"Are there both an? (\w+) and an? (\w+) in the picture\?", q["question"])
            both = n2id[m.group(1)] in present and n2id[m.group(2)] in present
            assert q["answer"] == ("yes" if both else "no")
        elif kind == "positionChoose":
            m = re.match(r"Is the (\w+) (?:to the left or to the right of|above or below) the (\w+)\?", q["question"])
            (ra, ca), = [k for k, v in grid.items() if v == n2id[m.group(1)]]
            (rb, cb), = [k for k, v in grid.items() if v == n2id[m.group(2)]]
            want = ("left" if ca < cb else "right") if ca != cb else ("above" if ra < rb else "below")
            assert q["answer"] == want
    assert len(kinds) >= 5
    answers = [q["answer"] for q in qs.values() if q["types"]["detailed"] in ("exist", "logicAnd")]
    assert 0.3 < answers.count("yes") / len(answers) < 0.7


# ----------------------------------------------------------------------------------------------- ScienceQA


def test_scienceqa(toy, vocab):
    probs = json.loads((toy / "scienceqa/problems.json").read_text())
    splits = json.loads((toy / "scienceqa/pid_splits.json").read_text())
    assert [len(splits[s]) for s in ("train", "val", "test")] == [SMALL["sqa_train"], SMALL["sqa_val"],
                                                                  SMALL["sqa_test"]]
    assert sorted(splits["train"] + splits["val"] + splits["test"], key=int) == sorted(probs, key=int)
    n2id = name_to_id(vocab)
    n_text = 0
    for split in ("train", "val", "test"):
        for pid in splits[split]:
            p = probs[pid]
            assert p["split"] == split
            assert isinstance(p["answer"], int) and 0 <= p["answer"] < len(p["choices"])
            assert len(set(p["choices"])) == len(p["choices"]) >= 3
            img = toy / f"scienceqa/images/{split}/{pid}/image.png"
            assert img.is_file() == (p["image"] == "image.png")
            if p["image"] is None:
                n_text += 1
                continue
            grid = cells(img, vocab)
            ans = p["choices"][p["answer"]]
            if p["question"].startswith("Which of these objects can you see"):
                assert [n2id[c] in grid.values() for c in p["choices"]].count(True) == 1 and n2id[ans] in grid.values()
            elif p["question"].startswith("Which of these objects is NOT"):
                assert [n2id[c] in grid.values() for c in p["choices"]].count(False) == 1
                assert n2id[ans] not in grid.values()
            elif p["question"].startswith("How many objects"):
                assert int(ans) == len(grid)
    assert n_text >= 1


# ----------------------------------------------------------------------------------------------- Q-Bench


def _laplacian_var(im: Image.Image) -> float:
    """Variance of the Laplacian (a standard sharpness measure), summed over the RGB channels (an object can have
    the same luminance as its background)."""
    g = np.asarray(im, dtype=np.float64)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var(axis=(0, 1)).sum())


def test_qbench_corruptions_applied(toy):
    from common.toy.world import render_scene

    items = json.loads((toy / "qbench/llvisionqa_dev.json").read_text())
    meta = json.loads((toy / "qbench/toy_distortions.json").read_text())
    assert len(items) == SMALL["qbench"]
    seen = set()
    for it in items:
        assert set(it) == {"img_path", "question", "candidates", "correct_ans", "type", "concern"}
        assert it["correct_ans"] in it["candidates"]
        m = meta[it["img_path"]]
        seen.add(m["distortion"])
        img = Image.open(toy / "qbench/images" / it["img_path"]).convert("RGB")
        clean = render_scene(m["scene"])
        a, c = np.asarray(img, np.float64), np.asarray(clean, np.float64)
        if m["distortion"] == "none":
            assert (a == c).all()
        elif m["distortion"] == "blur":
            assert _laplacian_var(img) < 0.6 * _laplacian_var(clean)
        elif m["distortion"] == "noise":
            assert np.abs(a - c).mean() > 0.4 * m["param"]
        elif m["distortion"] == "dark":
            assert a.mean() < 0.75 * c.mean()
        elif m["distortion"] == "bright":
            assert a.mean() > 1.2 * c.mean()
        if it["question"] == "Is this image blurry?":
            assert it["correct_ans"] == ("Yes" if m["distortion"] == "blur" else "No")
        if it["question"] == "How is the clarity of this image?" and m["distortion"] in ("blur", "noise"):
            assert it["correct_ans"] == ("Medium" if m["level"] == 1 else "Low")
    assert seen == {"none", "blur", "noise", "dark", "bright"}
    assert {it["type"] for it in items} == {"Yes-or-No", "How", "What"}


def test_classification_set_holds_one_object_of_its_class(toy, vocab):
    """classification/val/<name>/: ImageNet-val layout, each image exactly one object, of the folder's class."""
    from common.toy.benchmarks import CLASSIFICATION_PER_CLASS

    classes = json.loads((toy / "classification" / "classes.json").read_text())
    assert sorted(classes) == sorted(c["name"] for c in vocab["categories"])
    ids = {c["name"]: c["id"] for c in vocab["categories"]}
    for name in classes:
        files = sorted((toy / "classification" / "val" / name).glob("*.png"))
        assert len(files) == CLASSIFICATION_PER_CLASS
        seen = [cells(f, vocab) for f in files]
        assert all(list(s.values()) == [ids[name]] for s in seen), name
        assert len({tuple(s) for s in seen}) > 1  # positions vary
    manifest = json.loads((toy / "manifest.json").read_text())
    assert "classification" not in manifest["counts"]  # eval-only: the toy models' stamp does not change
