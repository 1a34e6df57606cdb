"""Image–text retrieval splits (COCO / Flickr30K Karpathy, SALMUBench, the toy world) and forget/retain selection.

A :class:`RetrievalSplit` holds images (each with a stable string key) and their captions, with LAVIS's
``txt2img`` / ``img2txt`` index maps. Captions are kept verbatim: no lower-casing, no punctuation stripping, no
``strip()`` (the original SALMU fork stripped the very e-mails and phone numbers it was meant to unlearn).
Images are decoded only when asked for (:meth:`RetrievalSplit.image`), so a split of a large Hugging Face dataset
costs its text columns only.

Forget/retain selection is by image, as MultiDelete's ``create_deletion_data.py``: every caption of a forgotten
image goes to Df, and Dr is the rest.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from common.errors import LetheError
from common.io import iter_jsonl_numbered, load_image, read_json, read_text

#: SALMUBench's evaluation splits (any other split name present in the data is accepted too)
SALMUBENCH_SPLITS = ("forget", "retain_synth", "holdout_identity", "holdout_association")
#: Karpathy split names; ``train`` also takes ``restval`` (see :func:`load_karpathy`)
KARPATHY_SPLITS = ("train", "restval", "val", "test")
_SHOW = 3  # how many offending items an error message names


@dataclass(eq=False)
class DatasetImage:
    """One image of a Hugging Face ``datasets.Dataset``, decoded only by :meth:`load`.

    ``dataset`` should hold just the image column (``ds.select_columns([column])``), so that reading a row decodes
    nothing else. ``source`` names the data in error messages.
    """

    dataset: Any = field(repr=False)
    row: int
    column: str = "image"
    source: str = ""

    def load(self):
        """The image as PIL RGB; an undecodable value raises naming the source and row."""
        from PIL import Image, UnidentifiedImageError

        where = f"{self.source or 'dataset'} row {self.row}"
        try:
            value = self.dataset[self.row][self.column]
            if isinstance(value, dict):  # an Image feature with decode=False: {"bytes", "path"}
                if value.get("bytes"):
                    value = Image.open(io.BytesIO(value["bytes"]))
                elif value.get("path"):
                    return load_image(value["path"])
            elif isinstance(value, (str, os.PathLike)):
                return load_image(value)
            if not isinstance(value, Image.Image):
                raise LetheError(f"{where}: column {self.column!r} holds {type(value).__name__}, not an image")
            return value.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if isinstance(e, LetheError):
                raise
            raise LetheError(f"{where}: cannot decode image ({e.__class__.__name__})") from None


@dataclass(eq=False)
class BytesImage:
    """An encoded image held in memory (a webdataset tar member, a parquet cell), decoded only by :meth:`load`.

    ``source`` names where the bytes came from (``shard.tar [key]``) in error messages."""

    data: bytes = field(repr=False)
    source: str = ""

    def load(self):
        """The image as PIL RGB; undecodable bytes raise naming the source."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self.data)) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise LetheError(f"{self.source or 'image bytes'}: cannot decode image ({e.__class__.__name__})") from None


#: where an image comes from: a file path, a lazily decoded dataset row, or encoded bytes in memory
ImageSource = Union[str, Path, DatasetImage, BytesImage]


