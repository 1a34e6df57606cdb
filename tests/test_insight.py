"""EFUF data construction (insight/): sliding-window CLIP scores and object extraction, units and CLIs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.models import load_model
from insight.clip import WindowScorer, window_layout
from insight.clip import main as clip_main
from insight.object import main as object_main
from insight.object import parse_llm_objects


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rand_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


# ============================================================================================== window_layout
def test_window_layout_coco_sized_image():
    boxes, avg = window_layout(480, 640, 48, 4)  # height, width
    assert len(boxes) == 77  # (10 - 4 + 1) rows × (14 - 4 + 1) columns
    assert avg.shape == (10 * 14, 77)
    assert torch.allclose(avg.sum(1), torch.ones(140), atol=1e-6)
    # boxes go row by row, at a stride of one patch, each 192 px square
    assert boxes[0] == (0, 0, 192, 192) and boxes[1] == (48, 0, 240, 192) and boxes[10] == (480, 0, 672 - 32, 192)
    assert boxes[11] == (0, 48, 192, 240) and boxes[-1] == (480, 288, 640, 480)
    assert all(r - left == 192 - (32 if left == 480 else 0) and b - t == 192 for left, t, r, b in boxes)
    # coverage: a corner patch lies in exactly one window, an inner patch in window² windows
    counts = (avg > 0).sum(1).reshape(10, 14)
    assert counts[0, 0] == counts[0, 13] == counts[9, 0] == counts[9, 13] == 1
    assert avg[0].max() == 1.0 and avg[0, 0] == 1.0
    assert counts[5, 5] == 16 and torch.allclose(avg[5 * 14 + 5][avg[5 * 14 + 5] > 0], torch.full((16,), 1 / 16))
    # the same counts as the original's int coverage mask
    mask = torch.zeros(10, 14, dtype=torch.int32)
    for i in range(7):
        for j in range(11):
            mask[i:i + 4, j:j + 4] += 1
    assert torch.equal(counts.to(torch.int32), mask)


def test_window_layout_partial_patches_and_too_small_images():
    # 150 px = 3 full patches of 48 + a partial one: 4 (ceil) patches, so one window, clipped to the image
    boxes, avg = window_layout(150, 150, 48, 4)
    assert boxes == [(0, 0, 150, 150)] and avg.shape == (16, 1) and torch.equal(avg, torch.ones(16, 1))
    # fewer than `window` patches in a dimension: no window
    for h, w in [(144, 640), (480, 100), (20, 20), (1, 1)]:
        boxes, avg = window_layout(h, w, 48, 4)
        assert boxes == [] and avg.numel() == 0
    boxes, _ = window_layout(145, 193, 48, 4)  # 4 × 5 patches → 1 × 2 windows
    assert boxes == [(0, 0, 192, 145), (48, 0, 193, 145)]


# ============================================================================================== WindowScorer
@pytest.fixture(params=["open_clip", "clip"])
def clip(request, tiny_dir):
    return load_model("clip", tiny_dir(request.param), device="cpu")


def _hand_scores(clip, image: Image.Image, objects: list[str], patch: int, window: int, k: int) -> list[float]:
    """The window score spread to patches by hand: loops, a coverage count, then the top-k patch mean."""
    arr = np.asarray(image)
    ph, pw = -(-arr.shape[0] // patch), -(-arr.shape[1] // patch)
    crops, where = [], []
    for i in range(ph - window + 1):
        for j in range(pw - window + 1):
            crops.append(Image.fromarray(arr[i * patch:(i + window) * patch, j * patch:(j + window) * patch]))
            where.append((i, j))
    with torch.no_grad():
        img = clip.encode_image(clip.preprocess(crops))
        txt = clip.encode_text([f"A photo containing {o}." for o in objects])
        sims = (clip.logit_scale * img @ txt.T).tolist()  # [windows, objects]
    out = []
    for o in range(len(objects)):
        total, count = np.zeros((ph, pw)), np.zeros((ph, pw))
        for (i, j), s in zip(where, sims):
            total[i:i + window, j:j + window] += s[o]
            count[i:i + window, j:j + window] += 1
        patch_scores = sorted((total / count).ravel().tolist(), reverse=True)
        out.append(sum(patch_scores[:k]) / k)
    return out


def test_window_scorer_equals_hand_computation(clip):
    image = _rand_image(70, 50, seed=1)  # 5 × 7 patches of 10 (the last column partial) → 2 × 4 windows
    objects = ["cat", "red ball", "tennis racket"]
    want = _hand_scores(clip, image, objects, patch=10, window=4, k=4)
    got = WindowScorer(clip, patch_size=10, window_size=4, average_top_k=4).score_images([image], [objects])
    assert len(got) == 1 and len(got[0]) == 3
    assert got[0] == pytest.approx(want, abs=1e-5)
    assert len({round(s, 4) for s in want}) == 3  # the objects really get different scores
    # top-k 1 is the best patch, which with window 4 over 2 × 4 windows is the best window average
    best = WindowScorer(clip, 10, 4, 1).score_images([image], [objects])[0]
    assert best == pytest.approx(_hand_scores(clip, image, objects, 10, 4, 1), abs=1e-5)
    assert all(b >= s - 1e-6 for b, s in zip(best, got[0]))


def test_window_scorer_batches_many_images_and_counts_text_encodes(clip, monkeypatch):
    images = [_rand_image(70, 50, 1), _rand_image(25, 90, 2), _rand_image(64, 64, 3), _rand_image(90, 41, 4)]
    objects = [["cat", "dog"], ["dog", "[cat]"], ["kite", "cat", "dog"], ["kite"]]
    calls: list[list[str]] = []
    encode_text = clip.encode_text

    def counting(texts, *args, **kwargs):
        calls.append(list(texts))
        return encode_text(texts, *args, **kwargs)

    monkeypatch.setattr(clip, "encode_text", counting)
    scorer = WindowScorer(clip, patch_size=10, window_size=4, average_top_k=4, batch_size=3)
    got = scorer.score_images(images, objects)
    encoded = [t for c in calls for t in c]
    assert sorted(encoded) == sorted(f"A photo containing {o}." for o in ("cat", "dog", "kite"))  # each once
    # 25 px wide = 3 patches < window: no score for that image
    assert got[1] == [None, None]
    for im, objs, g in zip(images, objects, got):
        if im.width >= 31 and im.height >= 31:
            want = _hand_scores(clip, im, [o.strip("[]") for o in objs], 10, 4, 4)
            assert g == pytest.approx(want, abs=1e-5)
    assert all(np.isfinite(x) for g in got for x in g if x is not None)
    # a second call with the same scorer encodes nothing new; batch size does not change the scores
    calls.clear()
    again = WindowScorer.score_images(scorer, images, objects)
    assert calls == []
    big = WindowScorer(clip, 10, 4, 4, batch_size=256).score_images(images, objects)
    for a, b, c in zip(got, again, big):
        assert [x is None for x in a] == [x is None for x in c]
        assert [x for x in a if x is not None] == pytest.approx([x for x in c if x is not None], abs=1e-5)
        assert a == b


def test_window_scorer_long_and_empty_objects_get_none(clip):
    image = _rand_image(60, 60, 5)
    ten = "one two three four five six seven eight nine ten"
    objects = ["dog", ten, ten + " eleven", "", "[]", "[dog]"]
    got = WindowScorer(clip, 10, 4, 4, max_object_words=10).score_images([image], [objects])[0]
    assert got[2] is None and got[3] is None and got[4] is None
    assert got[0] is not None and got[1] is not None
    assert got[5] == got[0]  # brackets (a manual hallucination mark) are stripped
    assert got[1] == pytest.approx(_hand_scores(clip, image, [ten], 10, 4, 4)[0], abs=1e-5)
    assert WindowScorer(clip, 10, 4, 4, max_object_words=11).score_images([image], [[ten + " eleven"]])[0][0] \
        is not None
    assert WindowScorer(clip, 10, 4, 4).score_images([image], [[]]) == [[]]


# ============================================================================================== tensor preprocessing
def _levels(clip) -> torch.Tensor:
    """One uint8 level in each channel of the normalised pixels: 1 / 255 / std."""
    from insight.window_ops import pixel_spec

    return 1 / 255 / torch.tensor(pixel_spec(clip).std).view(1, 3, 1, 1)


ODD_IMAGES = [(70, 50), (33, 47), (101, 77), (41, 90), (31, 31), (25, 90), (64, 64)]  # (width, height)


def test_pixel_spec_reads_the_checkpoints_transform(clip):
    from insight.window_ops import pixel_spec

    spec = pixel_spec(clip)
    if clip.backend == "open_clip":
        size = clip.model.visual.image_size
        norm = clip._preprocess.transforms[-1]
        assert spec.round_crop and (spec.mean, spec.std) == (tuple(norm.mean), tuple(norm.std))
    else:
        size = clip.model.config.vision_config.image_size
        ip = clip.processor.image_processor
        assert not spec.round_crop and (spec.mean, spec.std) == (tuple(ip.image_mean), tuple(ip.image_std))
    size = size[0] if isinstance(size, (tuple, list)) else size
    assert spec.resize == size and spec.out_size == spec.crop == (size, size) and spec.mode == "bicubic"
    assert spec.rescale == pytest.approx(1 / 255)


def test_tensor_path_pixels_and_scores_match_the_pil_path(clip):
    """Odd sizes: partial edge windows (right, bottom, corner), a 31 px image with one window of a 1 px partial patch,
    and a 25 px wide image without any window. Pixels within 1 uint8 level (the resize's rounding; measured: at most
    1, on 0.02 % (open_clip) / 0.6 % (HF) of the values), scores within 2e-3 (measured 3e-5 / 4e-4, logit_scale 14.3),
    None in the same places."""
    images = [_rand_image(w, h, seed=i) for i, (w, h) in enumerate(ODD_IMAGES)]
    objects = [["cat", "dog", "[kite]"], ["red ball"], ["cat", ""], ["dog"], ["kite", "cat"], ["cat"], ["dog"]]
    pil = WindowScorer(clip, patch_size=10, window_size=4, average_top_k=4)
    tensor = WindowScorer(clip, patch_size=10, window_size=4, average_top_k=4, preprocess="tensor")
    assert tensor.amp == "off"  # fp16 autocast is the GPU default only
    prepared = [tensor.prepare(im) for im in images]
    assert all(px.dtype == torch.uint8 and px.shape == (3, im.height, im.width)
               for (px, _), im in zip(prepared, images))
    want, got = pil.window_pixels([pil.prepare(im) for im in images]), tensor.window_pixels(prepared)
    assert got.shape == want.shape and got.dtype == torch.float32
    off = (got - want).abs() / _levels(clip)
    assert off.max() <= 1 + 1e-3 and (off > 0.5).float().mean() < 0.02
    s_pil, s_tensor = pil.score_images(images, objects), tensor.score_images(images, objects)
    assert s_pil[5] == [None] and s_pil[1][0] is not None and s_pil[2][1] is None  # the cases are there
    for a, b in zip(s_pil, s_tensor):
        assert [x is None for x in a] == [x is None for x in b]
        assert [x for x in b if x is not None] == pytest.approx([x for x in a if x is not None], abs=2e-3)
    # under bf16 autocast (on the CPU when asked) the features stay float32 and close
    bf16 = WindowScorer(clip, 10, 4, 4, preprocess="tensor", amp="bf16")
    assert bf16.encode_windows(got[:3]).dtype == torch.float32
    for a, b in zip(s_pil, bf16.score_images(images, objects)):
        assert [x is None for x in a] == [x is None for x in b]
        assert [x for x in b if x is not None] == pytest.approx([x for x in a if x is not None], abs=0.05)


def test_tensor_path_crop_offset_and_resize_follow_each_backend(clip):
    """A 47 × 32 image is not resized (its short side is the model's 32) and center-cropped 7.5 px from the left:
    torchvision's CenterCrop (open_clip) rounds that to 8, HF's processor floors it to 7; on noise a one-pixel shift
    would be far off. A 90 × 61 image goes through both resize passes."""
    from insight.window_ops import decode, pixel_spec

    spec = pixel_spec(clip)
    for w, h in [(47, 32), (90, 61), (32, 200)]:
        image = _rand_image(w, h, seed=w)
        off = (spec(decode(image)[None]) - clip.preprocess([image])).abs() / _levels(clip)
        assert off.max() <= 1 + 1e-3, (w, h)


def test_tensor_path_other_transform_settings(tiny_dir):
    """A shortest side larger than the crop, bilinear, its own mean / std: still the processor's pixels."""
    from transformers.image_utils import PILImageResampling

    from insight.window_ops import decode, pixel_spec

    clip = load_model("clip", tiny_dir("clip"), device="cpu")
    ip = clip.processor.image_processor
    ip.size, ip.resample = type(ip.size)(shortest_edge=40), PILImageResampling.BILINEAR
    ip.image_mean, ip.image_std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    spec = pixel_spec(clip)
    assert (spec.resize, spec.crop, spec.mode, spec.mean) == (40, (32, 32), "bilinear", (0.5, 0.4, 0.3))
    image = _rand_image(77, 51, seed=3)
    off = (spec(decode(image)[None]) - clip.preprocess([image])).abs() / _levels(clip)
    assert off.max() <= 1 + 1e-3


def test_tensor_path_refuses_a_transform_it_does_not_replay(clip):
    from common.errors import LetheError

    if clip.backend == "open_clip":
        from open_clip.transform import image_transform

        clip._preprocess = image_transform(32, is_train=False, resize_mode="longest")  # pads to a square
    else:
        clip.processor.image_processor.do_resize = False
    with pytest.raises(LetheError, match="--preprocess pil"):
        WindowScorer(clip, preprocess="tensor")
    with pytest.raises(LetheError, match="valid: pil, tensor"):
        WindowScorer(clip, preprocess="gpu")
    with pytest.raises(LetheError, match="valid: auto, bf16, fp16, off"):
        WindowScorer(clip, amp="fp8")


# ============================================================================================== insight/clip.py CLI
def _toy_rows(toy_world: Path, n_images: int = 5) -> list[dict]:
    caps = json.loads((toy_world / "annotations" / "captions_train.json").read_text())
    names = {im["id"]: im["file_name"] for im in caps["images"]}
    rows, seen = [], {}
    for ann in caps["annotations"]:
        k = seen.get(ann["image_id"], 0)
        if len(seen) >= n_images and ann["image_id"] not in seen:
            continue
        if k < (2 if ann["image_id"] == caps["images"][0]["id"] else 1):  # two captions of the first image
            rows.append({"image_id": ann["image_id"], "image": names[ann["image_id"]], "caption_id": ann["id"],
                         "caption": ann["caption"]})
        seen[ann["image_id"]] = k + 1
    return rows


@pytest.fixture
def toy_objects(toy_world, tmp_path) -> Path:
    """Captions of toy images → objects jsonl through insight/object.py with the toy world's vocabulary."""
    captions = _write_jsonl(tmp_path / "captions.jsonl", _toy_rows(toy_world))
    out = tmp_path / "objects.jsonl"
    assert object_main(["--captions_path", str(captions), "--output_path", str(out), "--synonyms",
                        str(toy_world / "synonyms.txt"), "--default_merges", "False"]) == 0
    rows = _jsonl(out)
    assert len(rows) == 6 and all(r["objects"] for r in rows)
    return out


def _clip_argv(tiny_dir, toy_world, objects: Path, out: Path, *extra: str) -> list[str]:
    return ["--objects_path", str(objects), "--image_dir", str(toy_world / "images" / "train"),
            "--output_path", str(out), "--clip_path", tiny_dir("open_clip"), "--patch_size", "8",
            "--window_size", "4", "--average_top_k", "4", "--device", "cpu", "--batch_size", "16", *extra]


def test_clip_cli_scores_rows_and_resumes(tiny_dir, toy_world, toy_objects, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, out)) == 0
    rows_in, rows_out = _jsonl(toy_objects), _jsonl(out)
    assert len(rows_out) == len(rows_in) == 6
    for r_in, r_out in zip(rows_in, rows_out):
        assert {k: v for k, v in r_out.items() if k != "scores"} == r_in
        assert len(r_out["scores"]) == len(r_in["objects"]) and all(isinstance(s, float) for s in r_out["scores"])
    # the numbers are the scorer's (and the hand computation's) on the same images
    clip = load_model("clip", tiny_dir("open_clip"), device="cpu")
    images = [Image.open(toy_world / "images" / "train" / r["image"]).convert("RGB") for r in rows_in]
    names = [[o["text"] for o in r["objects"]] for r in rows_in]
    want = WindowScorer(clip, 8, 4, 4).score_images(images, names)
    for r, w in zip(rows_out, want):
        assert r["scores"] == pytest.approx(w, abs=1e-5)
    assert rows_out[0]["scores"] == pytest.approx(_hand_scores(clip, images[0], names[0], 8, 4, 4), abs=1e-5)
    full = out.read_text()
    capsys.readouterr()

    # a re-run with nothing missing does nothing
    assert clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, out)) == 0
    assert "6 already scored, 0 to go" in capsys.readouterr().out and out.read_text() == full

    # the last line lost: only it is scored again, and the file comes back
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:-2]))
    assert clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, out)) == 0
    assert "4 already scored, 2 to go" in capsys.readouterr().out
    again = _jsonl(out)
    assert len(again) == 6
    for a, b in zip(again, rows_out):
        assert {k: v for k, v in a.items() if k != "scores"} == {k: v for k, v in b.items() if k != "scores"}
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)

    # --restart rescores everything
    assert clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, out, "--restart", "True")) == 0
    assert "0 already scored, 6 to go" in capsys.readouterr().out and len(_jsonl(out)) == 6


