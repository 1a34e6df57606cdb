"""STIC's data side: corruptions, prompts, preference generation (resumable), jsonl→json, stage-2 descriptions and
their infusion into instruction data. End-to-end runs use the tiny llava checkpoint and 4 new tokens."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image

from common.args import ModelArguments
from common.io import read_json, read_jsonl
from stic import corrupt
from stic.add_des_to_data import main as add_des_main
from stic.convert_jsonl_to_json import main as convert_main
from stic.generate_des_stage2 import main as des_main, parse as des_parse
from stic.generate_pref import main as pref_main, plan_image
from stic.prompts import DAR_PROMPT, DETAILED_PROMPT, HALLUCINATION_PROMPTS, PLAIN_PROMPTS

NAMES = [f"img{i}.png" for i in range(6)]  # with --seed 0: hallucination, jitter, jitter, hallu, hallu, low-res
SIZES = [(48, 40), (40, 56), (64, 48), (32, 32), (50, 30), (36, 60)]
CHOICE_KEYS = ("image", "image_corruption", "corruption", "hallu_prompt", "strategy")


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _colour_image(w: int, h: int, seed: int) -> Image.Image:
    """Saturated colour blocks (a hue to shift) with some noise."""
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), dtype=np.uint8)
    cols = rng.integers(0, 256, (4, 3))
    cols[:, rng.integers(0, 3)] = 0  # saturated
    for k, (ys, xs) in enumerate([(slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, w)),
                                  (slice(h // 2, h), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]):
        a[ys, xs] = cols[k]
    a = np.clip(a.astype(int) + rng.integers(-10, 10, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stic_images")
    for i, (name, (w, h)) in enumerate(zip(NAMES, SIZES)):
        _colour_image(w, h, i).save(d / name)
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def tiny_vlm(tiny_dir):
    from common.models import load_model

    return load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu")


class Spy:
    """Wraps a model: records each ``generate`` call's images and prompts; can fail on the n-th call (a kill)."""

    def __init__(self, vlm, fail_on_call: int | None = None):
        self.vlm, self.calls, self.fail_on_call = vlm, [], fail_on_call

    def generate(self, images, prompts, **kw):
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise RuntimeError("killed")
        self.calls.append((list(images), list(prompts), kw))
        return self.vlm.generate(images, prompts, **kw)


@pytest.fixture
def spy(monkeypatch, tiny_vlm):
    """``spy(fail_on_call=None)``: the model every ``ModelArguments.load()`` returns from now on."""
    def make(fail_on_call=None):
        s = Spy(tiny_vlm, fail_on_call)
        monkeypatch.setattr(ModelArguments, "load", lambda self, **kw: s)
        return s

    return make


def _pref_argv(image_dir, save, *extra):
    return ["--model", "llava", "--llava_path", "unused-by-the-spy", "--image_dir", str(image_dir),
            "--save_dir", str(save), "--max_new_tokens", "4", "--batch_size", "2", "--seed", "0", *extra]


# ---------------------------------------------------------------------------------------------- corruptions
def test_low_resolution_really_lowers_the_resolution():
    img = _colour_image(64, 48, 0)
    low = corrupt.low_resolution(img)
    assert isinstance(low, Image.Image) and min(low.size) == 20 and low.size == (26, 20)  # T.Resize(20)'s size
    assert corrupt.low_resolution(_colour_image(30, 50, 1)).size == (20, 33)
    back = np.asarray(low.resize(img.size, Image.BILINEAR), dtype=int)
    assert np.abs(back - np.asarray(img, dtype=int)).mean() > 1  # detail is lost


