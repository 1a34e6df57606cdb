"""slug.data + slug/create_forget_set.py: concept matching, the four pair sources, the capped scan, tar round trips."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import LetheError
from common.retrieval import BytesImage, RetrievalSplit, load_toy_retrieval
from slug.data import (concept_pattern, image_format, iter_source, load_pairs, sanitize_key, select,
                       write_tar)

UNICODE_CAPTION = "Zoë & Elon_Musk — «ça va?» 東京, 100% (sic)!\ttab"


def _img(seed: int, size=(9, 7)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def _laion_shard(path: Path, samples: list[tuple]) -> None:
    """An img2dataset-style shard written with plain tarfile: ``(key, ext, image bytes, caption[, json caption])``
    → KEY.EXT, KEY.txt (unless the caption is None) and KEY.json (``caption``: the json caption, else the caption)."""
    with tarfile.open(path, "w") as tar:
        for key, ext, data, caption, *rest in samples:
            members = [(f"{key}.{ext}", data)]
            if caption is not None:
                members.append((f"{key}.txt", caption.encode("utf-8")))
            meta = {"key": key, "caption": rest[0] if rest else caption, "status": "success"}
            members.append((f"{key}.json", json.dumps(meta).encode()))
            for name, payload in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(payload)
                tar.addfile(ti, io.BytesIO(payload))


# ------------------------------------------------------------------------------------------------------ pattern


@pytest.mark.parametrize("text, hit", [
    ("elon musk", True), ("Elon  Musk", True), ("ELON_MUSK", True), ("a photo of Elon Musk.", True),
    ("Elon Musk's car", True), ("photo_of_elon__musk_2019", True), ("Elon\tMusk", True), ("(elon musk)", True),
    ("elonmusk", False), ("Elon Muskrat", False), ("xElon Musk", False), ("Elon", False), ("Musk Elon", False),
    ("Elon-Musk", False), ("Elon Musk1", False),
])
def test_concept_pattern(text, hit):
    assert bool(concept_pattern("Elon_Musk").search(text)) is hit
    assert bool(concept_pattern("elon   musk").search(text)) is hit


def test_concept_pattern_escapes_and_rejects_blank():
    assert concept_pattern("C++").search("I write C++ code") and not concept_pattern("C++").search("CC")
    assert concept_pattern("kite").search("A KITE.") and not concept_pattern("kite").search("kites")
    for blank in ("", "  ", "_ _", "\t"):
        with pytest.raises(LetheError, match="empty"):
            concept_pattern(blank)


# ------------------------------------------------------------------------------------------------------ sources


def test_webdataset_shards_by_brace_pattern(tmp_path):
    a, b, c = _img(1), _img(2), _img(3)
    _laion_shard(tmp_path / "00000.tar", [("000000000", "jpg", _encode(a, "JPEG"), "Elon Musk on stage"),
                                          ("000000001", "png", _encode(b, "PNG"), "a red car")])
    _laion_shard(tmp_path / "00001.tar", [("000010000", "webp", _encode(c, "WEBP"), "ELON_MUSK, again"),
                                          ("000010001", "jpg", _encode(a, "JPEG"), None, "in json only"),
                                          ("000010002", "jpg", _encode(a, "JPEG"), None, None)])  # no caption
    spec = str(tmp_path / "{00000..00001}.tar")
    pairs = list(iter_source(spec))
    assert [k for k, _, _ in pairs] == ["000000000", "000000001", "000010000", "000010001"]
    assert [c for _, _, c in pairs] == ["Elon Musk on stage", "a red car", "ELON_MUSK, again", "in json only"]
    assert all(isinstance(img, bytes) for _, img, _ in pairs)  # nothing decoded
    assert pairs[1][1] == _encode(b, "PNG")
    assert [image_format(img) for _, img, _ in pairs] == ["jpg", "png", "webp", "jpg"]
    sel = select(iter_source(spec), concept_pattern("Elon Musk"))
    assert [k for k, _, _ in sel.matched] == ["000000000", "000010000"] and sel.scanned == 4 and sel.exhausted

    with pytest.raises(LetheError, match=r"1 of 3 tar shards not found: .*00002\.tar"):
        iter_source(str(tmp_path / "{00000..00002}.tar"))
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(LetheError, match="bad.tar: not a readable webdataset tar"):
        list(iter_source(str(tmp_path / "bad.tar")))


def test_parquet_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a, b = _encode(_img(4), "PNG"), _encode(_img(5), "JPEG")
    pq.write_table(pa.table({"key": ["k0", "k1", "k2", "k3"],
                             "caption": ["Taylor Swift sings", None, "a cat", "taylor_swift poster"],
                             "jpg": [a, b, None, b], "status": ["success", "success", "failed", "success"]}),
                   tmp_path / "part.parquet", row_group_size=2)
    pairs = list(iter_source(str(tmp_path / "part.parquet")))
    assert pairs == [("k0", a, "Taylor Swift sings"), ("k3", b, "taylor_swift poster")]  # failed rows skipped

    # TEXT column, HF-style {"bytes"} image cells, no key column: row indices
    pq.write_table(pa.table({"TEXT": ["x", "y"], "image": [{"bytes": a, "path": None}, {"bytes": b, "path": None}]}),
                   tmp_path / "hf.parquet")
    assert list(iter_source(str(tmp_path / "hf.parquet"))) == [("0", a, "x"), ("1", b, "y")]

    pq.write_table(pa.table({"URL": ["http://x"], "TEXT": ["x"]}), tmp_path / "meta.parquet")
    with pytest.raises(LetheError, match="meta.parquet: no image column .*img2dataset"):
        list(iter_source(str(tmp_path / "meta.parquet")))


def test_image_folder_with_txt_sidecars(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    _img(6).save(root / "a.png")
    (root / "a.txt").write_text("Mickey Mouse waves\n", encoding="utf-8")
    _img(7).save(root / "sub" / "b.jpg")
    (root / "sub" / "b.txt").write_text("a mouse", encoding="utf-8")
    _img(8).save(root / "nocap.png")  # no caption: skipped
    (root / "notes.txt").write_text("not an image caption", encoding="utf-8")
    pairs = list(iter_source(str(root)))
    assert pairs == [("a.png", root / "a.png", "Mickey Mouse waves"), ("sub/b.jpg", root / "sub" / "b.jpg", "a mouse")]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LetheError, match="no image with a same-stem .txt caption"):
        list(iter_source(str(empty)))


def test_image_folder_with_captions_jsonl(tmp_path):
    root = tmp_path / "imgs"
    (root / "x").mkdir(parents=True)
    _img(9).save(root / "x" / "p.png")
    _img(10).save(root / "q.jpg")
    lines = [{"image": "x/p.png", "caption": UNICODE_CAPTION}, {"image": "q.jpg", "caption": "plain"}]
    (root / "captions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines),
                                         encoding="utf-8")
    (root / "q.txt").write_text("ignored: captions.jsonl wins", encoding="utf-8")
    assert list(iter_source(str(root))) == [("x/p.png", root / "x" / "p.png", UNICODE_CAPTION),
                                            ("q.jpg", root / "q.jpg", "plain")]
    with open(root / "captions.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"image": "gone.png", "caption": "c"}) + "\n")
    with pytest.raises(LetheError, match=r"captions.jsonl:3: image .*gone.png not found"):
        list(iter_source(str(root)))


def test_toy_world_source(toy_world):
    truth = load_toy_retrieval(toy_world, "train")
    pat = concept_pattern("kite")
    pairs = list(iter_source(f"toy:{toy_world}", pat))
    assert [k for k, _, _ in pairs] == truth.keys and len(pairs) == 120
    n_hits = 0
    for i, (key, img, cap) in enumerate(pairs):
        caps = [truth.texts[j] for j in truth.img2txt[i]]
        hits = [c for c in caps if pat.search(c)]
        assert cap == (hits[0] if hits else caps[0]) and Path(img) == Path(truth.images[i])
        n_hits += bool(hits)
    assert n_hits > 0 and n_hits == sum(bool(pat.search(c)) for _, _, c in pairs)
    # without a pattern: first captions; an explicit split
    assert [c for _, _, c in iter_source(f"toy:{toy_world}")] == [truth.texts[c[0]] for c in truth.img2txt]
    assert len(list(iter_source(f"toy:{toy_world}:val"))) == 24
    with pytest.raises(LetheError, match="toy splits present"):
        iter_source(f"toy:{toy_world}:nosuch")


def test_unknown_or_missing_source(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    for spec, msg in [(str(tmp_path / "notes.csv"), "unknown source"), (str(tmp_path / "nope"), "not found"),
                      ("toy:" + str(tmp_path / "nope"), "not found"), ("", "empty source")]:
        with pytest.raises(LetheError, match=msg):
            iter_source(spec)


# ---------------------------------------------------------------------------------------------------- selection


def test_cap_stops_the_scan():
    pattern = concept_pattern("Elon Musk")
    served = []

    def source():
        for i in range(100):
            if len(served) >= 5:
                raise AssertionError("advanced past the cap")
            served.append(i)
            yield f"k{i}", b"", ("Elon Musk" if i % 2 == 0 else "someone else")  # matches at 0, 2, 4

    sel = select(source(), pattern, cap=3)
    assert [k for k, _, _ in sel.matched] == ["k0", "k2", "k4"]
    assert sel.scanned == 5 and served == [0, 1, 2, 3, 4] and not sel.exhausted and sel.rest == []

    # keep_rest: the scan goes on until both are full, no further
    served.clear()
    sel = select(source(), pattern, cap=2, keep_rest=2)
    assert [k for k, _, _ in sel.matched] == ["k0", "k2"] and [k for k, _, _ in sel.rest] == ["k1", "k3"]
    assert sel.scanned == 4

    sel = select(iter([("a", b"", "x"), ("b", b"", "Elon  musk")]), pattern, cap=None)
    assert sel.exhausted and sel.scanned == 2 and [k for k, _, _ in sel.matched] == ["b"]
    with pytest.raises(LetheError):
        select(iter([]), pattern, cap=0)


# ------------------------------------------------------------------------------------------------- round trips


def test_write_tar_round_trips_through_load_pairs(tmp_path):
    png_a, png_b = _img(11, (13, 5)), _img(12)
    jpg = _encode(_img(13), "JPEG")
    (tmp_path / "f.png").write_bytes(_encode(png_b, "PNG"))
    bmp_as_unknown = _encode(_img(14), "TIFF")  # not a known tar image format: stored as PNG
    pairs = [("sub/one.two.png", _encode(png_a, "PNG"), UNICODE_CAPTION),
             ("file", tmp_path / "f.png", "  leading and trailing spaces \n"),
             ("j", jpg, "jpeg bytes kept as they are"),
             ("sub_one_two", bmp_as_unknown, "a key that clashes after sanitizing")]
    out = tmp_path / "out" / "forget.tar"
    keys = write_tar(pairs, out)
    assert keys == ["sub_one_two", "file", "j", "sub_one_two_1"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["forget.tar"]  # no temporary left behind
    with tarfile.open(out) as t:
        names = t.getnames()
    assert names == ["sub_one_two.png", "sub_one_two.txt", "file.png", "file.txt", "j.jpg", "j.txt",
                     "sub_one_two_1.png", "sub_one_two_1.txt"]

    split = load_pairs(str(out))
    assert isinstance(split, RetrievalSplit) and split.keys == keys and split.n_pairs == 4
    assert split.texts == [c for _, _, c in pairs]  # byte-identical captions
    assert all(isinstance(im, BytesImage) for im in split.images)
    assert np.array_equal(_pixels(split.image(0)), _pixels(png_a))
    assert np.array_equal(_pixels(split.image(1)), _pixels(png_b))
    assert split.images[2].data == jpg
    assert np.array_equal(_pixels(split.image(3)), _pixels(Image.open(io.BytesIO(bmp_as_unknown))))

    # a tar of webdataset's own reader sees the same samples
    import webdataset as wds

    samples = list(wds.WebDataset(str(out), shardshuffle=False))
    assert [s["__key__"] for s in samples] == keys
    assert [s["txt"].decode("utf-8") for s in samples] == split.texts


def test_load_pairs_sources_and_bytes_image_errors(tmp_path, toy_world):
    toy = load_pairs(f"toy:{toy_world}:val")
    truth = load_toy_retrieval(toy_world, "val")
    assert toy.keys == truth.keys and toy.texts == [truth.texts[c[0]] for c in truth.img2txt]
    assert np.array_equal(_pixels(toy.image(0)), _pixels(truth.image(0)))

    bad = BytesImage(b"\x89PNG\r\n\x1a\n broken", "shard.tar [k7]")
    with pytest.raises(LetheError, match=r"shard.tar \[k7\]: cannot decode image"):
        bad.load()
    split = RetrievalSplit.from_groups("s", ["k7"], [bad], [["c"]])
    with pytest.raises(LetheError, match=r"k7\]: cannot decode"):
        split.image(0)
    assert sanitize_key("a.b/c d.JPG") == "a_b_c_d" and sanitize_key("...") == "_"


# ---------------------------------------------------------------------------------------------------------- CLI


def _cli():
    from slug.create_forget_set import main

    return main


def test_cli_writes_forget_and_retain_tars(tmp_path, capsys):
    a, b, c = _img(20), _img(21), _img(22)
    _laion_shard(tmp_path / "00000.tar", [("0", "png", _encode(a, "PNG"), "Elon Musk at a launch"),
                                          ("1", "png", _encode(b, "PNG"), "a rocket"),
                                          ("2", "png", _encode(c, "PNG"), UNICODE_CAPTION)])
    _laion_shard(tmp_path / "00001.tar", [("3", "png", _encode(a, "PNG"), "elon_musk again")])
    out = tmp_path / "tars" / "{name}.tar"
    rc = _cli()(["--name", "Elon_Musk", "--source", str(tmp_path / "{00000..00001}.tar"), "--n_imgs", "2",
                 "--out", str(out), "--exclude_out", str(tmp_path / "tars" / "retain.tar"), "--n_retain", "1"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "scanned 3 samples" in printed and "2 match 'Elon_Musk'" in printed
    forget = tmp_path / "tars" / "Elon_Musk.tar"
    assert f"wrote 2 pairs -> {forget}" in printed
    f = load_pairs(str(forget))
    assert f.keys == ["0", "2"] and f.texts == ["Elon Musk at a launch", UNICODE_CAPTION]
    assert np.array_equal(_pixels(f.image(1)), _pixels(c))
    r = load_pairs(str(tmp_path / "tars" / "retain.tar"))
    assert r.keys == ["1"] and r.texts == ["a rocket"]


def test_cli_toy_world_end_to_end(tmp_path, toy_world, capsys):
    out, retain = tmp_path / "kite.tar", tmp_path / "retain.tar"
    assert _cli()(["--name", "kite", "--source", f"toy:{toy_world}", "--n_imgs", "0", "--out", str(out),
                   "--exclude_out", str(retain), "--n_retain", "1000"]) == 0
    pat = concept_pattern("kite")
    truth = load_toy_retrieval(toy_world, "train")
    has = [any(pat.search(truth.texts[j]) for j in caps) for caps in truth.img2txt]
    f, r = load_pairs(str(out)), load_pairs(str(retain))
    assert f.n_images == sum(has) and r.n_images == len(has) - sum(has)
    assert all(pat.search(t) for t in f.texts) and not any(pat.search(t) for t in r.texts)
    assert f"scanned 120 samples in toy:{toy_world}: {sum(has)} match 'kite'" in capsys.readouterr().out


def test_cli_no_match_unknown_source_and_bad_flag(tmp_path, toy_world, capsys):
    out = tmp_path / "z.tar"
    rc = _cli()(["--name", "Zebra Crossing", "--source", f"toy:{toy_world}", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: no caption in toy:{toy_world} matches 'Zebra Crossing' (scanned 120 samples)"]
    assert not out.exists() and list(tmp_path.iterdir()) == []

    rc = _cli()(["--name", "x", "--source", str(tmp_path / "nothing.tar"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "nothing.tar" in err[0]
    (tmp_path / "data.csv").write_text("x")
    rc = _cli()(["--name", "x", "--source", str(tmp_path / "data.csv"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown source" in err[0] and "data.csv" in err[0]
    assert not out.exists()

    rc = _cli()(["--name", "x", "--sorce", "y"])
    assert rc == 2 and capsys.readouterr().err.strip() == "error: unknown flag --sorce (did you mean --source?)"