def test_clip_cli_tensor_preprocessing_gives_the_pil_rows(tiny_dir, toy_world, toy_objects, tmp_path, capsys):
    """``--preprocess tensor`` (workers decode only; windows cut and resized in the main process) writes the same rows
    as ``--preprocess pil`` within 2e-3; ``auto`` on the CPU is ``pil``, to the bit."""
    rows = {}
    for mode in ("pil", "tensor", "auto"):
        out = tmp_path / f"{mode}.jsonl"
        argv = _clip_argv(tiny_dir, toy_world, toy_objects, out, "--preprocess", mode)
        argv[argv.index("--patch_size") + 1] = "10"  # 40 px windows, resized to the model's 32; partial edge ones
        assert clip_main(argv) == 0
        rows[mode] = _jsonl(out)
    assert len(rows["pil"]) == len(rows["tensor"]) == 6 and rows["auto"] == rows["pil"]
    for a, b in zip(rows["pil"], rows["tensor"]):
        assert {k: v for k, v in a.items() if k != "scores"} == {k: v for k, v in b.items() if k != "scores"}
        assert b["scores"] == pytest.approx(a["scores"], abs=2e-3)
    assert rows["tensor"] != rows["pil"]  # really another path: its resize rounds a few pixels differently
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse's own one-line error and status
        clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, tmp_path / "x.jsonl", "--preprocess", "gpu"))
    assert e.value.code == 2 and "invalid choice: 'gpu'" in _error_lines(capsys)[0]