def test_color_jitter_changes_hue_and_is_seeded():
    img = _colour_image(40, 40, 3)
    a = corrupt.color_jitter(img, random.Random(7))
    assert a.size == img.size and not np.array_equal(np.asarray(a), np.asarray(img))
    assert np.array_equal(np.asarray(a), np.asarray(corrupt.color_jitter(img, random.Random(7))))
    assert not np.array_equal(np.asarray(a), np.asarray(corrupt.color_jitter(img, random.Random(8))))
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)  # a numpy Generator works too
    assert np.array_equal(np.asarray(corrupt.color_jitter(img, g1)), np.asarray(corrupt.color_jitter(img, g2)))
    # the drawn parameters span ColorJitter(brightness=.5, hue=.3)'s ranges
    params = [corrupt.jitter_params(random.Random(s)) for s in range(300)]
    assert 0.5 <= min(p[0] for p in params) < 0.55 and 1.45 < max(p[0] for p in params) <= 1.5
    assert -0.3 <= min(p[1] for p in params) < -0.25 and 0.25 < max(p[1] for p in params) <= 0.3
    assert {p[2] for p in params} == {True, False}
    # a hue shift of a quarter turn moves the hue channel of saturated pixels by ~64/256 and keeps brightness
    shifted = corrupt.apply_color_jitter(img, 1.0, 0.25)
    h0 = np.asarray(img.convert("HSV"))[..., 0].astype(int)
    h1 = np.asarray(shifted.convert("HSV"))[..., 0].astype(int)
    sat = np.asarray(img.convert("HSV"))[..., 1] > 100
    assert np.median(((h1 - h0) % 256)[sat]) == pytest.approx(63, abs=3)


def test_pil_fallback_matches_torchvision(monkeypatch):
    img = _colour_image(50, 30, 4)
    tv_low, tv_jit = corrupt.low_resolution(img), corrupt.apply_color_jitter(img, 1.3, -0.2, False)
    monkeypatch.setattr(corrupt, "_tvf", None)
    assert np.array_equal(np.asarray(corrupt.low_resolution(img)), np.asarray(tv_low))
    diff = np.abs(np.asarray(corrupt.apply_color_jitter(img, 1.3, -0.2, False), dtype=int) - np.asarray(tv_jit))
    assert diff.max() <= 3


# ---------------------------------------------------------------------------------------------- prompts, choices
def test_prompts():
    assert len(PLAIN_PROMPTS) == len(set(PLAIN_PROMPTS)) == 8
    assert len(HALLUCINATION_PROMPTS) == len(set(HALLUCINATION_PROMPTS)) == 8
    assert DAR_PROMPT in PLAIN_PROMPTS  # DaR describes with a plain prompt the model was trained on
    lines = DETAILED_PROMPT.split("\n")
    assert len(lines) == 7 and lines[0].startswith("Please provide a detailed description")
    assert all(line.startswith("    ") and not line.startswith("     ") for line in lines[1:])


def test_choices_depend_on_seed_and_name_only():
    names = [f"COCO_train2014_{i:012d}.jpg" for i in range(400)]
    plans = [plan_image(0, n) for n in names]

    def choices(ps):
        return [(p.prompt, p.strategy, p.hallu_prompt, p.corruption) for p in ps]

    assert choices(plans) == choices(plan_image(0, n) for n in reversed(names))[::-1]  # order-free
    hallu = sum(p.strategy == "hallucination_prompt" for p in plans)
    low = sum(p.corruption == "low_resolution" for p in plans)
    assert 160 < hallu < 240 and 60 < low < 140 and {p.prompt for p in plans} == set(PLAIN_PROMPTS)
    assert {p.hallu_prompt for p in plans if p.hallu_prompt} == set(HALLUCINATION_PROMPTS)
    assert [p.strategy for p in plans] != [plan_image(1, n).strategy for n in names]


