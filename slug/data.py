"""SLUG's data: the image–caption sources a forget set is drawn from, concept matching, and webdataset tars.

A *pair* is ``(key, image, caption)``: ``image`` is the encoded bytes (tar, parquet) or the file's path (image
folder, toy world); nothing is decoded while captions are scanned. Sources (:func:`iter_source`):

- ``toy:ROOT[:SPLIT]``: a toy world (``common.toy``), default split ``train``; one pair per image: its first
  caption that matches the concept, else its first caption;
- a directory: every image (``.jpg .jpeg .png .webp .bmp``, recursively) with a same-stem ``.txt`` caption beside
  it, or, when the folder holds a ``captions.jsonl``, its ``{"image": relative path, "caption": ...}`` lines;
- ``*.parquet`` (img2dataset's parquet output): caption column ``caption``/``TEXT``/``text``, image bytes column
  ``jpg``/``png``/``image`` (bytes, or ``{"bytes": ...}``), key column ``key`` (else the row index); read in
  record batches with ``pyarrow.parquet``;
- webdataset tar shards (img2dataset's layout: ``KEY.jpg``/``.png``/``.webp`` + ``KEY.txt``, optional
  ``KEY.json``): one path, or a brace pattern such as ``data/laion/{00000..00002}.tar`` (several patterns joined
  by ``::``, as webdataset's ``expand_urls`` does).

Tars are read with webdataset's streaming iterators (``webdataset.tariterators.tar_file_expander`` +
``group_by_keys``: tarfile in ``r|*`` stream mode, one member at a time) on shard files this module opens and
closes itself, and written with ``webdataset.TarWriter``.

Concept matching (:func:`concept_pattern`) is case-insensitive and by whole words, with ``_`` and spaces alike:
``Elon_Musk`` matches "elon musk" and "ELON_MUSK", not "elonmusk" or "Elon Muskrat" (the original matched
``--name`` as a raw substring: the ``_``/space spelling mattered, and "Musk" also hit "Muskrat"). :func:`select`
stops reading the source at the cap (the original's cap was dead code: it scanned all 9,540 LAION shards).
"""
from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

from common.errors import LetheError
from common.io import atomic_path, iter_jsonl_numbered, read_text
from common.retrieval import BytesImage, RetrievalSplit, load_toy_retrieval

#: an image-caption pair: (key, encoded image bytes or image path, caption)
Pair = tuple[str, Union[bytes, Path], str]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: image members of a webdataset sample, in order of preference
TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
PARQUET_CAPTION_COLUMNS = ("caption", "TEXT", "text")
PARQUET_IMAGE_COLUMNS = ("jpg", "png", "image")
PARQUET_BATCH_ROWS = 256
FOLDER_JSONL = "captions.jsonl"
_SHOW = 3  # how many offending items an error names

# ----------------------------------------------------------------------------------------------------- concepts


def concept_pattern(name: str) -> re.Pattern:
    """A case-insensitive whole-word pattern for a concept name, ``_`` and whitespace (and runs of them) alike.

    Word boundaries are letters and digits (``_`` is a separator here, unlike ``\\b``): ``Elon_Musk`` matches
    "Elon Musk's car" and "photo_of_ELON_MUSK", not "elonmusk" or "Elon Muskrat". A blank name raises."""
    words = [w for w in re.split(r"[\s_]+", name or "") if w]
    if not words:
        raise LetheError(f"concept name {name!r} is empty")
    body = r"[\s_]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------------ sources


def _missing(paths: Sequence[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:_SHOW]) + (f" (and {len(missing) - _SHOW} more)"
                                                               if len(missing) > _SHOW else "")
        raise LetheError(f"{len(missing)} of {len(paths)} {what} not found: {shown}")


def expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A path, a list of paths, or a brace pattern (``{00000..00002}.tar``; ``::`` joins patterns) → paths."""
    from webdataset.shardlists import expand_urls

    if isinstance(shards, (str, os.PathLike)):
        urls = expand_urls(os.fspath(shards))
    else:
        urls = [os.fspath(s) for s in shards]
    if not urls:
        raise LetheError(f"no shards in {shards!r}")
    return [Path(u) for u in urls]


def iter_tar(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[Pair]:
    """Pairs of webdataset tar shards, streamed shard by shard, member by member (nothing is decoded).

    A sample's image is its first member among ``jpg jpeg png webp bmp``; its caption is ``KEY.txt`` (UTF-8,
    verbatim), else ``KEY.json``'s ``caption``. Samples with no image or no caption are skipped. Every shard must
    exist (checked before the first one is read); a shard that is not a readable tar raises naming it."""
    paths = expand_shards(shards)
    _missing(paths, "tar shards")
    return _tar_pairs(paths)


def _tar_pairs(paths: list[Path]) -> Iterator[Pair]:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    for path in paths:
        with open(path, "rb") as f:
            samples = group_by_keys(tar_file_expander([{"url": str(path), "stream": f}]))
            while True:
                try:
                    sample = next(samples)
                except StopIteration:
                    break
                except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                    msg = str(e.args[0]) if e.args else e.__class__.__name__
                    raise LetheError(f"{path}: not a readable webdataset tar "
                                     f"({e.__class__.__name__}: {msg.split(' @ ')[0]})") from None
                pair = _tar_sample_pair(sample, path)
                if pair is not None:
                    yield pair


def _tar_sample_pair(sample: dict[str, Any], path: Path) -> Pair | None:
    image = next((sample[e] for e in TAR_IMAGE_EXTS if e in sample), None)
    caption = None
    if "txt" in sample:
        caption = sample["txt"].decode("utf-8", "replace")
    elif "json" in sample:
        import json

        try:
            meta = json.loads(sample["json"])
        except ValueError:
            meta = None
        if isinstance(meta, dict) and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
    if image is None or caption is None:
        return None
    return str(sample["__key__"]), bytes(image), caption


def iter_parquet(files: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[Pair]:
    """Pairs of img2dataset parquet files, read in record batches of the key, caption and image columns only.

    Rows without a caption or image (img2dataset keeps failed downloads as rows) are skipped. The key is the
    ``key`` column, else the row index (prefixed by the file's stem when several files are read). A LAION
    *metadata* parquet (URLs, no image bytes) raises: download it with img2dataset first."""
    paths = expand_shards(files)
    _missing(paths, "parquet files")
    return _parquet_pairs(paths)


def _parquet_pairs(paths: list[Path]) -> Iterator[Pair]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise LetheError(f"{path}: not a readable parquet file ({e.__class__.__name__})") from None
        names = pf.schema_arrow.names
        cap_col = next((c for c in PARQUET_CAPTION_COLUMNS if c in names), None)
        img_col = next((c for c in PARQUET_IMAGE_COLUMNS if c in names), None)
        if cap_col is None:
            raise LetheError(f"{path}: no caption column ({'/'.join(PARQUET_CAPTION_COLUMNS)}); columns: "
                             f"{', '.join(names)}")
        if img_col is None:
            hint = "; a LAION metadata parquet holds URLs only: download the images with img2dataset" \
                if "URL" in names or "url" in names else ""
            raise LetheError(f"{path}: no image column ({'/'.join(PARQUET_IMAGE_COLUMNS)}); columns: "
                             f"{', '.join(names)}{hint}")
        key_col = "key" if "key" in names else None
        columns = [c for c in (key_col, cap_col, img_col) if c]
        prefix = f"{path.stem}_" if len(paths) > 1 else ""
        row = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            caps = batch.column(cap_col).to_pylist()
            imgs = batch.column(img_col).to_pylist()
            keys = batch.column(key_col).to_pylist() if key_col else [None] * len(caps)
            for cap, img, key in zip(caps, imgs, keys):
                r, row = row, row + 1
                if isinstance(img, dict):  # a Hugging Face Image feature: {"bytes", "path"}
                    img = img.get("bytes") or (Path(img["path"]) if img.get("path") else None)
                elif isinstance(img, str):
                    img = path.parent / img
                if not isinstance(cap, str) or img is None:
                    continue
                yield (str(key) if key is not None else f"{prefix}{r}"), img, cap


def iter_folder(root: str | os.PathLike) -> Iterator[Pair]:
    """Pairs of an image folder: ``ROOT/captions.jsonl`` when present (``{"image": relative path, "caption"}``
    lines; a missing image raises naming the line), else every image file under ``ROOT`` (recursively, in sorted
    order) with a same-stem ``.txt`` beside it (UTF-8; trailing line breaks dropped; images without one are
    skipped). Keys are the images' paths relative to ``ROOT``. A folder with no pair raises."""
    root = Path(root)
    if not root.is_dir():
        raise LetheError(f"{root}: image folder not found")
    return _folder_pairs(root)


def _folder_pairs(root: Path) -> Iterator[Pair]:
    n = 0
    jsonl = root / FOLDER_JSONL
    if jsonl.is_file():
        for lineno, obj in iter_jsonl_numbered(jsonl):
            image, caption = obj.get("image"), obj.get("caption")
            if not isinstance(image, str) or not image or not isinstance(caption, str):
                raise LetheError(f"{jsonl}:{lineno}: a line needs an 'image' path and a 'caption' string")
            p = root / image
            if not p.is_file():
                raise LetheError(f"{jsonl}:{lineno}: image {p} not found")
            n += 1
            yield Path(image).as_posix(), p, caption
    else:
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                continue
            txt = p.with_suffix(".txt")
            if not txt.is_file():
                continue
            n += 1
            yield p.relative_to(root).as_posix(), p, read_text(txt).rstrip("\r\n")
    if n == 0:
        raise LetheError(f"{root}: no image with a same-stem .txt caption and no {FOLDER_JSONL}")


def iter_toy(toy_root: str | os.PathLike, split: str = "train", pattern: re.Pattern | None = None) -> Iterator[Pair]:
    """One pair per toy-world image: its first caption that ``pattern`` matches, else its first caption. Keys are
    the split's image keys (file names)."""
    data = load_toy_retrieval(toy_root, split)
    return _toy_pairs(data, pattern)


def _toy_pairs(data: RetrievalSplit, pattern: re.Pattern | None) -> Iterator[Pair]:
    for i, key in enumerate(data.keys):
        caps = [data.texts[j] for j in data.img2txt[i]]
        cap = next((c for c in caps if pattern is not None and pattern.search(c)), caps[0])
        yield key, Path(data.images[i]), cap


def _parse_toy(rest: str) -> tuple[Path, str]:
    if not rest:
        raise LetheError("source 'toy:' needs a toy-world folder: toy:ROOT[:SPLIT]")
    root, sep, split = rest.rpartition(":")
    if not sep or Path(rest).is_dir() or "/" in split or "\\" in split or not root:
        return Path(rest), "train"
    return Path(root), split


def iter_source(spec: str, pattern: re.Pattern | None = None) -> Iterator[Pair]:
    """The pairs of a source spec: ``toy:ROOT[:SPLIT]``, an image folder, ``*.parquet`` or ``*.tar`` shards
    (a path or a brace pattern). ``pattern`` only picks the toy world's caption of each image. The spec is checked
    now (an unknown or missing source raises naming it); the pairs are read lazily."""
    spec = str(spec)
    if not spec.strip():
        raise LetheError("empty source (expected toy:ROOT[:SPLIT], an image folder, a .parquet file or .tar shards)")
    if spec.startswith("toy:"):
        root, split = _parse_toy(spec[4:])
        if not root.is_dir():
            raise LetheError(f"source {spec!r}: toy-world folder {root} not found")
        return iter_toy(root, split, pattern)
    if Path(spec).is_dir():
        return iter_folder(spec)
    paths = expand_shards(spec)
    if paths and all(p.name.endswith(".parquet") for p in paths):
        return iter_parquet(paths)
    if paths and all(p.name.endswith((".tar", ".tar.gz", ".tgz")) for p in paths):
        return iter_tar(paths)
    if paths and len(paths) == 1 and not paths[0].exists():
        raise LetheError(f"source {spec!r} not found (expected toy:ROOT[:SPLIT], an image folder, a .parquet file "
                         f"or .tar shards such as data/laion/{{00000..00002}}.tar)")
    raise LetheError(f"unknown source {spec!r} (expected toy:ROOT[:SPLIT], an image folder, a .parquet file or "
                     f".tar shards such as data/laion/{{00000..00002}}.tar)")


# ---------------------------------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """What :func:`select` found: ``matched`` pairs (at most the cap), up to ``keep_rest`` of the ``rest`` (pairs
    that did not match), how many pairs were ``scanned``, and whether the source was ``exhausted``."""

    matched: list[Pair] = field(default_factory=list)
    rest: list[Pair] = field(default_factory=list)
    scanned: int = 0
    exhausted: bool = False


def select(pairs: Iterable[Pair], pattern: re.Pattern, cap: int | None = None, keep_rest: int = 0,
           desc: str = "scanning") -> Selection:
    """Keep the pairs whose caption ``pattern`` matches, reading ``pairs`` only as far as needed.

    The scan stops as soon as ``cap`` matches are found (and ``keep_rest`` non-matching pairs, when asked for):
    the source is not advanced once more. ``cap=None`` reads the whole source. A progress bar counts the scanned
    pairs (postfix: matches) on a terminal."""
    from tqdm.auto import tqdm

    if cap is not None and cap < 1:
        raise LetheError(f"the cap on matches must be at least 1 (got {cap})")
    sel = Selection()
    it = iter(pairs)
    bar = tqdm(desc=desc, unit=" samples", disable=None)
    try:
        while not (cap is not None and len(sel.matched) >= cap and len(sel.rest) >= keep_rest):
            try:
                pair = next(it)
            except StopIteration:
                sel.exhausted = True
                break
            sel.scanned += 1
            bar.update()
            if pattern.search(pair[2]):
                if cap is None or len(sel.matched) < cap:
                    sel.matched.append(pair)
                    bar.set_postfix(matches=len(sel.matched), refresh=False)
            elif len(sel.rest) < keep_rest:
                sel.rest.append(pair)
    finally:
        bar.close()
    return sel


# ------------------------------------------------------------------------------------------------------- writing

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"BM", "bmp"), (b"GIF8", "gif"))


def image_format(data: bytes) -> str | None:
    """The file extension of encoded image bytes from their signature (png, jpg, webp, bmp, gif), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)