def test_clip_cli_resumes_after_a_line_cut_mid_way(tiny_dir, toy_world, toy_objects, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, out)) == 0
    full = _jsonl(out)
    text = out.read_text()
    out.write_text(text[:len(text) - 25])  # the writer was killed inside the last line
    assert clip_main(_clip_argv(tiny_dir, toy_world, toy_objects, out)) == 0
    again = _jsonl(out)
    assert len(again) == 6 and [r["image"] for r in again] == [r["image"] for r in full]
    for a, b in zip(again, full):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)


def test_clip_cli_images_smaller_than_a_window_get_null(tiny_dir, toy_world, toy_objects, tmp_path):
    out = tmp_path / "scores.jsonl"
    # 64 px with patch 24 → 3 patches < window 4: the original's "no score"
    argv = _clip_argv(tiny_dir, toy_world, toy_objects, out)
    argv[argv.index("--patch_size") + 1] = "24"
    assert clip_main(argv) == 0
    rows = _jsonl(out)
    assert len(rows) == 6 and all(r["scores"] == [None] * len(r["objects"]) for r in rows)


def test_clip_cli_malformed_objects_line(tiny_dir, toy_world, toy_objects, tmp_path, capsys):
    lines = toy_objects.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], '{"image": "x.png", "objects": [', *lines[2:]]) + "\n")
    assert clip_main(_clip_argv(tiny_dir, toy_world, bad, tmp_path / "o.jsonl")) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and f"{bad}:3:" in err[0] and "malformed" in err[0]
    bad.write_text("\n".join([lines[0], json.dumps({"image": "x.png", "objects": "cat, dog"})]) + "\n")
    assert clip_main(_clip_argv(tiny_dir, toy_world, bad, tmp_path / "o.jsonl")) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and f"{bad}:2:" in err[0] and "'objects' list" in err[0]
    assert not (tmp_path / "o.jsonl").exists()