@dataclass
class RetrievalSplit:
    """Images and captions of one retrieval split.

    ``keys[i]``: stable id of image ``i`` (its file name relative to the image root, or the dataset's file name);
    ``images[i]``: its source; ``texts``: every caption, verbatim; ``txt2img[j]``: the image of caption ``j``;
    ``img2txt[i]``: the captions of image ``i``; ``metadata[i]``: optional per-image fields (``image_id``,
    ``identity_id``, toy ``categories`` ...).
    """

    name: str
    keys: list[str]
    images: list[ImageSource]
    texts: list[str]
    txt2img: list[int]
    img2txt: list[list[int]]
    metadata: list[dict] | None = None

    def __post_init__(self) -> None:
        n = len(self.keys)
        if len(self.images) != n or len(self.img2txt) != n or (self.metadata is not None and len(self.metadata) != n):
            raise ValueError(f"split {self.name!r}: keys, images, img2txt and metadata must have one entry per image")
        if len(self.txt2img) != len(self.texts):
            raise ValueError(f"split {self.name!r}: txt2img must have one entry per text")
        if len(set(self.keys)) != n:
            raise ValueError(f"split {self.name!r}: image keys are not unique")
        for i, caps in enumerate(self.img2txt):
            if any(self.txt2img[j] != i for j in caps):
                raise ValueError(f"split {self.name!r}: img2txt[{i}] does not match txt2img")
        if sum(len(c) for c in self.img2txt) != len(self.texts):
            raise ValueError(f"split {self.name!r}: img2txt does not cover every text exactly once")

    @classmethod
    def from_groups(cls, name: str, keys: Sequence[str], images: Sequence[ImageSource],
                    captions: Sequence[Sequence[str]], metadata: Sequence[dict] | None = None) -> "RetrievalSplit":
        """Build a split from per-image caption lists (texts are numbered image by image, in order)."""
        texts: list[str] = []
        txt2img: list[int] = []
        img2txt: list[list[int]] = []
        for i, caps in enumerate(captions):
            img2txt.append(list(range(len(texts), len(texts) + len(caps))))
            texts.extend(caps)
            txt2img.extend([i] * len(caps))
        return cls(name, list(keys), list(images), texts, txt2img, img2txt,
                   None if metadata is None else [dict(m) for m in metadata])

    def __len__(self) -> int:
        """The number of images."""
        return len(self.keys)

    @property
    def n_images(self) -> int:
        return len(self.keys)

    @property
    def n_pairs(self) -> int:
        """The number of (image, caption) pairs = the number of texts."""
        return len(self.texts)

    def __repr__(self) -> str:
        return f"RetrievalSplit(name={self.name!r}, images={self.n_images}, pairs={self.n_pairs})"

    def image(self, i: int):
        """Image ``i`` as PIL RGB (decoded now; a missing or bad file raises naming it)."""
        src = self.images[i]
        return src.load() if hasattr(src, "load") else load_image(src)  # DatasetImage, BytesImage

    def index(self, key: str) -> int:
        """The position of the image with this key."""
        if not hasattr(self, "_index") or len(self._index) != len(self.keys):
            self._index = {k: i for i, k in enumerate(self.keys)}
        if key not in self._index:
            raise LetheError(f"split {self.name!r}: no image with key {key!r}")
        return self._index[key]

    def subset(self, image_indices: Iterable[int], name: str | None = None) -> "RetrievalSplit":
        """A new split with these images (in this order) and all of their captions."""
        idx = [int(i) for i in image_indices]
        if len(set(idx)) != len(idx):
            raise ValueError("subset: repeated image indices")
        return RetrievalSplit.from_groups(
            name or self.name, [self.keys[i] for i in idx], [self.images[i] for i in idx],
            [[self.texts[j] for j in self.img2txt[i]] for i in idx],
            None if self.metadata is None else [self.metadata[i] for i in idx])

    def pairs(self) -> list[tuple[int, int]]:
        """Every (image index, text index) pair, in text order."""
        return [(i, j) for j, i in enumerate(self.txt2img)]


# ----------------------------------------------------------------------------------------------------- helpers


def _missing_images_error(source: str | Path, missing: list[tuple[str, Path]], total: int) -> LetheError:
    """One error for a split file whose images are missing: ``missing`` = [(where, path)], the first few named."""
    shown = "; ".join(f"{where}: {p}" for where, p in missing[:_SHOW])
    more = f" (and {len(missing) - _SHOW} more)" if len(missing) > _SHOW else ""
    return LetheError(f"{source}: {len(missing)} of {total} images not found: {shown}{more}")


def _check_files(source: str | Path, entries: Sequence[tuple[str, Path]]) -> None:
    missing = [(where, p) for where, p in entries if not p.is_file()]
    if missing:
        raise _missing_images_error(source, missing, len(entries))


# ---------------------------------------------------------------------------------------------------- Karpathy