def sanitize_key(key: str) -> str:
    """A webdataset key: a trailing image extension dropped, every run of characters other than letters, digits,
    ``_`` and ``-`` (dots, slashes, spaces) made one ``_`` (webdataset groups members by the name up to the first
    dot)."""
    stem = re.sub(r"\.(jpe?g|png|webp|bmp)$", "", key, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem) or "sample"


def _encoded(key: str, image: Any) -> tuple[bytes, str]:
    """(bytes, extension) of a pair's image as stored in the tar: the original encoding when it is a known
    format, else re-encoded as PNG."""
    if isinstance(image, BytesImage):
        image = image.data
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise LetheError(f"{key}: image {p} not found")
        data = p.read_bytes()
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif hasattr(image, "save"):  # a PIL image
        import io

        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        return buf.getvalue(), "png"
    else:
        raise LetheError(f"{key}: cannot store an image of type {type(image).__name__}")
    ext = image_format(data)
    if ext is None:
        import io

        buf = io.BytesIO()
        BytesImage(data, key).load().save(buf, format="PNG")
        return buf.getvalue(), "png"
    return data, ext


def write_tar(pairs: Iterable[Pair], out_path: str | os.PathLike) -> list[str]:
    """Write pairs as a webdataset tar (``KEY.EXT`` image in its original encoding — or PNG when it is not a
    known format — and ``KEY.txt`` caption, UTF-8), atomically: a temporary file beside ``out_path`` renamed onto
    it once complete. Keys are made webdataset-safe with :func:`sanitize_key` (and unique: ``_1``, ``_2`` ...
    appended on a clash). Returns the keys written, in order."""
    from webdataset import TarWriter

    written: list[str] = []
    used: set[str] = set()
    with atomic_path(out_path, suffix=".tar") as tmp:
        with open(tmp, "wb") as f, TarWriter(f, encoder=False, mode=0o644, format="PAX_FORMAT") as w:
            for key, image, caption in pairs:
                k = base = sanitize_key(str(key))
                n = 0
                while k in used:
                    n += 1
                    k = f"{base}_{n}"
                used.add(k)
                data, ext = _encoded(str(key), image)
                w.write({"__key__": k, ext: data, "txt": caption.encode("utf-8")})
                written.append(k)
    return written


