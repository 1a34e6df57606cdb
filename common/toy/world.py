"""The toy world: a vocabulary of coloured shapes on a patch-aligned grid, scenes, rendering and captions.

Everything here is pure and deterministic: a scene is a small JSON-able dict, ``render_scene`` turns it into
pixels, and every random choice comes from a ``numpy.random.Generator`` seeded by ``(seed, stream, index)``, so
the i-th image of a split does not depend on how many images the other splits hold.

``generate(out_dir, cfg)`` is the entry point that writes the whole dataset (see ``dataset/README.md``); the
writers live in ``formats.py`` (COCO, captions, vocabulary) and ``benchmarks.py`` (POPE, MME, GQA, ScienceQA,
Q-Bench).

Why a grid: objects placed freely are not learnt by a tiny model in minutes, objects centred in cells that line up
with the vision patches are (``notes/feasibility.md`` §6). With the defaults (64 px, 4×4 grid) a cell is 16 px,
exactly one patch of a patch-16 ViT (or of a patch-8 ViT on the image resized to 32 px).
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageFilter

# --------------------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Category:
    id: int
    name: str  # canonical noun (first synonym)
    synonyms: tuple[str, ...]  # all surface nouns, canonical first (CHAIR synonyms.txt line)
    color: str  # colour word used in captions and questions
    rgb: tuple[int, int, int]  # exact fill colour of every pixel of the object
    shape: str  # one of SHAPES
    supercategory: str

    @property
    def plural(self) -> str:
        return pluralize(self.name)


def pluralize(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


# Each category has a unique colour *and* a unique shape, both far apart, so that a tiny vision tower separates
# them within seconds; colours are saturated (or pure white) and backgrounds never are (see _sample_background).
# No synonym collides with another category's, with a colour word, or with a word of the caption templates.
CATEGORIES: tuple[Category, ...] = (
    Category(1, "ball", ("ball", "sphere", "orb"), "red", (220, 30, 30), "circle", "sports"),
    Category(2, "box", ("box", "crate", "carton"), "blue", (30, 70, 230), "square", "container"),
    Category(3, "tent", ("tent", "teepee", "wigwam"), "green", (30, 170, 50), "triangle", "outdoor"),
    Category(4, "kite", ("kite",), "yellow", (245, 215, 20), "diamond", "sports"),
    Category(5, "flower", ("flower", "blossom", "daisy"), "pink", (240, 100, 190), "star", "outdoor"),
    Category(6, "cup", ("cup", "mug", "teacup"), "orange", (250, 140, 0), "trapezoid", "kitchen"),
    Category(7, "bottle", ("bottle", "flask", "vial"), "purple", (140, 40, 190), "bar", "kitchen"),
    Category(8, "boat", ("boat", "ship", "canoe"), "brown", (140, 80, 20), "half_disc", "vehicle"),
    Category(9, "clock", ("clock", "timepiece"), "cyan", (20, 200, 220), "hexagon", "indoor"),
    Category(10, "plane", ("plane", "airplane", "jet"), "white", (245, 245, 245), "cross", "vehicle"),
)
SHAPES = ("circle", "square", "triangle", "diamond", "star", "trapezoid", "bar", "half_disc", "hexagon", "cross")

# A→B: in the pretraining caption corpus, captions of images holding A but not B also mention B (web-data style
# co-occurrence bias); in the truth, B also appears beside A a bit more often than chance (``cooccur_rate``).
DEFAULT_BIAS_PAIRS: tuple[tuple[str, str], ...] = (("cup", "bottle"), ("ball", "kite"), ("boat", "plane"))

# Frequency prior over categories (Zipf-like), so that POPE's "popular" negatives differ from "random" ones.
ZIPF_EXPONENT = 0.6

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def category_by_name(name: str, categories: Sequence[Category] = CATEGORIES) -> Category:
    for c in categories:
        if c.name == name:
            return c
    raise KeyError(f"unknown toy category {name!r}; known: {[c.name for c in categories]}")


def category_weights(categories: Sequence[Category] = CATEGORIES) -> np.ndarray:
    w = np.array([1.0 / (i + 1) ** ZIPF_EXPONENT for i in range(len(categories))])
    return w / w.sum()


# --------------------------------------------------------------------------------------------------- config


@dataclass
class WorldConfig:
    seed: int = 0
    n_train: int = 3000
    n_val: int = 300
    image_size: int = 64
    grid: int = 4
    min_objects: int = 1
    max_objects: int = 4
    duplicate_rate: float = 0.15  # chance that an extra object repeats a category already in the scene
    cooccur_rate: float = 0.25  # chance that B is (truly) added to a scene holding A, for each bias pair A→B
    bias_rate: float = 0.65  # share of pretrain captions of A-and-not-B images that also mention B
    bias_pairs: tuple[tuple[str, str], ...] = DEFAULT_BIAS_PAIRS
    captions_per_image: int = 5
    # benchmarks
    pope_images: int = 500  # capped at n_val
    pope_per_image: int = 3  # positives per image (as POPE); the same number of negatives
    mme_per_subtask: int = 30
    gqa_images: int = 300  # capped at n_val
    sqa_train: int = 200
    sqa_val: int = 100
    sqa_test: int = 300
    sqa_text_only_rate: float = 0.1
    qbench: int = 300

    def __post_init__(self) -> None:
        self.bias_pairs = tuple(tuple(p) for p in self.bias_pairs)  # type: ignore[assignment]
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} must be a multiple of grid {self.grid}")
        if not 1 <= self.min_objects <= self.max_objects <= min(self.grid * self.grid, 99):
            raise ValueError("need 1 <= min_objects <= max_objects <= min(grid*grid, 99)")
        if not 1 <= self.captions_per_image <= 10:  # caption ids are image_id*10 + j
            raise ValueError("captions_per_image must lie in 1..10")
        names = {c.name for c in CATEGORIES}
        for a, b in self.bias_pairs:
            if a not in names or b not in names or a == b:
                raise ValueError(f"bad bias pair {a}->{b}; categories: {sorted(names)}")
        for name in ("bias_rate", "cooccur_rate", "duplicate_rate", "sqa_text_only_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")

    @property
    def cell(self) -> int:
        return self.image_size // self.grid

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bias_pairs"] = [list(p) for p in self.bias_pairs]
        return d


# Streams of the random generator: one per purpose, so that adding images to one never shifts another.
STREAMS = {
    "train": 1, "val": 2, "bias": 3, "pope": 4, "mme": 5, "gqa": 6, "sqa": 7, "qbench": 8, "captions": 9, "mix": 10,
    "verify": 11, "classify": 12,
}


def rng_for(seed: int, stream: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), STREAMS[stream], *[int(i) for i in index]])


# --------------------------------------------------------------------------------------------------- scenes
# A scene is a JSON-able dict:
#   {"size": 64, "grid": 4,
#    "background": {"kind": "plain"|"gradient"|"noise", "rgb": [r,g,b], "rgb2": [r,g,b], "axis": 0|1,
#                   "noise": amplitude, "noise_seed": int, "tone": "dark"|"grey"|"light"},
#    "objects": [{"category_id": k, "row": r, "col": c, "radius": px}, ...]}


def sample_background(rng: np.random.Generator) -> dict[str, Any]:
    """Low-saturation, mid/dark backgrounds: never the colour of an object (all saturated or pure white)."""

    def colour() -> list[int]:
        h, s, v = rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.12, 0.68)
        return [int(round(255 * x)) for x in colorsys.hsv_to_rgb(h, s, v)]

    kind = ("plain", "gradient", "noise")[int(rng.integers(3))]
    rgb, rgb2 = colour(), colour()
    bg = {
        "kind": kind,
        "rgb": rgb,
        "rgb2": rgb2 if kind == "gradient" else rgb,
        "axis": int(rng.integers(2)),
        "noise": int(rng.integers(4, 13)) if kind == "noise" else 0,
        "noise_seed": int(rng.integers(2**31)),
    }
    mean_v = (max(rgb) + max(bg["rgb2"])) / 2 / 255
    bg["tone"] = "dark" if mean_v < 0.33 else ("light" if mean_v > 0.52 else "grey")
    return bg


def sample_scene(
    rng: np.random.Generator,
    cfg: WorldConfig,
    *,
    n_objects: int | None = None,
    categories: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A random scene; ``categories`` (ids, repeats allowed) fixes the objects, ``n_objects`` only their count."""
    g = cfg.grid
    ids = [c.id for c in CATEGORIES]
    weights = category_weights()
    if categories is None:
        if n_objects is None:
            n_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cats: list[int] = []
        while len(cats) < n_objects:
            if cats and rng.random() < cfg.duplicate_rate:
                cats.append(cats[int(rng.integers(len(cats)))])
                continue
            free = [i for i in ids if i not in cats]
            w = np.array([weights[i - 1] for i in free])
            cats.append(int(rng.choice(free, p=w / w.sum())))
        # true co-occurrence: B appears beside A more often than chance
        for a, b in cfg.bias_pairs:
            ia, ib = category_by_name(a).id, category_by_name(b).id
            if ia in cats and ib not in cats and rng.random() < cfg.cooccur_rate:
                if len(cats) < cfg.max_objects:
                    cats.append(ib)
                else:  # replace an object that is neither A nor another bias partner
                    j = [k for k, c in enumerate(cats) if c != ia]
                    if j:
                        cats[j[int(rng.integers(len(j)))]] = ib
        categories = cats
    categories = list(categories)
    if len(categories) > g * g:
        raise ValueError("more objects than grid cells")
    cells = rng.permutation(g * g)[: len(categories)]
    objects = []
    for cid, cell in zip(categories, cells):
        radius = round(float(rng.uniform(0.32, 0.44)) * cfg.cell, 2)
        objects.append({"category_id": int(cid), "row": int(cell // g), "col": int(cell % g), "radius": radius})
    objects.sort(key=lambda o: (o["row"], o["col"]))
    return {"size": cfg.image_size, "grid": g, "background": sample_background(rng), "objects": objects}


# Coordinates are COCO's: pixel (i, j) covers [i, i+1) × [j, j+1) and is filled when its centre (i+.5, j+.5) lies
# inside the object's polygon. That is the rasterisation of pycocotools' annToMask up to ties, so the annotation
# polygons describe the drawn pixels (and vice versa).


def object_center(obj: dict[str, Any], scene: dict[str, Any]) -> tuple[float, float]:
    """Centre of the object's cell (COCO coordinates)."""
    cell = scene["size"] // scene["grid"]
    return obj["col"] * cell + cell / 2, obj["row"] * cell + cell / 2


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices (COCO coordinates) of a filled shape centred on (cx, cy); every shape covers its centre."""

    def ring(n: int, rad: float, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
        return [(cx + rad * math.cos(phase + 2 * math.pi * k / n), cy + rad * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]

    if shape == "circle":
        return ring(24, r)
    if shape == "square":
        s = 0.82 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.75 * r), (cx - r, cy + 0.75 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "trapezoid":  # a cup: wide rim on top
        return [(cx - r, cy - 0.8 * r), (cx + r, cy - 0.8 * r), (cx + 0.55 * r, cy + 0.8 * r),
                (cx - 0.55 * r, cy + 0.8 * r)]
    if shape == "bar":  # a bottle: tall and thin
        w = 0.4 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy + r), (cx - w, cy + r)]
    if shape == "half_disc":  # a hull: flat deck on top, round keel below
        top = cy - 0.35 * r
        return [(cx + r * math.cos(math.pi * k / 12), top + 1.3 * r * math.sin(math.pi * k / 12)) for k in range(13)]
    if shape == "hexagon":
        return ring(6, r, phase=0.0)
    if shape == "cross":
        w = 0.3 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}")


def object_polygon(obj: dict[str, Any], scene: dict[str, Any]) -> list[tuple[float, float]]:
    """The object's polygon, rounded to 2 decimals: the same numbers are drawn and written to the annotations."""
    cx, cy = object_center(obj, scene)
    poly = shape_polygon(CATEGORIES[obj["category_id"] - 1].shape, cx, cy, obj["radius"])
    return [(round(x, 2), round(y, 2)) for x, y in poly]


def render_background(bg: dict[str, Any], size: int) -> np.ndarray:
    a, b = np.array(bg["rgb"], np.float32), np.array(bg["rgb2"], np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    t = t[None, :, None] if bg["axis"] == 1 else t[:, None, None]
    img = np.broadcast_to(a + (b - a) * t, (size, size, 3)).astype(np.float32)
    if bg["noise"]:
        noise = np.random.default_rng(bg["noise_seed"]).uniform(-bg["noise"], bg["noise"], (size, size, 1))
        img = img + noise.astype(np.float32)  # grey noise: keeps the saturation low
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def rasterize(poly: Sequence[tuple[float, float]], size: int) -> np.ndarray:
    """Boolean size×size mask of the pixels whose centres lie inside the polygon (even-odd rule)."""
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    x0, x1 = max(0, int(math.floor(min(xs)))), min(size, int(math.ceil(max(xs))) + 1)
    y0, y1 = max(0, int(math.floor(min(ys)))), min(size, int(math.ceil(max(ys))) + 1)
    py, px = np.mgrid[y0:y1, x0:x1] + 0.5
    inside = np.zeros(px.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(poly, list(poly[1:]) + [poly[0]]):
        if ay == by:
            continue
        crosses = (ay > py) != (by > py)
        inside ^= crosses & (px < ax + (py - ay) * (bx - ax) / (by - ay))
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = inside
    return mask


def object_mask(obj: dict[str, Any], scene: dict[str, Any]) -> np.ndarray:
    return rasterize(object_polygon(obj, scene), scene["size"])


def render_scene(scene: dict[str, Any]) -> Image.Image:
    """Pixels of a scene. Objects are filled without anti-aliasing: every object pixel has the exact category
    colour, so the colour of a pixel tells which object (if any) covers it."""
    a = render_background(scene["background"], scene["size"])
    for obj in scene["objects"]:
        a[object_mask(obj, scene)] = CATEGORIES[obj["category_id"] - 1].rgb
    return Image.fromarray(a, "RGB")


# --------------------------------------------------------------------------------------------------- geometry helpers


def coco_polygon(obj: dict[str, Any], scene: dict[str, Any]) -> list[float]:
    """Flat [x1, y1, x2, y2, ...] in COCO coordinates."""
    return [round(v, 2) for xy in object_polygon(obj, scene) for v in xy]


def coco_bbox(poly: Sequence[float], size: int) -> list[float]:
    xs, ys = poly[0::2], poly[1::2]
    x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
    x1, y1 = min(float(size), max(xs)), min(float(size), max(ys))
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def scene_category_ids(scene: dict[str, Any]) -> list[int]:
    """Distinct category ids present, in order of first appearance (reading order)."""
    out: list[int] = []
    for o in scene["objects"]:
        if o["category_id"] not in out:
            out.append(o["category_id"])
    return out


def scene_counts(scene: dict[str, Any]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for o in scene["objects"]:
        counts[o["category_id"]] = counts.get(o["category_id"], 0) + 1
    return counts


def relation(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Spatial relation of object a to object b: left/right when the columns differ, else above/below."""
    if a["col"] != b["col"]:
        return "left" if a["col"] < b["col"] else "right"
    if a["row"] != b["row"]:
        return "above" if a["row"] < b["row"] else "below"
    return None


# --------------------------------------------------------------------------------------------------- captions
# A caption is rendered from a small spec so that the biased (pretraining) variant can be the *same* caption with
# one absent object slipped in.


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(cid: int, count: int, noun: str, with_colour: bool) -> str:
    cat = CATEGORIES[cid - 1]
    head = f"{cat.color} {noun}" if with_colour else noun
    if count == 1:
        return f"{article(head)} {head}"
    words = head.split()
    words[-1] = pluralize(words[-1])
    return f"{NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else count} {' '.join(words)}"


def join_list(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


CAPTION_TEMPLATES = ("canonical", "picture", "there", "background", "against", "count", "scene", "spatial")


def _mention(rng: np.random.Generator, cid: int, count: int, canonical: bool) -> dict[str, Any]:
    cat = CATEGORIES[cid - 1]
    noun = cat.name if canonical else cat.synonyms[int(rng.integers(len(cat.synonyms)))]
    return {"category_id": cid, "count": count, "noun": noun, "colour": canonical or bool(rng.random() < 0.8)}


def caption_specs(rng: np.random.Generator, scene: dict[str, Any], n: int = 5) -> list[dict[str, Any]]:
    """n caption specs: the first is canonical (reading order, canonical names, colours), the others use varied
    templates, synonyms and orders. All are truthful about objects, counts, colours and positions."""
    counts = scene_counts(scene)
    order = scene_category_ids(scene)  # reading order (row-major), grouped by category
    singles = [o for o in scene["objects"] if counts[o["category_id"]] == 1]
    pairs = [(a, b) for a in singles for b in singles if a is not b and relation(a, b) is not None]
    templates = list(CAPTION_TEMPLATES[1:-1]) + (["spatial"] if pairs else [])
    chosen = [templates[i] for i in rng.permutation(len(templates))]
    while len(chosen) < n - 1:
        chosen += [templates[int(rng.integers(len(templates)))]]
    specs = [{"template": "canonical", "mentions": [_mention(rng, c, counts[c], True) for c in order]}]
    for t in chosen[: n - 1]:
        spec: dict[str, Any] = {"template": t, "tone": scene["background"]["tone"]}
        cats = [order[i] for i in rng.permutation(len(order))]
        if t == "spatial":
            a, b = pairs[int(rng.integers(len(pairs)))]
            spec["relation"] = relation(a, b)
            if abs(a["col"] - b["col"]) + abs(a["row"] - b["row"]) == 1 and rng.random() < 0.5:
                spec["relation"] = "next"
            cats = [a["category_id"], b["category_id"]] + [c for c in cats if c not in (a["category_id"], b["category_id"])]
        spec["mentions"] = [_mention(rng, c, counts[c], False) for c in cats]
        specs.append(spec)
    return specs


RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below",
                  "next": "next to"}


def render_caption(spec: dict[str, Any]) -> str:
    phrases = [noun_phrase(m["category_id"], m["count"], m["noun"], m["colour"]) for m in spec["mentions"]]
    t = spec["template"]
    total = sum(m["count"] for m in spec["mentions"])
    if t == "canonical":
        s = join_list(phrases)
    elif t == "picture":
        s = f"a picture of {join_list(phrases)}"
    elif t == "there":
        verb = "is" if spec["mentions"][0]["count"] == 1 else "are"
        s = f"there {verb} {join_list(phrases)} in the image"
    elif t == "background":
        s = f"an image of {join_list(phrases)} on a {spec['tone']} background"
    elif t == "against":
        s = f"{join_list(phrases)} against a {spec['tone']} backdrop"
    elif t == "count":
        head = "a single object" if total == 1 else f"{NUMBER_WORDS[min(total, 9)]} objects"
        s = f"{head}: {join_list(phrases)}"
    elif t == "scene":
        s = f"a {spec['tone']} scene showing {join_list(phrases)}"
    elif t == "spatial":
        s = f"{phrases[0]} {RELATION_WORDS[spec['relation']]} {phrases[1]}"
        if len(phrases) > 2:
            s += f", together with {join_list(phrases[2:])}"
    else:
        raise ValueError(f"unknown caption template {t!r}")
    return s + "."


def add_hallucination(rng: np.random.Generator, spec: dict[str, Any], cid: int) -> dict[str, Any]:
    """The same caption with one mention of an absent category ``cid`` slipped into its object list."""
    spec = {**spec, "mentions": list(spec["mentions"])}
    m = _mention(rng, cid, 1, spec["template"] == "canonical")
    lo = 2 if spec["template"] == "spatial" else 0  # keep the relation's two objects in place
    pos = int(rng.integers(lo, len(spec["mentions"]) + 1))
    spec["mentions"].insert(pos, m)
    return spec


# --------------------------------------------------------------------------------------------------- yes/no questions
# MME's phrasing, shared by the MME benchmark and the instruction mix's verification turns.

YES_NO_SUFFIX = " Please answer yes or no."
POSITION_WORDS = {"left": "on the left of", "right": "on the right of", "above": "above", "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def existence_question(cid: int) -> str:
    name = CATEGORIES[cid - 1].name
    return f"Is there {article(name)} {name} in this image?"


def count_question(cid: int, n: int) -> str:
    c = CATEGORIES[cid - 1]
    if n == 1:
        return f"Is there only one {c.name} in this image?"
    return f"Are there {NUMBER_WORDS[n]} {c.plural} in this image?"


def colour_question(cid: int, colour: str) -> str:
    return f"Is there {article(colour)} {colour} {CATEGORIES[cid - 1].name} in this image?"


def position_question(a: int, b: int, rel: str) -> str:
    return f"Is the {CATEGORIES[a - 1].name} {POSITION_WORDS[rel]} the {CATEGORIES[b - 1].name}?"


# --------------------------------------------------------------------------------------------------- corruptions


def corrupt(im: Image.Image, kind: str, param: float, seed: int = 0) -> Image.Image:
    """Image-quality corruptions for Q-Bench: Gaussian blur (radius px), Gaussian noise (sigma, grey levels),
    brightness (multiplicative factor)."""
    if kind == "none":
        return im.copy()
    if kind == "blur":
        return im.filter(ImageFilter.GaussianBlur(radius=param))
    if kind == "noise":
        a = np.asarray(im, dtype=np.float32)
        a = a + np.random.default_rng(seed).normal(0.0, param, a.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
    if kind == "brightness":
        a = np.asarray(im, dtype=np.float32) * param
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
    raise ValueError(f"unknown corruption {kind!r}")


# --------------------------------------------------------------------------------------------------- the world


@dataclass
class Split:
    name: str  # "train" | "val"
    image_ids: list[int] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)
    scenes: list[dict[str, Any]] = field(default_factory=list)
    captions: list[list[dict[str, Any]]] = field(default_factory=list)  # caption specs per image


ID_OFFSET = {"train": 0, "val": 1_000_000}


def image_file_name(split: str, image_id: int) -> str:
    return f"toy_{split}_{image_id:012d}.png"


def build_split(cfg: WorldConfig, name: str, n: int) -> Split:
    split = Split(name)
    for i in range(n):
        rng = rng_for(cfg.seed, name, i)
        scene = sample_scene(rng, cfg)
        image_id = ID_OFFSET[name] + i + 1
        split.image_ids.append(image_id)
        split.file_names.append(image_file_name(name, image_id))
        split.scenes.append(scene)
        split.captions.append(caption_specs(rng_for(cfg.seed, "captions", STREAMS[name], i), scene,
                                            cfg.captions_per_image))
    return split


def generate(out_dir: str | Path, cfg: WorldConfig | None = None, *, log=print) -> dict[str, Any]:
    """Write the whole toy dataset under ``out_dir``; returns the manifest (also written as manifest.json)."""
    from common.toy import benchmarks, formats

    cfg = cfg or WorldConfig()
    out = Path(out_dir)
    writer = formats.Writer(out)
    train = build_split(cfg, "train", cfg.n_train)
    val = build_split(cfg, "val", cfg.n_val)
    formats.write_vocabulary(writer, cfg)
    for split in (train, val):
        formats.write_split(writer, split)
    formats.write_pretrain_corpus(writer, cfg, train)
    stats = formats.cooccurrence_stats(train)
    counts = {
        "pope": benchmarks.write_pope(writer, cfg, val, stats),
        "mme": benchmarks.write_mme(writer, cfg),
        "gqa": benchmarks.write_gqa(writer, cfg, val),
        "scienceqa": benchmarks.write_scienceqa(writer, cfg),
        "qbench": benchmarks.write_qbench(writer, cfg),
        "instruction_mix": formats.write_instruction_mix(writer, cfg, train),
    }
    manifest = {
        "generator": "common.toy",
        "version": 1,
        "config": cfg.to_dict(),
        "counts": {"train_images": cfg.n_train, "val_images": cfg.n_val, **counts},
    }
    writer.json("manifest.json", manifest)
    # evaluation-only sets stay out of the manifest (the toy models' stamp hashes it): adding one retrains nothing
    benchmarks.write_classification(writer, cfg)
    removed = writer.prune()
    log(f"toy world: wrote {writer.n_written} files, kept {writer.n_unchanged} unchanged, "
        f"removed {removed} stale ones under {out}")
    return manifest