def load_karpathy(json_path: str | Path, image_root: str | Path, split: str) -> RetrievalSplit:
    """COCO / Flickr30K Karpathy split (``dataset_coco.json``, ``dataset_flickr30k.json``).

    ``split``: ``train``, ``val``, ``test`` or ``restval``. ``train`` includes ``restval`` (standard practice:
    the 113K-image COCO training set of LAVIS, CLIP fine-tuning and MultiDelete is train + restval).
    Image ``i`` is ``image_root/filepath/filename`` (``filepath`` where present, as COCO's ``val2014``); its key
    is ``filepath/filename`` (or ``filename``). Captions are ``sentence["raw"]``, verbatim. Metadata:
    ``image_id`` (``cocoid`` / ``imgid``) and ``karpathy_split``.
    """
    path, root = Path(json_path), Path(image_root)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LetheError(f"{path}: expected {{\"images\": [...]}} (a Karpathy split file)")
    wanted = {"train", "restval"} if split == "train" else {split}
    keys, images, captions, meta, files = [], [], [], [], []
    present: set[str] = set()
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise LetheError(f"{path}: {where}: expected an object, got {type(entry).__name__}")
        esplit = entry.get("split")
        if not isinstance(esplit, str):
            raise LetheError(f"{path}: {where}: no 'split' string")
        present.add(esplit)
        if esplit not in wanted:
            continue
        fname, fpath = entry.get("filename"), entry.get("filepath")
        if not isinstance(fname, str) or not fname:
            raise LetheError(f"{path}: {where}: no 'filename' string")
        if fpath is not None and not isinstance(fpath, str):
            raise LetheError(f"{path}: {where}: 'filepath' must be a string")
        sents = entry.get("sentences")
        if not isinstance(sents, list) or not sents:
            raise LetheError(f"{path}: {where} ({fname}): no 'sentences' list")
        caps = []
        for j, s in enumerate(sents):
            if not isinstance(s, dict) or not isinstance(s.get("raw"), str):
                raise LetheError(f"{path}: {where}.sentences[{j}] ({fname}): no 'raw' string")
            caps.append(s["raw"])
        key = f"{fpath}/{fname}" if fpath else fname
        keys.append(key)
        images.append(root / key)
        files.append((where, root / key))
        captions.append(caps)
        image_id = entry.get("cocoid", entry.get("imgid"))
        meta.append({"image_id": image_id, "karpathy_split": esplit})
    if not keys:
        have = ", ".join(sorted(present)) or "none"
        raise LetheError(f"{path}: no images in split {split!r} (splits present: {have})")
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise LetheError(f"{path}: image {dup!r} appears more than once in split {split!r}")
    _check_files(path, files)
    return RetrievalSplit.from_groups(split, keys, images, captions, meta)


# -------------------------------------------------------------------------------------------------- SALMUBench


def _grouped_split(name: str, rows: Sequence[tuple[str, ImageSource, str, dict]]) -> RetrievalSplit:
    """(key, image, text, metadata) rows → one image per key (its first row), all its texts in row order."""
    order: dict[str, int] = {}
    keys, images, captions, meta = [], [], [], []
    for key, img, text, m in rows:
        if key not in order:
            order[key] = len(keys)
            keys.append(key)
            images.append(img)
            captions.append([])
            meta.append(m)
        captions[order[key]].append(text)
    return RetrievalSplit.from_groups(name, keys, images, captions, meta)


def _salmu_from_dataset(ds, split: str, source: str) -> RetrievalSplit:
    """A SALMUBench split held by a ``datasets.Dataset`` (fields image, text, identity_id, file_name)."""
    cols = set(ds.column_names)
    for need in ("image", "text"):
        if need not in cols:
            raise LetheError(f"{source}: split {split!r} has no {need!r} column (columns: {', '.join(sorted(cols))})")
    meta_cols = [c for c in ("text", "identity_id", "file_name") if c in cols]
    table = ds.select_columns(meta_cols).with_format(None).to_dict()
    image_ds = ds.select_columns(["image"])
    rows = []
    for r, text in enumerate(table["text"]):
        if not isinstance(text, str):
            raise LetheError(f"{source}: split {split!r} row {r}: 'text' is {type(text).__name__}, not a string")
        fname = table["file_name"][r] if "file_name" in table else None
        key = str(fname) if fname not in (None, "") else f"{split}/{r:06d}"
        m = {"identity_id": table["identity_id"][r] if "identity_id" in table else None, "file_name": fname,
             "row": r}
        rows.append((key, DatasetImage(image_ds, r, "image", f"{source} [{split}]"), text, m))
    if not rows:
        raise LetheError(f"{source}: split {split!r} is empty")
    return _grouped_split(split, rows)