def test_clip_cli_bad_row_line_number_counts_blank_lines(tiny_dir, toy_world, toy_objects, tmp_path, capsys):
    first = toy_objects.read_text().splitlines()[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(first + "\n\n" + json.dumps({"image": "x.png"}) + "\n")
    assert clip_main(_clip_argv(tiny_dir, toy_world, bad, tmp_path / "o.jsonl")) == 2
    assert f"{bad}:3:" in _error_lines(capsys)[0]


@pytest.mark.parametrize("preprocess", ["pil", "tensor"])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_clip_cli_bad_image_is_one_line_naming_it_and_its_row(problem, workers, preprocess, tiny_dir, toy_world,
                                                              toy_objects, tmp_path, capsys):
    """A missing or undecodable image, decoded in a DataLoader worker or in the main process: one ``error:`` line
    with the image path and the objects file line (no worker traceback); the rows scored before it are kept."""
    import shutil

    image_dir = tmp_path / "images"
    shutil.copytree(toy_world / "images" / "train", image_dir)
    rows = _jsonl(toy_objects)
    bad_row = 4  # line 4 of the objects file: a later image than the first chunks
    bad_image = image_dir / rows[bad_row - 1]["image"]
    if problem == "missing":
        bad_image.unlink()
    else:
        bad_image.write_bytes(b"this is not an image")
    out = tmp_path / "scores.jsonl"
    argv = _clip_argv(tiny_dir, toy_world, toy_objects, out, "--num_workers", str(workers), "--batch_size", "8",
                      "--preprocess", preprocess)
    argv[argv.index("--image_dir") + 1] = str(image_dir)
    assert clip_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    what = "image not found" if problem == "missing" else "cannot decode image"
    assert lines == [f"error: {bad_image}: {what}" + ("" if problem == "missing" else " (UnidentifiedImageError)")
                     + f" (listed at {toy_objects}:{bad_row})"]
    scored = _jsonl(out)  # one image per chunk at --batch_size 8: the rows before the bad one were written
    assert [r["image"] for r in scored] == [r["image"] for r in rows[:bad_row - 1]]


# ============================================================================================== insight/object.py vocab
COCO_ROWS = [
    {"image_id": 1, "image": "a.jpg", "caption": "A man riding a bicycle next to two dogs and a teddy bear."},
    {"image_id": 2, "image": "b.jpg", "caption": "Two women sit at a table with wine glasses, a pizza and a cat."},
    {"image_id": 3, "image": "c.jpg", "caption": "The Giraffe is wearing a necklace; a toilet seat is up."},
    {"image_id": 4, "image": "d.jpg", "caption": "Nothing to see here."},
    {"image_id": 5, "image": "e.jpg", "caption": "A dog, a Dog and a puppy chase a frisbee."},
]
COCO_WANT = [
    [("man", "person"), ("bicycle", "bicycle"), ("dogs", "dog"), ("teddy bear", "teddy bear")],
    [("women", "person"), ("table", "dining table"), ("wine glasses", "wine glass"), ("pizza", "pizza"),
     ("cat", "cat")],
    [("Giraffe", "giraffe"), ("toilet seat", "toilet")],
    [],
    [("dog", "dog"), ("frisbee", "frisbee")],  # "Dog" and "puppy" are the same object: its first mention only
]


def _check_spans(rows: list[dict]) -> None:
    for r in rows:
        for o in r["objects"]:
            assert set(o) == {"text", "category", "start", "end"}
            assert r["caption"][o["start"]:o["end"]] == o["text"]
        assert [o["start"] for o in r["objects"]] == sorted(o["start"] for o in r["objects"])


def test_object_cli_vocab_coco_default(tmp_path, capsys):
    captions = _write_jsonl(tmp_path / "captions.jsonl", COCO_ROWS)
    out = tmp_path / "objects.jsonl"
    assert object_main(["--captions_path", str(captions), "--output_path", str(out)]) == 0
    rows = _jsonl(out)
    assert [{k: v for k, v in r.items() if k != "objects"} for r in rows] == COCO_ROWS
    assert [[(o["text"], o["category"]) for o in r["objects"]] for r in rows] == COCO_WANT
    _check_spans(rows)
    assert rows[0]["objects"][3] == {"text": "teddy bear", "category": "teddy bear", "start": 46, "end": 56}
    assert "5 captions (0 already done), 13 objects" in capsys.readouterr().out


def test_object_cli_vocab_custom_synonyms_and_resume(tmp_path, capsys):
    syn = tmp_path / "synonyms.txt"
    syn.write_text("ball, sphere, orb\nbox, crate, carton\nkite\nc++ book\n")
    rows = [{"image_id": i, "image": f"{i}.png", "caption": c} for i, c in enumerate([
        "Two orbs sit on a crate.", "A kite above a ball, and a Sphere in a carton.", "A dog on a box.",
        "Kites and kites.", "Crates, boxes and balls."])]
    captions = _write_jsonl(tmp_path / "captions.jsonl", rows[:3])
    out = tmp_path / "objects.jsonl"
    argv = ["--captions_path", str(captions), "--output_path", str(out), "--synonyms", str(syn),
            "--default_merges", "False"]
    assert object_main(argv) == 0
    first = out.read_text()
    got = _jsonl(out)
    # each object once per caption, at its first mention (EFUF's unit): "Sphere" is the ball again
    assert [[(o["text"], o["category"], o["start"]) for o in r["objects"]] for r in got] == [
        [("orbs", "ball", 4), ("crate", "box", 18)],
        [("kite", "kite", 2), ("ball", "ball", 15), ("carton", "box", 39)],
        [("box", "box", 11)],
    ]
    _check_spans(got)
    # more captions: only the new ones are processed, the old lines stay byte for byte
    _write_jsonl(captions, rows)
    capsys.readouterr()
    assert object_main(argv) == 0
    assert "5 captions (3 already done)" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith(first)
    got = _jsonl(out)
    assert [[(o["text"], o["category"]) for o in r["objects"]] for r in got[3:]] == [
        [("Kites", "kite")], [("Crates", "box"), ("balls", "ball")]]
    _check_spans(got)
    # a line cut mid-way (killed writer) is repaired and redone
    out.write_text(text[:-10])
    assert object_main(argv) == 0
    assert "5 captions (4 already done)" in capsys.readouterr().out and out.read_text() == text
    # the last line lost entirely
    out.write_text("".join(text.splitlines(keepends=True)[:-1]))
    assert object_main(argv) == 0 and out.read_text() == text


def test_object_cli_vocab_all_mentions(tmp_path):
    syn = tmp_path / "synonyms.txt"
    syn.write_text("ball, sphere\nbox, crate\n")
    rows = [{"image_id": 0, "image": "0.png", "caption": "A ball, a crate and a Sphere. The ball is red."}]
    captions = _write_jsonl(tmp_path / "captions.jsonl", rows)
    base = ["--captions_path", str(captions), "--synonyms", str(syn), "--default_merges", "False"]
    assert object_main([*base, "--output_path", str(tmp_path / "first.jsonl")]) == 0
    assert object_main([*base, "--output_path", str(tmp_path / "all.jsonl"), "--all_mentions", "true"]) == 0
    first, every = _jsonl(tmp_path / "first.jsonl")[0]["objects"], _jsonl(tmp_path / "all.jsonl")[0]["objects"]
    assert [(o["text"], o["start"]) for o in first] == [("ball", 2), ("crate", 10)]
    assert [(o["text"], o["start"]) for o in every] == [("ball", 2), ("crate", 10), ("Sphere", 22), ("ball", 34)]


def test_object_cli_bad_input(tmp_path, capsys):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps(COCO_ROWS[0]) + "\n\n" + json.dumps({"image": "x.jpg", "text": "no caption"}) + "\n")
    assert object_main(["--captions_path", str(captions), "--output_path", str(tmp_path / "o.jsonl")]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and f"{captions}:3:" in err[0] and "'caption' string" in err[0]
    captions.write_text(json.dumps(COCO_ROWS[0]) + "\n")
    assert object_main(["--captions_path", str(captions), "--output_path", str(tmp_path / "o.jsonl"),
                        "--backend", "spacy"]) == 2
    assert "unknown --backend 'spacy'" in _error_lines(capsys)[0]
    assert object_main(["--captions_path", str(captions), "--output_path", str(tmp_path / "o2.jsonl"),
                        "--backend", "llm"]) == 2
    assert "--llm_path" in _error_lines(capsys)[0]


# ============================================================================================== parse_llm_objects
def _spans(objs: list[dict]) -> list[tuple[str, int, int]]:
    return [(o["text"], o["start"], o["end"]) for o in objs]


def test_parse_llm_objects_prefix_parenthesis_case_and_repeats():
    caption = "A Cat chases a dog across the yard. The cat then sits by a red ball."
    out = parse_llm_objects("Here are the objects: cat, DOG, yard, dog, ball (the ball is red), kite", caption)
    # the prefix up to ":" and the tail from "(" are dropped ("kite" too, as it is not in the caption)
    assert _spans(out) == [("Cat", 2, 5), ("dog", 15, 18), ("yard", 30, 34), ("ball", 63, 67)]
    assert all(o["category"] is None for o in out)
    out = parse_llm_objects(" red ball, yard, Cat.\nThese are all the objects.", caption)
    assert _spans(out) == [("Cat", 2, 5), ("yard", 30, 34), ("red ball", 59, 67)]  # caption order, first line
    # words that are not in the caption (or only inside other words) are dropped
    assert parse_llm_objects("car, hat, at, yar", caption) == []
    assert parse_llm_objects("", caption) == []


def test_parse_llm_objects_refusals():
    caption = "A cat on a mat."
    assert parse_llm_objects("I'm sorry, but I cannot list objects: cat, mat", caption) == []
    assert parse_llm_objects("I cannot do that. cat", caption) == []
    assert _spans(parse_llm_objects("\"cat\", *mat*", caption)) == [("cat", 2, 5), ("mat", 11, 14)]


def test_parse_llm_objects_regex_special_characters_are_literal():
    caption = "A sign reading axb near a.b, and a t-shirt on a chair [left]."
    out = parse_llm_objects("a.b, t-shirt, chair [left, a+, x|y, (x", caption)
    # "a.b" matches only itself, not "axb"; "chair [left" is found literally; "a+" / "x|y" neither crash nor match
    assert _spans(out) == [("a.b", 24, 27), ("t-shirt", 35, 42), ("chair [left", 48, 59)]
    assert _spans(parse_llm_objects("a.b", "a sign reading axb")) == []
    assert parse_llm_objects("c++, desk", "A book about c++ on a desk.") is not None  # no re.error


def test_parse_llm_objects_phrase_ending_in_symbols():
    assert _spans(parse_llm_objects("c++, desk", "A book about c++ on a desk.")) == [("c++", 13, 16),
                                                                                     ("desk", 22, 26)]


def test_parse_llm_objects_list_on_the_line_after_the_preamble():
    assert _spans(parse_llm_objects("Sure! Here are the objects:\n\ncat, dog", "A cat and a dog.")) == [
        ("cat", 2, 5), ("dog", 12, 15)]


# ============================================================================================== llm back end
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from common.tiny import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny_llm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


LLM_ROWS = [
    {"image_id": 1, "image": "a.jpg", "caption": "A cat and a dog play with a ball."},
    {"image_id": 2, "image": "b.jpg", "caption": "A kite flies over the DOG, the Dog barks."},
    {"image_id": 3, "image": "c.jpg", "caption": "An empty room."},
]


def _llm_argv(captions: Path, out: Path, llm: str, *extra: str) -> list[str]:
    return ["--captions_path", str(captions), "--output_path", str(out), "--backend", "llm", "--llm_path", llm,
            "--max_new_tokens", "6", "--device", "cpu", "--dtype", "float32", "--batch_size", "2", *extra]


def test_object_cli_llm_backend_structure(tiny_llm, tmp_path):
    captions = _write_jsonl(tmp_path / "captions.jsonl", LLM_ROWS)
    out = tmp_path / "objects.jsonl"
    torch.manual_seed(0)
    assert object_main(_llm_argv(captions, out, tiny_llm)) == 0
    rows = _jsonl(out)
    assert [{k: v for k, v in r.items() if k != "objects"} for r in rows] == LLM_ROWS
    assert all(isinstance(r["objects"], list) for r in rows)
    _check_spans(rows)
    assert all(o["category"] is None for r in rows for o in r["objects"])
    # greedy decoding: a second run from scratch gives the same file
    first = out.read_text()
    assert object_main(_llm_argv(captions, out, tiny_llm, "--restart", "True")) == 0
    assert out.read_text() == first


def test_object_cli_llm_backend_parses_a_known_generation(tiny_llm, tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    answer = "Objects: dog, Cat, kite, ball, dog (and more)"
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == answer
    seen: list[torch.Tensor] = []

    def fake_generate(self, input_ids=None, attention_mask=None, **kwargs):
        seen.append(input_ids)
        assert kwargs["do_sample"] is False and kwargs["max_new_tokens"] == 6
        return torch.cat([input_ids, torch.tensor([ids] * input_ids.shape[0])], dim=1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", fake_generate)
    captions = _write_jsonl(tmp_path / "captions.jsonl", LLM_ROWS)
    out = tmp_path / "objects.jsonl"
    assert object_main(_llm_argv(captions, out, tiny_llm)) == 0
    assert [len(x) for x in seen] == [2, 1]  # batches of 2, left-padded prompts
    prompt = tok.decode(seen[1][0], skip_special_tokens=True)
    assert "(Input) An empty room.\n(Output) [/INST]" in prompt and "Extract all the concrete visual objects" in prompt
    rows = _jsonl(out)
    assert [_spans(r["objects"]) for r in rows] == [
        [("cat", 2, 5), ("dog", 12, 15), ("ball", 28, 32)],
        [("kite", 2, 6), ("DOG", 22, 25)],
        [],
    ]
    _check_spans(rows)
    # resume: all done, the model is not even loaded
    seen.clear()
    assert object_main(_llm_argv(captions, out, tiny_llm)) == 0
    assert seen == [] and "3 captions (3 already done), 5 objects" in capsys.readouterr().out


# ============================================================================================== benchmark
@pytest.mark.parametrize("backend,naive,preprocess", [("open_clip", "per_image", "pil"),
                                                      ("clip", "per_object", "tensor")])
def test_bench_clip_score_sides_agree(backend, naive, preprocess):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_clip_score.py"
    spec = importlib.util.spec_from_file_location("bench_clip_score", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    res = mod.main(["--backend", backend, "--naive", naive, "--images", "9", "--width", "90", "--height", "70",
                    "--patch_size", "12", "--repeat", "1", "--preprocess", preprocess])
    assert set(res) == {"naive_s", "ours_s", "ratio", "max_abs_diff", "tolerance", "prep_share", "class_changes",
                        "max_abs_diff_pil_tensor"}
    assert res["max_abs_diff"] <= res["tolerance"] and res["naive_s"] > 0 and res["ours_s"] > 0
    assert res["tolerance"] == (1e-5 if preprocess == "pil" else pytest.approx(2e-4 * 14.3, rel=0.01))
    assert res["ratio"] == pytest.approx(res["naive_s"] / res["ours_s"])
    assert 0 < res["prep_share"] < 1 and 0 <= res["class_changes"] < 0.05
    assert res["max_abs_diff_pil_tensor"] <= res["tolerance"]
    if preprocess == "pil":  # the same path on both sides of the agreement check
        assert res["class_changes"] == 0 and res["max_abs_diff_pil_tensor"] <= 1e-5
    assert torch.get_num_threads() == threads  # the benchmark restores the thread count