# ---------------------------------------------------------------------------------------------- generate_pref
def test_generate_pref_end_to_end(image_dir, tmp_path, spy):
    s = spy()
    out = tmp_path / "pref.jsonl"
    assert pref_main(_pref_argv(image_dir, out)) == 0
    rows = read_jsonl(out)
    assert [r["image"] for r in rows] == NAMES  # sorted, the .txt skipped
    for r in rows:
        assert set(r) == {"image", "image_corruption", "corruption", "hallu_prompt", "strategy", "chosen", "rejected"}
        x = r["chosen"][0]["content"]
        assert x in PLAIN_PROMPTS and r["rejected"][0]["content"] == x
        assert [m["role"] for m in r["chosen"]] == [m["role"] for m in r["rejected"]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) for m in r["chosen"] + r["rejected"])
        if r["strategy"] == "hallucination_prompt":
            assert r["hallu_prompt"] in HALLUCINATION_PROMPTS and r["corruption"] is None and not r["image_corruption"]
        else:
            assert r["strategy"] == "corrupted_image" and r["hallu_prompt"] == "" and r["image_corruption"]
            assert r["corruption"] in corrupt.CORRUPTIONS
    assert [r["corruption"] or "hallu" for r in rows] == \
        ["hallu", "color_jitter", "color_jitter", "hallu", "hallu", "low_resolution"]

    # what the model was given: the detailed prompt on the clean image, then the rejected branch's input
    assert len(s.calls) == 3
    assert all(kw["do_sample"] and kw["temperature"] == 0.2 and kw["max_new_tokens"] == 4 and kw["batch_size"] == 2
               for _, _, kw in s.calls)
    for b, (images, prompts, _) in enumerate(s.calls):
        for j, r in enumerate(rows[2 * b:2 * b + 2]):
            clean = Image.open(image_dir / r["image"]).convert("RGB")
            given_clean, given_rej = images[j], images[2 + j]
            assert prompts[j] == DETAILED_PROMPT and np.array_equal(np.asarray(given_clean), np.asarray(clean))
            if r["strategy"] == "hallucination_prompt":
                assert prompts[2 + j] == r["hallu_prompt"]
                assert np.array_equal(np.asarray(given_rej), np.asarray(clean))
            else:
                assert prompts[2 + j] == r["chosen"][0]["content"]
                if r["corruption"] == "low_resolution":
                    assert min(given_rej.size) == 20 and given_rej.size != clean.size
                else:
                    assert given_rej.size == clean.size
                    assert not np.array_equal(np.asarray(given_rej), np.asarray(clean))

    # reproducible: the same seed writes the same file (texts included)
    again = tmp_path / "again.jsonl"
    spy()
    assert pref_main(_pref_argv(image_dir, again)) == 0
    assert again.read_text() == out.read_text()

    # --preferred_prompt replaces the step-by-step prompt for the chosen answer only; the plan stays the same
    s = spy()
    other = tmp_path / "other.jsonl"
    assert pref_main(_pref_argv(image_dir, other, "--preferred_prompt", "Please describe the image.")) == 0
    assert [p[:2] for _, p, _ in s.calls] == [["Please describe the image."] * 2] * 3
    other_rows = read_jsonl(other)
    assert [(r["chosen"][0], r["strategy"]) for r in other_rows] == [(r["chosen"][0], r["strategy"]) for r in rows]