def _salmu_from_jsonl(jsonl: Path, split: str, image_root: Path | None) -> RetrievalSplit:
    root = image_root or jsonl.parent
    rows, files = [], []
    for lineno, obj in iter_jsonl_numbered(jsonl):
        where = f"line {lineno}"
        fname = obj.get("file_name", obj.get("image"))
        if not isinstance(fname, str) or not fname:
            raise LetheError(f"{jsonl}:{lineno}: no 'file_name' (or 'image') string")
        text = obj.get("text")
        if not isinstance(text, str):
            raise LetheError(f"{jsonl}:{lineno}: no 'text' string")
        p = root / fname
        if not p.is_file() and (root / split / fname).is_file():  # images under <root>/<split>/
            p = root / split / fname
        files.append((where, p))
        rows.append((fname, p, text, {"identity_id": obj.get("identity_id"), "file_name": fname, "line": lineno}))
    if not rows:
        raise LetheError(f"{jsonl}: no rows")
    _check_files(jsonl, files)
    return _grouped_split(split, rows)


def _salmu_splits_present(root: Path) -> list[str]:
    found: set[str] = set()
    if (root / "dataset_dict.json").is_file():
        try:
            found.update(read_json(root / "dataset_dict.json").get("splits", []))
        except (LetheError, AttributeError):
            pass
    found.update(p.name for p in root.iterdir() if p.is_dir() and (p / "state.json").is_file())
    for d in (root / "data", root):
        if d.is_dir():
            found.update(p.name.split("-")[0] for p in d.glob("*.parquet"))
    found.update(p.stem for p in root.glob("*.jsonl"))
    return sorted(found)


def load_salmubench(path: str | Path, split: str, image_root: str | Path | None = None,
                    cache_dir: str | Path | None = None) -> RetrievalSplit:
    """One SALMUBench split (``forget``, ``retain_synth``, ``holdout_identity``, ``holdout_association``, or any
    split present), one image per ``file_name`` with all its captions, byte-identical to the data.

    Layouts, tried in this order under ``path``:

    - ``DatasetDict.save_to_disk``: ``dataset_dict.json`` + ``<split>/``;
    - ``Dataset.save_to_disk`` of the split: ``<split>/state.json``, or ``path`` itself (taken as ``split``);
    - hub-style parquet: ``data/<split>-*.parquet`` (or ``<split>-*.parquet``), read with ``datasets`` (its cache
      in ``cache_dir`` or the default one);
    - an image folder + ``<split>.jsonl`` with ``file_name`` (or ``image``), ``text``, ``identity_id``; images are
      looked up under ``image_root`` (default: the jsonl's folder), then under ``image_root/<split>/``.

    Dataset images stay undecoded until asked for. Metadata: ``identity_id``, ``file_name``, and ``row`` (dataset)
    or ``line`` (jsonl).
    """
    root = Path(path)
    if not root.is_dir():
        raise LetheError(f"{root}: SALMUBench directory not found")
    if (root / "dataset_dict.json").is_file() or (root / split / "state.json").is_file() \
            or (root / "state.json").is_file():
        import datasets

        if (root / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(root))
            if split not in dd:
                raise LetheError(f"{root}: no split {split!r} (splits: {', '.join(dd)})")
            return _salmu_from_dataset(dd[split], split, str(root))
        sub = root / split if (root / split / "state.json").is_file() else root
        return _salmu_from_dataset(datasets.load_from_disk(str(sub)), split, str(sub))
    parquet = sorted((root / "data").glob(f"{split}-*.parquet")) or sorted(root.glob(f"{split}-*.parquet"))
    if parquet:
        import datasets

        ds = datasets.load_dataset("parquet", data_files={split: [str(p) for p in parquet]}, split=split,
                                   cache_dir=None if cache_dir is None else str(cache_dir))
        return _salmu_from_dataset(ds, split, str(parquet[0].parent))
    if (root / f"{split}.jsonl").is_file():
        return _salmu_from_jsonl(root / f"{split}.jsonl", split, None if image_root is None else Path(image_root))
    present = _salmu_splits_present(root)
    raise LetheError(f"{root}: no SALMUBench split {split!r} (looked for dataset_dict.json, {split}/state.json, "
                     f"data/{split}-*.parquet, {split}.jsonl); splits present: {', '.join(present) or 'none'}")


