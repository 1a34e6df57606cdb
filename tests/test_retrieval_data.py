"""common.retrieval.data: Karpathy / SALMUBench / toy loaders, verbatim captions, forget/retain selection."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import LetheError
from common.retrieval import (DatasetImage, RetrievalSplit, forget_by_concepts, forget_by_keys, load_karpathy,
                              load_salmubench, load_toy_retrieval, sample_forget)

PII = "Reach john.doe@mail.com or +1 (555) 010-9999."
TRICKY = [PII, "  Zoë's IBAN: DE89 3704 0044 0532 0130 00  ", "Call +1 (555) 010-9999!\tNOW"]


def _png(path: Path, value: int, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------------------- Karpathy


def _karpathy(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    entries = [
        ("train2014", "t1.jpg", "train", ["A man, riding a horse.", "  two spaces  "], 1),
        ("val2014", "r1.jpg", "restval", ["Restval ONE."], 2),
        ("val2014", "v1.jpg", "val", ["a val image"], 3),
        ("val2014", "e1.jpg", "test", ["x", "y", "z"], 4),
        ("val2014", "e2.jpg", "test", [PII], 5),
    ]
    images = []
    for k, (fp, fn, split, caps, cid) in enumerate(entries):
        _png(root / fp / fn, 20 * k)
        images.append({"filepath": fp, "filename": fn, "split": split, "cocoid": cid,
                       "sentences": [{"raw": c, "tokens": c.lower().split()} for c in caps]})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}), encoding="utf-8")
    return path


def test_karpathy_round_trip_train_includes_restval(tmp_path):
    path = _karpathy(tmp_path)
    root = tmp_path / "coco"
    train = load_karpathy(path, root, "train")
    assert train.keys == ["train2014/t1.jpg", "val2014/r1.jpg"]
    assert train.texts == ["A man, riding a horse.", "  two spaces  ", "Restval ONE."]
    assert train.txt2img == [0, 0, 1] and train.img2txt == [[0, 1], [2]]
    assert [m["karpathy_split"] for m in train.metadata] == ["train", "restval"]
    assert [m["image_id"] for m in train.metadata] == [1, 2]
    assert len(train) == 2 and train.n_pairs == 3 and train.pairs() == [(0, 0), (0, 1), (1, 2)]
    im = train.image(1)
    assert im.mode == "RGB" and im.size == (12, 10) and im.getpixel((0, 0)) == (20, 20, 20)

    test = load_karpathy(path, root, "test")
    assert test.keys == ["val2014/e1.jpg", "val2014/e2.jpg"] and test.texts == ["x", "y", "z", PII]
    assert load_karpathy(path, root, "restval").keys == ["val2014/r1.jpg"]
    with pytest.raises(LetheError, match=r"no images in split 'dev' \(splits present: restval, test, train, val\)"):
        load_karpathy(path, root, "dev")


def test_karpathy_flickr_layout_and_bad_input(tmp_path):
    root = tmp_path / "flickr"
    _png(root / "100.jpg", 1)
    _png(root / "200.jpg", 2)
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": [
        {"filename": "100.jpg", "imgid": 0, "split": "test", "sentences": [{"raw": "A dog ."}]},
        {"filename": "200.jpg", "imgid": 1, "split": "test", "sentences": [{"raw": "Two cats"}]},
    ]}))
    split = load_karpathy(path, root, "test")
    assert split.keys == ["100.jpg", "200.jpg"] and split.texts == ["A dog .", "Two cats"]
    assert [m["image_id"] for m in split.metadata] == [0, 1]

    (root / "200.jpg").unlink()
    with pytest.raises(LetheError) as e:
        load_karpathy(path, root, "test")
    assert str(path) in str(e.value) and "images[1]" in str(e.value) and "200.jpg" in str(e.value)
    assert "1 of 2 images not found" in str(e.value)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"filename": "100.jpg", "split": "test", "sentences": [{"tokens": []}]}]}))
    with pytest.raises(LetheError, match=r"bad\.json: images\[0\]\.sentences\[0\] \(100\.jpg\): no 'raw' string"):
        load_karpathy(bad, root, "test")
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(LetheError, match="Karpathy split file"):
        load_karpathy(bad, root, "test")


# -------------------------------------------------------------------------------------------------- SALMUBench


def _salmu_rows(tmp_path: Path):
    """Three forget rows (x.png has two captions) and one retain row, with PIL images."""
    ims = [Image.fromarray(np.full((10, 14, 3), v, dtype=np.uint8)) for v in (10, 200, 60)]
    forget = {"image": [ims[0], ims[1], ims[0]], "text": TRICKY, "identity_id": [7, 9, 7],
              "file_name": ["x.png", "y.png", "x.png"]}
    retain = {"image": [ims[2]], "text": ["An ordinary caption."], "identity_id": [3], "file_name": ["z.png"]}
    return forget, retain


def _check_forget(split: RetrievalSplit):
    assert split.name == "forget" and split.keys == ["x.png", "y.png"]
    assert [t.encode() for t in split.texts] == [TRICKY[0].encode(), TRICKY[2].encode(), TRICKY[1].encode()]
    assert split.img2txt == [[0, 1], [2]] and split.txt2img == [0, 0, 1]
    assert [m["identity_id"] for m in split.metadata] == [7, 9]
    assert split.image(0).getpixel((0, 0)) == (10, 10, 10) and split.image(1).getpixel((3, 3)) == (200, 200, 200)
    assert "john.doe@mail.com" in split.texts[0] and "+1 (555) 010-9999" in split.texts[0]


def test_salmubench_from_save_to_disk_and_parquet(tmp_path, monkeypatch):
    import datasets

    forget, retain = _salmu_rows(tmp_path)
    feats = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                               "identity_id": datasets.Value("int64"), "file_name": datasets.Value("string")})
    dd = datasets.DatasetDict({"forget": datasets.Dataset.from_dict(forget, features=feats),
                               "retain_synth": datasets.Dataset.from_dict(retain, features=feats)})
    dd.save_to_disk(str(tmp_path / "dd"))
    decoded = []
    decode = datasets.Image.decode_example
    monkeypatch.setattr(datasets.Image, "decode_example",
                        lambda self, *a, **k: decoded.append(1) or decode(self, *a, **k))
    split = load_salmubench(tmp_path / "dd", "forget")
    assert all(isinstance(s, DatasetImage) for s in split.images) and not decoded  # decoded only when asked for
    split.image(1)
    assert len(decoded) == 1
    _check_forget(split)
    assert load_salmubench(tmp_path / "dd", "retain_synth").texts == ["An ordinary caption."]
    with pytest.raises(LetheError, match=r"no split 'holdout_identity' \(splits: forget, retain_synth\)"):
        load_salmubench(tmp_path / "dd", "holdout_identity")

    dd["forget"].save_to_disk(str(tmp_path / "one" / "forget"))  # a Dataset per split
    _check_forget(load_salmubench(tmp_path / "one", "forget"))

    (tmp_path / "hub" / "data").mkdir(parents=True)  # hub-style parquet shards
    dd["forget"].to_parquet(str(tmp_path / "hub" / "data" / "forget-00000-of-00001.parquet"))
    _check_forget(load_salmubench(tmp_path / "hub", "forget", cache_dir=tmp_path / "hf_cache"))
    with pytest.raises(LetheError, match="splits present: forget"):
        load_salmubench(tmp_path / "hub", "retain_synth")


def test_salmubench_from_image_folder_and_jsonl(tmp_path):
    root = tmp_path / "salmu"
    _png(root / "forget" / "x.png", 10)
    _png(root / "forget" / "y.png", 200)
    rows = [{"file_name": "x.png", "text": TRICKY[0], "identity_id": 7},
            {"file_name": "x.png", "text": TRICKY[1], "identity_id": 7},
            {"image": "forget/y.png", "text": TRICKY[2], "identity_id": 9}]
    (root / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = load_salmubench(root, "forget")
    assert split.keys == ["x.png", "forget/y.png"]
    assert [t.encode() for t in split.texts] == [t.encode() for t in TRICKY]
    assert [m["identity_id"] for m in split.metadata] == [7, 9]
    assert split.image(1).getpixel((0, 0)) == (200, 200, 200)

    rows = [dict(r, file_name="forget/" + r.get("file_name", "y.png")) for r in rows[:2]]
    rows += [{"file_name": "forget/y.png", "text": "c", "identity_id": 9},
             {"file_name": "gone1.png", "text": "a", "identity_id": 1},
             {"file_name": "gone2.png", "text": "b", "identity_id": 1}]
    (root / "holdout_identity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(LetheError) as e:
        load_salmubench(root, "holdout_identity")
    msg = str(e.value)
    assert msg.startswith(str(root / "holdout_identity.jsonl")) and "2 of 5 images not found" in msg
    assert "line 4" in msg and "line 5" in msg and "gone1.png" in msg and "gone2.png" in msg

    (root / "retain_synth.jsonl").write_text('{"file_name": "forget/x.png", "text": "ok"}\n{"file_name": "x.png"}\n')
    with pytest.raises(LetheError, match=r"retain_synth\.jsonl:2: no 'text' string"):
        load_salmubench(root, "retain_synth")
    with pytest.raises(LetheError, match="splits present: forget, holdout_identity, retain_synth"):
        load_salmubench(root, "holdout_association")


# ------------------------------------------------------------------------------------------- forget selection


def _synthetic(n: int = 10) -> RetrievalSplit:
    caps = [[f"img{i} cap{j}" for j in range(1 + i % 3)] for i in range(n)]
    return RetrievalSplit.from_groups("s", [f"dir/img{i}.png" for i in range(n)],
                                      [f"/nowhere/img{i}.png" for i in range(n)], caps,
                                      [{"image_id": 100 + i} for i in range(n)])


def test_sample_forget_is_seeded_and_by_image():
    split = _synthetic()
    df, dr = sample_forget(split, 4, seed=42)
    again, _ = sample_forget(split, 4, seed=42)
    assert df.keys == again.keys and df.texts == again.texts
    want = sorted(np.random.default_rng(42).choice(10, size=4, replace=False).tolist())
    assert df.keys == [split.keys[i] for i in want]
    assert sample_forget(split, 4, seed=1)[0].keys != df.keys
    assert len(df) == 4 and len(dr) == 6 and set(df.keys).isdisjoint(dr.keys)
    assert set(df.keys) | set(dr.keys) == set(split.keys)
    assert df.n_pairs + dr.n_pairs == split.n_pairs
    for part in (df, dr):  # every caption of an image goes with it, re-indexed consistently
        for i, key in enumerate(part.keys):
            own = split.img2txt[split.index(key)]
            assert [part.texts[j] for j in part.img2txt[i]] == [split.texts[j] for j in own]
    assert df.metadata == [split.metadata[i] for i in want]
    with pytest.raises(LetheError, match=r"df_size 11 .* \(10\)"):
        sample_forget(split, 11, seed=0)


def test_forget_by_keys(tmp_path):
    split = _synthetic()
    df, dr = forget_by_keys(split, ["dir/img3.png", "forget/img5.png", "107"])  # exact, by file name, by image id
    assert df.keys == ["dir/img3.png", "dir/img5.png", "dir/img7.png"] and len(dr) == 7
    lst = tmp_path / "image-42.txt"
    lst.write_text("dir/img1.png\n\nnope/missing_a.png\nmissing_b.png\n")
    with pytest.raises(LetheError) as e:
        forget_by_keys(split, lst)
    msg = str(e.value)
    assert msg.startswith(str(lst)) and "2 of 3 keys" in msg and "'nope/missing_a.png'" in msg
    assert "'missing_b.png'" in msg
    lst.write_text("dir/img1.png\ndir/img2.png\n")
    assert forget_by_keys(split, lst)[0].keys == ["dir/img1.png", "dir/img2.png"]


# ------------------------------------------------------------------------------------------------------ toy


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from common.toy.world import WorldConfig, generate

    out = tmp_path_factory.mktemp("toy_retrieval")
    generate(out, WorldConfig(seed=0, n_train=16, n_val=6, pope_images=2, mme_per_subtask=1, gqa_images=2,
                              sqa_train=1, sqa_val=1, sqa_test=1, qbench=1), log=lambda *_: None)
    return out


def test_toy_loader_and_forget_by_concepts(toy):
    split = load_toy_retrieval(toy, "train")
    caps = json.loads((toy / "annotations" / "captions_train.json").read_text())
    inst = json.loads((toy / "annotations" / "instances_train.json").read_text())
    assert len(split) == 16 and split.n_pairs == 80 and all(len(c) == 5 for c in split.img2txt)
    assert split.keys[0] == "toy_train_000000000001.png" and split.image(0).size == (64, 64)
    assert split.texts == [a["caption"] for a in caps["annotations"]]
    names = {c["id"]: c["name"] for c in inst["categories"]}
    for i, m in enumerate(split.metadata):
        assert m["categories"] == sorted({names[a["category_id"]] for a in inst["annotations"]
                                          if a["image_id"] == m["image_id"]})

    concept = max(names.values(), key=lambda n: sum(n in m["categories"] for m in split.metadata))
    df, dr = forget_by_concepts(split, [concept])
    assert 0 < len(df) < len(split) and len(df) + len(dr) == len(split)
    assert all(concept in m["categories"] for m in df.metadata)
    assert not any(concept in m["categories"] for m in dr.metadata)
    assert df.n_pairs == 5 * len(df)
    with pytest.raises(LetheError, match=r"unknown concept\(s\) 'dragon' .*known: .*" + concept):
        forget_by_concepts(split, ["dragon"])
    with pytest.raises(LetheError, match="toy splits present: train, val"):
        load_toy_retrieval(toy, "test")
