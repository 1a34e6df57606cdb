"""Evaluation end to end on a tiny checkpoint and the toy world: batched == batch-size-1, resume == uninterrupted."""
from __future__ import annotations

from common.io import read_json, read_jsonl


def _pope(tiny_dir, toy_world, answers, out, batch_size):
    from evaluate.eval_pope import main as eval_pope

    return eval_pope(["--model", "llava", "--llava_path", tiny_dir("llava"), "--question_file",
                      str(toy_world / "pope" / "llava_pope_test.jsonl"), "--image_dir", str(toy_world / "images" / "val"),
                      "--annotation_dir", str(toy_world / "pope"), "--answers_file", str(answers),
                      "--output_json", str(out), "--batch_size", str(batch_size), "--max_new_tokens", "3"])


def test_pope_generation_batched_equals_single_and_resumes(tiny_dir, toy_world, tmp_path):
    assert _pope(tiny_dir, toy_world, tmp_path / "b8.jsonl", tmp_path / "b8.json", 8) == 0
    assert _pope(tiny_dir, toy_world, tmp_path / "b1.jsonl", tmp_path / "b1.json", 1) == 0
    b8, b1 = read_jsonl(tmp_path / "b8.jsonl"), read_jsonl(tmp_path / "b1.jsonl")
    assert len(b8) == len(read_jsonl(toy_world / "pope" / "llava_pope_test.jsonl"))
    assert {r["question_id"]: r["text"] for r in b8} == {r["question_id"]: r["text"] for r in b1}
    assert read_json(tmp_path / "b8.json") == read_json(tmp_path / "b1.json")

    # a run killed mid-way: 37 finished lines and half of the 38th; the re-run completes the same file
    lines = (tmp_path / "b8.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "cut.jsonl").write_text("".join(lines[:37]) + lines[37][:20])
    assert _pope(tiny_dir, toy_world, tmp_path / "cut.jsonl", tmp_path / "cut.json", 8) == 0
    assert (tmp_path / "cut.jsonl").read_text() == (tmp_path / "b8.jsonl").read_text()


def test_pope_batch_size_reaches_the_model_layer(tiny_dir, toy_world, tmp_path, monkeypatch):
    # --batch_size 32 must reach the Hugging Face generate call (the adapter's own default would split into 16s)
    import evaluate.cli

    real_load, dims = evaluate.cli.load_vlm, []

    def load(args):
        vlm = real_load(args)
        hf_generate = vlm.model.generate

        def spy(*a, **kw):
            dims.append(kw["input_ids"].shape[0])
            return hf_generate(*a, **kw)

        monkeypatch.setattr(vlm.model, "generate", spy)
        return vlm

    monkeypatch.setattr(evaluate.cli, "load_vlm", load)
    assert _pope(tiny_dir, toy_world, tmp_path / "b32.jsonl", tmp_path / "b32.json", 32) == 0
    assert max(dims) == 32 and dims.count(32) >= len(dims) - 1  # full batches but the last
    questions = read_jsonl(toy_world / "pope" / "llava_pope_test.jsonl")
    assert [r["question_id"] for r in read_jsonl(tmp_path / "b32.jsonl")] == [q["question_id"] for q in questions]


def test_caption_then_chair_end_to_end(tiny_dir, toy_world, tmp_path):
    from evaluate.eval_auto import main as eval_auto
    from evaluate.eval_caption import main as eval_caption

    caps = tmp_path / "caps.jsonl"
    rc = eval_caption(["--model", "llava", "--llava_path", tiny_dir("llava"), "--image_dir",
                       str(toy_world / "images" / "val"), "--coco_instances", str(toy_world / "annotations" / "instances_val.json"),
                       "--caption_eval_path", str(caps), "--num_images", "10", "--max_new_tokens", "6",
                       "--batch_size", "4"])
    assert rc == 0
    rows = read_jsonl(caps)
    assert len(rows) == 10 and all({"image_id", "image", "caption"} <= r.keys() for r in rows)
    assert eval_auto(["--caption_eval_path", str(caps), "--coco_annotation_dir", str(toy_world / "annotations"),
                      "--synonyms", str(toy_world / "synonyms.txt"), "--no_default_merges",
                      "--output_json", str(tmp_path / "chair.json")]) == 0
    assert read_json(tmp_path / "chair.json")["num_captions"] == 10


def test_caption_generation_flags_reach_the_model(tiny_dir, toy_world, tmp_path, monkeypatch):
    """--prompt_style, --length_penalty (EFUF's captions: beam 5, length_penalty 0) and --static_cache reach the
    model layer."""
    import evaluate.cli
    from evaluate.eval_caption import main as eval_caption

    real_load, seen = evaluate.cli.load_vlm, {}

    def load(args):
        vlm = real_load(args)
        hf_generate = vlm.model.generate
        seen["style"] = vlm.prompt_style

        def spy(*a, **kw):
            seen.update(length_penalty=kw.get("length_penalty"), num_beams=kw.get("num_beams"))
            if "cache_implementation" in kw:
                seen["cache"] = kw["cache_implementation"]
            return hf_generate(*a, **kw)

        monkeypatch.setattr(vlm.model, "generate", spy)
        return vlm

    monkeypatch.setattr(evaluate.cli, "load_vlm", load)
    base = ["--model", "llava", "--llava_path", tiny_dir("llava"), "--image_dir", str(toy_world / "images" / "val"),
            "--num_images", "2", "--max_new_tokens", "3"]
    assert eval_caption([*base, "--caption_eval_path", str(tmp_path / "a.jsonl"), "--num_beams", "2",
                         "--length_penalty", "0", "--prompt_style", "hf"]) == 0
    assert seen == {"style": "hf", "length_penalty": 0.0, "num_beams": 2}
    seen.clear()
    assert eval_caption([*base, "--caption_eval_path", str(tmp_path / "b.jsonl")]) == 0
    assert seen == {"style": "official", "length_penalty": 0.0, "num_beams": 5}  # EFUF: beam 5, length_penalty 0
    seen.clear()
    assert eval_caption([*base, "--caption_eval_path", str(tmp_path / "c.jsonl"), "--static_cache"]) == 0
    assert seen["cache"] == "static"


def test_eval_cli_mistyped_and_foreign_flags_are_one_line(tmp_path, capsys):
    from evaluate.eval_pope import main as eval_pope

    assert eval_pope(["--question_file", "q.jsonl", "--annotation_dir", "a", "--answers_file", "x.jsonl",
                      "--output_json", "o.json", "--batch_sise", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown flag --batch_sise") and "--batch_size" in err and "\n" not in err
    assert eval_pope(["--model", "llava", "--owl_path", "p", "--question_file", "q.jsonl", "--annotation_dir", "a",
                      "--answers_file", "x.jsonl", "--output_json", "o.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--owl_path belongs to model owl" in err and "\n" not in err