# ------------------------------------------------------------------------------------------ COCO captions / toy


def load_coco_captions(captions_json: str | Path, image_root: str | Path, instances_json: str | Path | None = None,
                       name: str | None = None) -> RetrievalSplit:
    """A COCO-format captions file (``{"images": [{id, file_name}], "annotations": [{image_id, caption}]}``).

    Images in file order (those without a caption are left out), captions in annotation order, verbatim. Key =
    ``file_name``; metadata: ``image_id``, and with ``instances_json`` the sorted list of the category names
    present in the image (``categories``).
    """
    path, root = Path(captions_json), Path(image_root)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise LetheError(f"{path}: expected COCO captions ({{\"images\": [...], \"annotations\": [...]}})")
    ids: dict[Any, int] = {}
    entries = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise LetheError(f"{path}: images[{i}]: needs 'id' and a 'file_name' string")
        if im["id"] in ids:
            raise LetheError(f"{path}: images[{i}]: image id {im['id']} appears twice")
        ids[im["id"]] = len(entries)
        entries.append(im)
    caps: list[list[str]] = [[] for _ in entries]
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not isinstance(a.get("caption"), str):
            raise LetheError(f"{path}: annotations[{k}]: no 'caption' string")
        if a.get("image_id") not in ids:
            raise LetheError(f"{path}: annotations[{k}]: image_id {a.get('image_id')!r} is not in 'images'")
        caps[ids[a["image_id"]]].append(a["caption"])
    cats: list[set[str]] | None = None
    if instances_json is not None:
        cats = _instance_categories(Path(instances_json), ids)
    keep = [i for i, c in enumerate(caps) if c]
    keys = [entries[i]["file_name"] for i in keep]
    _check_files(path, [(f"images[{i}]", root / entries[i]["file_name"]) for i in keep])
    meta = [{"image_id": entries[i]["id"], **({} if cats is None else {"categories": sorted(cats[i])})}
            for i in keep]
    return RetrievalSplit.from_groups(name or path.stem, keys, [root / k for k in keys], [caps[i] for i in keep],
                                      meta)


def _instance_categories(path: Path, ids: dict[Any, int]) -> list[set[str]]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) \
            or not isinstance(data.get("annotations"), list):
        raise LetheError(f"{path}: expected COCO instances ({{\"categories\": [...], \"annotations\": [...]}})")
    names = {}
    for c, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            raise LetheError(f"{path}: categories[{c}]: needs 'id' and a 'name' string")
        names[cat["id"]] = cat["name"]
    out: list[set[str]] = [set() for _ in ids]
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or a.get("category_id") not in names:
            raise LetheError(f"{path}: annotations[{k}]: category_id {a.get('category_id')!r} is not in 'categories'")
        if a.get("image_id") in ids:
            out[ids[a["image_id"]]].add(names[a["category_id"]])
    return out


def load_toy_retrieval(toy_root: str | Path, split: str) -> RetrievalSplit:
    """A toy-world split (``common.toy``): ``annotations/captions_<split>.json`` + ``images/<split>/``, with each
    image's category names (``metadata[i]["categories"]``) from ``annotations/instances_<split>.json``."""
    root = Path(toy_root)
    cap = root / "annotations" / f"captions_{split}.json"
    if not cap.is_file():
        have = sorted(p.stem.removeprefix("captions_") for p in (root / "annotations").glob("captions_*.json"))
        raise LetheError(f"{cap}: file not found (toy splits present: {', '.join(have) or 'none'})")
    return load_coco_captions(cap, root / "images" / split, root / "annotations" / f"instances_{split}.json",
                              name=split)