# ------------------------------------------------------------------------------------------------------ reading


def load_pairs(spec: str, name: str | None = None) -> RetrievalSplit:
    """Every pair of a source (no filter) as a :class:`RetrievalSplit`, one caption per image, so that later SLUG
    steps read forget and retain sets alike. Tar and parquet images are held as :class:`BytesImage` (the encoded
    bytes, decoded when asked for); folder and toy images as paths. A key repeated with the same image adds a
    caption to it (``captions.jsonl`` may list an image twice); with another image it raises."""
    order: dict[str, int] = {}
    keys: list[str] = []
    images: list[Any] = []
    captions: list[list[str]] = []
    for key, image, caption in iter_source(spec):
        if key in order:
            i = order[key]
            prev = images[i].data if isinstance(images[i], BytesImage) else images[i]
            if prev != image:
                raise LetheError(f"source {spec!r}: key {key!r} names two different images")
            captions[i].append(caption)
            continue
        order[key] = len(keys)
        keys.append(key)
        images.append(BytesImage(image, f"{spec} [{key}]") if isinstance(image, bytes) else image)
        captions.append([caption])
    if not keys:
        raise LetheError(f"source {spec!r} holds no image-caption pairs")
    return RetrievalSplit.from_groups(name or spec, keys, images, captions)