def test_generate_pref_killed_then_resumed(image_dir, tmp_path, spy):
    full = tmp_path / "full.jsonl"
    spy()
    assert pref_main(_pref_argv(image_dir, full)) == 0

    # killed during the second batch, with a torn line left behind: the re-run completes it exactly
    out = tmp_path / "pref.jsonl"
    spy(fail_on_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        pref_main(_pref_argv(image_dir, out))
    assert [r["image"] for r in read_jsonl(out)] == NAMES[:2]
    with open(out, "a") as f:
        f.write('{"image": "img2.png", "chos')
    s = spy()
    assert pref_main(_pref_argv(image_dir, out)) == 0
    assert len(s.calls) == 2  # only the 4 missing images were generated
    assert out.read_text() == full.read_text()  # same batches, same per-batch seeds: the very same file

    # stopped after k images (--max_images), then run in full: one record per image, the same choices
    part = tmp_path / "part.jsonl"
    spy()
    assert pref_main(_pref_argv(image_dir, part, "--max_images", "3")) == 0
    assert len(read_jsonl(part)) == 3
    spy()
    assert pref_main(_pref_argv(image_dir, part)) == 0
    rows = read_jsonl(part)
    assert [r["image"] for r in rows] == NAMES
    assert [[r[k] for k in CHOICE_KEYS] + [r["chosen"][0]] for r in rows] == \
        [[r[k] for k in CHOICE_KEYS] + [r["chosen"][0]] for r in read_jsonl(full)]
    s = spy()
    assert pref_main(_pref_argv(image_dir, part)) == 0 and s.calls == []  # all done: nothing generated


def test_generate_pref_bad_image_is_one_line_and_keeps_records(image_dir, tmp_path, spy, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in NAMES[:3]:
        (d / name).write_bytes((image_dir / name).read_bytes())
    (d / "img3.png").write_bytes(b"not a png")
    out = tmp_path / "pref.jsonl"
    spy()
    assert pref_main(_pref_argv(d, out)) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "img3.png: cannot decode image" in err[0]
    assert [r["image"] for r in read_jsonl(out)] == NAMES[:2]  # the batch before it is kept


def test_generate_pref_flag_errors(image_dir, tmp_path, capsys):
    assert pref_main(["--model", "llava", "--save_dir", str(tmp_path / "p.jsonl")]) == 2
    assert "--image_dir" in _error_lines(capsys)[0]
    assert pref_main(["--model", "llava", "--image_dir", str(image_dir), "--temprature", "0.2"]) == 2
    assert "did you mean --temperature" in _error_lines(capsys)[0]
    assert pref_main(["--model", "llava", "--image_dir", str(image_dir), "--preferred_prompt", " "]) == 2
    assert "--preferred_prompt is empty" in _error_lines(capsys)[0]


# ---------------------------------------------------------------------------------------------- convert
def test_convert_round_trip_and_bad_lines(tmp_path, capsys):
    rows = [{"image": f"{i}.jpg", "chosen": [{"role": "user", "content": "x"}], "rejected": [], "extra": i}
            for i in range(3)]
    src = tmp_path / "pref.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert convert_main(["--input", str(src)]) == 0
    assert read_json(tmp_path / "pref.json") == rows
    assert convert_main(["--input", str(src), "--output", str(tmp_path / "o.json")]) == 0
    assert read_json(tmp_path / "o.json") == rows

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n")
    assert convert_main(["--input", str(bad)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "bad.jsonl:2:" in err[0]
    bad.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps({"image": "a", "chosen": []}) + "\n")
    assert convert_main(["--input", str(bad)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "bad.jsonl:3:" in err[0] and "'rejected'" in err[0]
    assert not (tmp_path / "bad.json").exists()


# ---------------------------------------------------------------------------------------------- stage 2
def test_generate_des_stage2_real_load_and_dash_flags(image_dir, tiny_dir, tmp_path):
    out = tmp_path / "des.jsonl"
    argv = ["--model", "llava", "--model-path", tiny_dir("llava"), "--image-dir", str(image_dir),
            "--save-dir", str(out), "--max_new_tokens", "4", "--max_images", "3", "--device", "cpu",
            "--dtype", "float32"]
    assert des_main(argv) == 0
    rows = read_jsonl(out)
    assert [r["image"] for r in rows] == NAMES[:3]
    assert all(set(r) == {"image", "prompt", "description"} and r["prompt"] in PLAIN_PROMPTS for r in rows)
    assert des_main(argv[:-6] + ["--device", "cpu", "--dtype", "float32"]) == 0  # resumes: 3 more
    assert [r["image"] for r in read_jsonl(out)] == NAMES
    margs, dargs, _ = des_parse(["--model-path", "m", "--adapter-path", "lora", "--image-dir", "d"])
    assert (margs.model_path, margs.lora_path, dargs.image_dir) == ("m", "lora", "d")
    margs, _, _ = des_parse(["--model", "llava", "--llava_path", "m", "--llava_lora_path", "l", "--image_dir", "d"])
    assert (margs.model_path, margs.lora_path) == ("m", "l")


def test_generate_des_stage2_from_instruction_data(image_dir, tmp_path, spy, capsys):
    root = tmp_path / "image_data"
    (root / "coco").mkdir(parents=True)
    (root / "vg").mkdir()
    for sub, name in [("coco", NAMES[0]), ("vg", NAMES[1]), ("vg", NAMES[2])]:
        (root / sub / name).write_bytes((image_dir / name).read_bytes())
    mix = [{"id": "a", "image": f"vg/{NAMES[1]}", "conversations": []},
           {"id": "b", "conversations": []},  # text-only
           {"id": "c", "image": f"coco/{NAMES[0]}", "conversations": []},
           {"id": "d", "image": f"vg/{NAMES[1]}", "conversations": []}]  # referenced twice
    data = tmp_path / "mix.json"
    data.write_text(json.dumps(mix))
    out = tmp_path / "des.jsonl"
    s = spy()
    argv = ["--model", "llava", "--llava_path", "x", "--image_dir", str(root), "--data_path", str(data),
            "--save_dir", str(out), "--max_new_tokens", "4"]
    assert des_main(argv) == 0
    rows = read_jsonl(out)
    assert [r["image"] for r in rows] == [f"vg/{NAMES[1]}", f"coco/{NAMES[0]}"]  # vg/img2 is not referenced
    assert s.calls[0][1] == [r["prompt"] for r in rows]

    mix.append({"id": "e", "image": "coco/gone.png", "conversations": []})
    data.write_text(json.dumps(mix))
    assert des_main(argv) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "gone.png: image not found" in err[0]


def _turn(value):
    return [{"from": "human", "value": value}, {"from": "gpt", "value": "answer"}]


def test_add_des_matched_by_image(tmp_path, capsys):
    data = [{"id": "1", "image": "coco/a.jpg", "conversations": _turn("<image>\nWhat is it?")},
            {"id": "2", "conversations": _turn("Text only?")},
            {"id": "3", "image": "vg/b.jpg", "conversations": _turn("Where?\n<image>")},
            {"id": "4", "image": "coco/a.jpg", "conversations": _turn("<image>\nColour?") + _turn("<image>\nMore?")}]
    (tmp_path / "mix.json").write_text(json.dumps(data))
    des = [{"image": "vg/b.jpg", "prompt": "p", "description": "B desc"},
           {"image": "coco/a.jpg", "prompt": "p", "description": "A desc"}]  # not in data order
    (tmp_path / "des.jsonl").write_text("".join(json.dumps(r) + "\n" for r in des))
    argv = ["--data_path", str(tmp_path / "mix.json"), "--des_path", str(tmp_path / "des.jsonl"),
            "--save_path", str(tmp_path / "out.json")]
    assert add_des_main(argv) == 0
    out = read_json(tmp_path / "out.json")
    assert out[0]["conversations"][0]["value"] == "<image>\nImage description:\nA desc\n\nWhat is it?"
    assert out[1] == data[1]
    assert out[2]["conversations"][0]["value"] == "Image description:\nB desc\n\nWhere?\n<image>"
    assert out[3]["conversations"][0]["value"] == "<image>\nImage description:\nA desc\n\nColour?"
    assert out[3]["conversations"][1:] == data[3]["conversations"][1:]  # only the first human turn
    assert [o["conversations"][1] for o in out] == [d["conversations"][1] for d in data]  # answers unchanged
    assert "3 with a description" in capsys.readouterr().out

    (tmp_path / "des.jsonl").write_text(json.dumps(des[1]) + "\n")  # vg/b.jpg has none
    assert add_des_main(argv) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: vg/b.jpg: no description")
    assert add_des_main(argv + ["--allow_missing"]) == 0
    assert "1 with no description" in capsys.readouterr().out
    out = read_json(tmp_path / "out.json")
    assert out[2] == data[2] and out[0]["conversations"][0]["value"].startswith("<image>\nImage description:\nA")

    (tmp_path / "des.jsonl").write_text(json.dumps(des[1]) + "\n{\"image\": 3}\n")
    assert add_des_main(argv) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "des.jsonl: line 2:" in err[0]