# ---------------------------------------------------------------------------------------------- forget / retain


def _split_by(split: RetrievalSplit, forget: Iterable[int]) -> tuple[RetrievalSplit, RetrievalSplit]:
    f = set(int(i) for i in forget)
    df = split.subset(sorted(f), name=f"{split.name}/df")
    dr = split.subset([i for i in range(len(split)) if i not in f], name=f"{split.name}/dr")
    return df, dr


def sample_forget(split: RetrievalSplit, df_size: int, seed: int) -> tuple[RetrievalSplit, RetrievalSplit]:
    """(Df, Dr): ``df_size`` images drawn without replacement with ``numpy.random.default_rng(seed)``, with all
    their captions; Dr = the other images. Both keep the split's image order."""
    import numpy as np

    n = len(split)
    if df_size < 1 or df_size > n:
        raise LetheError(f"df_size {df_size} must be between 1 and the number of images in split "
                         f"{split.name!r} ({n})")
    idx = np.random.default_rng(seed).choice(n, size=df_size, replace=False)
    return _split_by(split, idx.tolist())


def read_key_list(path: str | Path) -> list[str]:
    """A forget list: one image key per line (surrounding whitespace and blank lines ignored)."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def forget_by_keys(split: RetrievalSplit, keys: Iterable[str] | str | Path,
                   source: str | None = None) -> tuple[RetrievalSplit, RetrievalSplit]:
    """(Df, Dr) with Df = the images whose keys are listed (``keys``: the keys, or a list file of them).

    A listed key matches an image key exactly, else (when unambiguous) by file name without folders, else by its
    ``metadata["image_id"]`` (MultiDelete's Df lists hold ``forget/<name>.jpg`` paths or image ids). Unknown keys
    raise naming ``source`` (the list file) and the first few of them.
    """
    if isinstance(keys, (str, Path)):
        source = source or str(keys)
        keys = read_key_list(keys)
    source = source or "forget list"
    wanted = list(dict.fromkeys(str(k) for k in keys))
    if not wanted:
        raise LetheError(f"{source}: no keys")
    exact = {k: i for i, k in enumerate(split.keys)}
    by_name: dict[str, list[int]] = {}
    for i, k in enumerate(split.keys):
        by_name.setdefault(k.replace("\\", "/").rsplit("/", 1)[-1], []).append(i)
    by_id: dict[str, list[int]] = {}
    for i, m in enumerate(split.metadata or []):
        if m.get("image_id") is not None:
            by_id.setdefault(str(m["image_id"]), []).append(i)
    chosen, unknown = [], []
    for k in wanted:
        if k in exact:
            chosen.append(exact[k])
            continue
        cand = by_name.get(k.replace("\\", "/").rsplit("/", 1)[-1], []) or by_id.get(k, [])
        if len(cand) == 1:
            chosen.append(cand[0])
        else:
            unknown.append(k)
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:_SHOW]) + (f" (and {len(unknown) - _SHOW} more)"
                                                                 if len(unknown) > _SHOW else "")
        raise LetheError(f"{source}: {len(unknown)} of {len(wanted)} keys are not images of split {split.name!r}: "
                         f"{shown}")
    return _split_by(split, chosen)


def forget_by_concepts(split: RetrievalSplit, concepts: Iterable[str] | str) -> tuple[RetrievalSplit, RetrievalSplit]:
    """(Df, Dr) with Df = the images whose ``metadata["categories"]`` include any of ``concepts``."""
    concepts = [concepts] if isinstance(concepts, str) else list(concepts)
    if not concepts:
        raise LetheError("forget_by_concepts: no concepts given")
    if not split.metadata or any("categories" not in m for m in split.metadata):
        raise LetheError(f"split {split.name!r} has no per-image categories (load it with instances annotations)")
    known = sorted({c for m in split.metadata for c in m["categories"]})
    bad = [c for c in concepts if c not in known]
    if bad:
        raise LetheError(f"unknown concept(s) {', '.join(map(repr, bad))} in split {split.name!r}; known: "
                         f"{', '.join(known)}")
    want = set(concepts)
    return _split_by(split, [i for i, m in enumerate(split.metadata) if want & set(m["categories"])])
