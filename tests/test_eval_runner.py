"""The generation half: the resumable runner with a deterministic fake model, and every CLI's generation path."""
from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import evaluate.cli
from evaluate import eval_caption, eval_gqa, eval_mme, eval_mmbench, eval_pope, eval_qbench, eval_sqa
from common.errors import LetheError
from common.io import append_jsonl, load_done_ids
from evaluate.runner import run_generation

FIX = Path(__file__).parent / "fixtures" / "eval"

B = SimpleNamespace(**runpy.run_path(str(FIX / "builders.py")))  # shared input builders


class FakeVLM:
    """Deterministic: the answer depends only on the prompt (and on whether an image came with it)."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[tuple[list, list[str], dict]] = []
        self.fail_after = fail_after

    def generate(self, images, prompts, max_new_tokens=64, num_beams=1, do_sample=False):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append((list(images), list(prompts), dict(max_new_tokens=max_new_tokens, num_beams=num_beams,
                                                              do_sample=do_sample)))
        return [self.answer(im, p) for im, p in zip(images, prompts)]

    @staticmethod
    def answer(image, prompt: str) -> str:
        if prompt.startswith("Detail the composition"):
            return f"a {image.size[0]}px picture" if image is not None else "no image"
        if "Answer with the option's letter" in prompt:
            return "B"
        if "dog" in prompt:
            return "Yes"
        if "What color" in prompt:
            return "Red."
        if "Please describe" in prompt:
            return "A dog and a cat."
        return "No" if image is not None else "no image"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(7):
        Image.new("RGB", (16 + i, 16), (i * 30, 0, 0)).save(folder / f"im{i}.png")
    return folder


def _items(folder: Path, n: int = 7):
    return [{"id": f"q{i}", "image_path": str(folder / f"im{i}.png"), "prompt": f"Is there a dog number {i}?"}
            for i in range(n)]


# ---------------------------------------------------------------------------------------------------- runner
def test_runner_batches_and_records(images, tmp_path):
    vlm = FakeVLM()
    out = tmp_path / "a.jsonl"
    stats = run_generation(vlm, _items(images), out, batch_size=3, max_new_tokens=7, num_beams=2, progress=False)
    assert (stats.total, stats.already_done, stats.generated) == (7, 0, 7)
    assert [len(c[1]) for c in vlm.calls] == [3, 3, 1]
    assert vlm.calls[0][2] == {"max_new_tokens": 7, "num_beams": 2, "do_sample": False}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0] == {"question_id": "q0", "prompt": "Is there a dog number 0?", "text": "Yes"}
    assert [r["question_id"] for r in rows] == [f"q{i}" for i in range(7)]


def test_runner_resume_gives_the_same_file(images, tmp_path):
    full = tmp_path / "full.jsonl"
    run_generation(FakeVLM(), _items(images), full, batch_size=2, progress=False)
    part = tmp_path / "part.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_generation(FakeVLM(fail_after=2), _items(images), part, batch_size=2, progress=False)
    assert len(part.read_text().splitlines()) == 4  # two finished batches survived
    with open(part, "a") as f:  # a run killed mid-write leaves half a line
        f.write('{"question_id": "q4", "pro')
    vlm = FakeVLM()
    stats = run_generation(vlm, _items(images), part, batch_size=2, progress=False)
    assert (stats.already_done, stats.generated) == (4, 3)
    assert sum(len(c[1]) for c in vlm.calls) == 3
    assert part.read_bytes() == full.read_bytes()
    again = FakeVLM()
    assert run_generation(again, _items(images), part, batch_size=2, progress=False).generated == 0
    assert again.calls == []


def test_runner_reports_bad_images_by_path(images, tmp_path):
    items = _items(images, 2) + [{"id": "x", "image_path": str(images / "missing.png"), "prompt": "p"}]
    with pytest.raises(LetheError, match=r"missing.png: image not found"):
        run_generation(FakeVLM(), items, tmp_path / "a.jsonl", batch_size=2, progress=False)
    broken = images / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(LetheError, match=r"broken.png: cannot decode image"):
        run_generation(FakeVLM(), [{"id": "b", "image_path": str(broken), "prompt": "p"}], tmp_path / "b.jsonl",
                       progress=False)
    with pytest.raises(LetheError, match="duplicate item id"):
        run_generation(FakeVLM(), _items(images, 2) * 2, tmp_path / "c.jsonl", progress=False)


def test_runner_malformed_existing_output_names_the_line(images, tmp_path):
    out = tmp_path / "a.jsonl"
    out.write_text('{"question_id": "q0", "text": "Yes"}\nnot json\n{"question_id": "q1", "text": "Yes"}\n')
    with pytest.raises(LetheError, match=r"a.jsonl:2: malformed JSON line"):
        run_generation(FakeVLM(), _items(images), out, progress=False)


def test_runner_text_only_items_and_dar(images, tmp_path):
    items = _items(images, 2) + [{"id": "t", "image_path": None, "prompt": "What is 2+2?"}] + \
        [{"id": "q2", "image_path": str(images / "im2.png"), "prompt": "Is there a cat?"}]
    vlm = FakeVLM()
    out = tmp_path / "dar.jsonl"
    run_generation(vlm, items, out, batch_size=8, dar_prompt="Detail the composition and subjects within the frame.",
                   progress=False)
    # batches never mix image and text-only items: [q2 q0 q1] (image items, shortest prompt first) then [t];
    # image batches are described first
    assert [c[1] for c in vlm.calls][:2] == [["Detail the composition and subjects within the frame."] * 3,
                                             ["Image description:\na 18px picture\n\nIs there a cat?",
                                              "Image description:\na 16px picture\n\nIs there a dog number 0?",
                                              "Image description:\na 17px picture\n\nIs there a dog number 1?"]]
    assert all(im is not None for im in vlm.calls[0][0])  # the describe step sees the image
    assert vlm.calls[2][0] == [None] and vlm.calls[2][1] == ["What is 2+2?"] and len(vlm.calls) == 3
    rows = [json.loads(x) for x in out.read_text().splitlines()]  # the file keeps item order
    assert [r["question_id"] for r in rows] == ["q0", "q1", "t", "q2"]
    assert rows[0]["description"] == "a 16px picture" and rows[0]["prompt"] == "Is there a dog number 0?"
    assert rows[2] == {"question_id": "t", "prompt": "What is 2+2?", "text": "no image"}
    assert rows[3]["text"] == "No"


def test_runner_dar_describes_each_image_once(images, tmp_path):
    """Greedy DaR describes an image once for all its questions (in any batch); sampled DaR once per question."""
    qs = ["Is there a cat?", "Is there a dog?", "What color is it?"]
    items = [{"id": f"q{i}{j}", "image_path": str(images / f"im{i}.png"), "prompt": q}
             for i in range(2) for j, q in enumerate(qs)]
    dar = "Detail the composition and subjects within the frame."
    for do_sample, described in ((False, 2), (True, 6)):
        vlm = FakeVLM()
        out = tmp_path / f"dar_{do_sample}.jsonl"
        run_generation(vlm, items, out, batch_size=2, do_sample=do_sample, dar_prompt=dar, progress=False)
        describe_calls = [c for c in vlm.calls if c[1][0] == dar]
        assert sum(len(c[1]) for c in describe_calls) == described
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["description"] for r in rows] == ["a 16px picture"] * 3 + ["a 17px picture"] * 3
        assert [r["text"] for r in rows] == ["No", "Yes", "Red."] * 2  # answered with the description in the prompt


# ------------------------------------------------------------------------------------ batch size and sorting
class SizedVLM(FakeVLM):
    """Like the model layer: takes ``batch_size`` (and records it) besides the runner's own batches."""

    def __init__(self, fail_after: int | None = None):
        super().__init__(fail_after)
        self.batch_sizes: list[int] = []

    def generate(self, images, prompts, max_new_tokens=64, num_beams=1, do_sample=False, batch_size=16):
        self.batch_sizes.append(batch_size)
        return super().generate(images, prompts, max_new_tokens, num_beams, do_sample)


class KwargsVLM(FakeVLM):
    def generate(self, images, prompts, **kw):
        self.seen_kw = kw
        return super().generate(images, prompts, kw["max_new_tokens"], kw["num_beams"], kw["do_sample"])


def _varied(folder: Path, n: int, with_text_only: bool = False):
    """Items whose prompt lengths are scrambled relative to item order (some repeated (image, prompt) pairs)."""
    items = []
    for i in range(n):
        words = " big" * ((i * 7) % 5)
        if with_text_only and i % 3 == 1:
            items.append({"id": f"t{i}", "image_path": None, "prompt": f"Count{words} to {i % 4}?"})
        else:
            items.append({"id": f"q{i}", "image_path": str(folder / f"im{i % 7}.png"),
                          "prompt": f"Is there a{words} dog {i % 11}?"})
    return items


def test_batch_size_reaches_the_model(images, tmp_path):
    items = [{"id": i, "image_path": str(images / f"im{i % 7}.png"), "prompt": f"Is there a dog {i}?"}
             for i in range(70)]
    vlm = SizedVLM()
    run_generation(vlm, items, tmp_path / "a.jsonl", batch_size=32, progress=False)
    assert vlm.batch_sizes == [32, 32, 32]  # passed through, so the model layer does not re-split into 16s
    assert [len(c[1]) for c in vlm.calls] == [32, 32, 6]
    kw = KwargsVLM()
    run_generation(kw, items[:5], tmp_path / "b.jsonl", batch_size=4, progress=False)
    assert kw.seen_kw["batch_size"] == 4
    plain = FakeVLM()  # a generate without batch_size still works (nothing extra is passed)
    run_generation(plain, items[:5], tmp_path / "c.jsonl", batch_size=4, progress=False)
    assert [len(c[1]) for c in plain.calls] == [4, 1]


def test_repeated_pairs_do_not_shrink_batches(images, tmp_path):
    base = [{"id": f"a{i}", "image_path": str(images / f"im{i % 7}.png"), "prompt": f"Is there a dog {i}?"}
            for i in range(10)]
    items = base + [{**it, "id": it["id"] + "-again"} for it in base] + \
        [{"id": f"b{i}", "image_path": str(images / "im0.png"), "prompt": f"Is there a cat {i}?"} for i in range(6)]
    vlm = SizedVLM()
    run_generation(vlm, items, tmp_path / "a.jsonl", batch_size=4, progress=False)
    assert [len(c[1]) for c in vlm.calls] == [4, 4, 4, 4]  # 16 distinct pairs, every call full
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [it["id"] for it in items]


def test_batches_are_length_sorted_and_the_file_keeps_item_order(images, tmp_path):
    items = _varied(images, 40, with_text_only=True)
    vlm = SizedVLM()
    out = tmp_path / "a.jsonl"
    run_generation(vlm, items, out, batch_size=4, sort_window=4, do_sample=True, progress=False)
    assert set(vlm.batch_sizes) == {4} and all(len(c[1]) <= 4 for c in vlm.calls)
    # one window = 16 consecutive items; inside it each kind's prompts come shortest first
    pos = 0
    by_id = {it["id"]: it for it in items}
    for start in range(0, 40, 16):
        window = items[start:start + 16]
        n = len(window)
        lengths_seen: dict[bool, list[int]] = {}
        taken = 0
        while taken < n:
            images_, prompts, _ = vlm.calls[pos]
            pos += 1
            taken += len(prompts)
            assert len({im is None for im in images_}) == 1  # never mixed
            lengths_seen.setdefault(images_[0] is None, []).extend(len(p) for p in prompts)
        assert taken == n
        for kind, lengths in lengths_seen.items():
            assert lengths == sorted(lengths)
            assert sorted(lengths) == sorted(len(it["prompt"]) for it in window if (it["image_path"] is None) == kind)
    assert pos == len(vlm.calls)
    assert vlm.calls[0][1] != [it["prompt"] for it in items[:4]]  # really reordered
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [it["id"] for it in items]
    assert all(r["prompt"] == by_id[r["question_id"]]["prompt"] for r in rows)


@pytest.mark.parametrize("crash_after", [1, 2, 3, 5, 8])
def test_sorted_runs_resume_to_the_same_file(images, tmp_path, crash_after):
    items = _varied(images, 40, with_text_only=True)
    full = tmp_path / "full.jsonl"
    run_generation(SizedVLM(), items, full, batch_size=4, sort_window=3, progress=False)
    ids = [json.loads(x)["question_id"] for x in full.read_text().splitlines()]
    assert ids == [it["id"] for it in items]
    part = tmp_path / "part.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_generation(SizedVLM(fail_after=crash_after), items, part, batch_size=4, sort_window=3, progress=False)
    kept = part.read_text() if part.exists() else ""  # 1, 1, 12, 13, 25 lines: mid-window, window ends
    assert full.read_text().startswith(kept)  # what survived is a prefix of the final file, in item order
    with open(part, "a") as f:  # and a kill mid-write leaves half a line
        f.write('{"question_id": "q39", "pro')
    run_generation(SizedVLM(), items, part, batch_size=4, sort_window=3, progress=False)
    assert part.read_bytes() == full.read_bytes()
    other = tmp_path / "other.jsonl"  # a different batch size orders the file the same way
    other.write_text(kept)
    run_generation(SizedVLM(), items, other, batch_size=3, progress=False)
    assert other.read_bytes() == full.read_bytes()


# ------------------------------------------------------------------------------------- CLI generation paths
@pytest.fixture
def fake(monkeypatch):
    vlm = FakeVLM()
    seen = {}

    def load(args):
        seen.update(model=args.model, path=args.model_path, ckpt=args.ckpt_load_path)
        return vlm

    monkeypatch.setattr(evaluate.cli, "load_vlm", load)
    vlm.seen = seen
    return vlm


def test_generation_needs_a_model(tmp_path, capsys):
    rc = eval_pope.main(["--question_file", str(FIX / "pope" / "llava_pope_test.jsonl"), "--annotation_dir",
                         str(FIX / "pope"), "--answers_file", str(tmp_path / "a.jsonl"), "--output_json",
                         str(tmp_path / "o.json"), "--image_dir", str(tmp_path)])
    assert rc == 2
    assert "--model NAME" in capsys.readouterr().err


def test_pope_generation_then_scoring(fake, tmp_path):
    img_dir = tmp_path / "coco"
    img_dir.mkdir()
    for name in "abcd":
        Image.new("RGB", (8, 8)).save(img_dir / f"{name}.jpg")
    answers, out = tmp_path / "a.jsonl", tmp_path / "pope.json"
    assert eval_pope.main(["--model", "llava", "--llava_path", "/models/llava", "--llava_ckpt_load_path", "ck.pth",
                           "--question_file", str(FIX / "pope" / "llava_pope_test.jsonl"), "--image_dir",
                           str(img_dir), "--annotation_dir", str(FIX / "pope"), "--answers_file", str(answers),
                           "--output_json", str(out), "--batch_size", "3"]) == 0
    assert fake.seen == {"model": "llava", "path": "/models/llava", "ckpt": "ck.pth"}
    # the question text already ends with the suffix, so it is not appended twice
    assert [p for c in fake.calls for p in c[1] if "dog" in p] == \
        ["Is there a dog in the image?\nAnswer the question using a single word or phrase."]
    r = json.loads(out.read_text())
    # the fake says "Yes" only for the dog question (q1, label yes); "No" elsewhere
    assert (r["random"]["TP"], r["random"]["TN"], r["random"]["FN"]) == \
        (1, 2, 1)
    assert (r["popular"]["TN"], r["popular"]["FN"]) == (2, 2)


def test_mme_generation_writes_official_results(fake, tmp_path):
    B.make_mme_benchmark(tmp_path / "MME")
    res, out = tmp_path / "results", tmp_path / "mme.json"
    args = ["--model", "llava", "--llava_path", "p", "--mme_data_dir", str(tmp_path / "MME"), "--answers_file",
            str(tmp_path / "a.jsonl"), "--mme_results_dir", str(res), "--output_json", str(out)]
    assert eval_mme.main(args) == 0
    assert fake.calls[0][1][0] == ("Is this a painting by a dog? Please answer yes or no.\n"
                                   "Answer the question using a single word or phrase.")
    r = json.loads(out.read_text())
    # "Yes" for dog questions, "No" otherwise: artwork 2/2; existence e1 2/2, e2 0/2
    assert r["subtasks"]["artwork"]["score"] == 200.0 and r["subtasks"]["existence"]["score"] == 100.0
    assert r["perception"] == 300.0
    n_calls = len(fake.calls)
    assert eval_mme.main(args + ["--drop_yes_no_hint"]) == 0  # resumed: nothing left to generate
    assert len(fake.calls) == n_calls


def test_gqa_sqa_qbench_mmbench_generation(fake, tmp_path):
    # GQA
    (tmp_path / "gqa").mkdir()
    for i in ("i1", "i2"):
        Image.new("RGB", (8, 8)).save(tmp_path / "gqa" / f"{i}.jpg")
    q = tmp_path / "gqa_q.json"
    q.write_text(json.dumps(B.GQA_QUESTIONS))
    out = tmp_path / "gqa.json"
    assert eval_gqa.main(["--model", "m", "--questions_json", str(q), "--image_dir", str(tmp_path / "gqa"),
                          "--answers_file", str(tmp_path / "gqa.jsonl"), "--output_json", str(out)]) == 0
    # fake answers: q1 "No" (wrong), q2 "Yes" (dog: wrong), q3 "Red." (right), q4 "No" (wrong); q5 unbalanced
    r = json.loads(out.read_text())
    assert (r["correct"], r["total"]) == (1, 4)

    # ScienceQA: one image problem, one text-only problem (answered without an image)
    base = tmp_path / "sqa"
    (base / "images" / "test" / "1").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(base / "images" / "test" / "1" / "image.png")
    problems = {"1": {"question": "Which is a dog?", "choices": ["cat", "dog"], "answer": 1, "image": "image.png",
                      "hint": "Look."},
                "2": {"question": "Which is bigger?", "choices": ["ant", "whale"], "answer": 0, "image": None,
                      "hint": ""}}
    (base / "problems.json").write_text(json.dumps(problems))
    (base / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"]}))
    out = tmp_path / "sqa.json"
    assert eval_sqa.main(["--model", "m", "--base_dir", str(base), "--result_file", str(tmp_path / "sqa.jsonl"),
                          "--output_json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["correct"], r["total"], r["img_correct"], r["img_total"]) == (1, 2, 1, 1)  # "B" both times
    rows = [json.loads(x) for x in (tmp_path / "sqa.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == ("<image>\nContext: Look.\nWhich is a dog?\nA. cat\nB. dog\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert not rows[1]["prompt"].startswith("<image>")

    # Q-Bench
    (tmp_path / "qb").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "qb" / "0.png")
    qf = tmp_path / "qb.json"
    qf.write_text(json.dumps([{"img_path": "0.png", "question": "Is it blurry?", "candidates": ["Yes", "No"],
                               "correct_ans": "No", "type": 0, "concern": 0}]))
    out = tmp_path / "qb_out.json"
    assert eval_qbench.main(["--model", "m", "--questions_json", str(qf), "--image_dir", str(tmp_path / "qb"),
                             "--answers_file", str(tmp_path / "qb.jsonl"), "--output_json", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == 1.0

    # MMBench with LLaVA's rotations: "B" is right only where the answer sits at B
    tsv = B.write_mmbench_tsv(tmp_path / "mmb.tsv")
    out = tmp_path / "mmb.json"
    assert eval_mmbench.main(["--model", "m", "--tsv", str(tsv), "--answers_file", str(tmp_path / "mmb.jsonl"),
                              "--output_json", str(out), "--all_rounds"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "mmb.jsonl").read_text().splitlines()]
    assert len(rows) == 4 + 2 + 4 + 2 and rows[1]["round_id"] == 1
    r = json.loads(out.read_text())
    assert (r["accuracy"], r["circular_accuracy"]) == (0.0, 0.0)


def test_eval_caption_efuf_selection_and_resume(fake, tmp_path):
    folder = tmp_path / "train2014"
    folder.mkdir()
    for i in (5, 3, 9, 1, 7):
        Image.new("RGB", (8, 8)).save(folder / f"COCO_train2014_{i:012d}.jpg")
    (folder / "notes.txt").write_text("not an image")
    objects = tmp_path / "objects.txt"
    objects.write_text("COCO_train2014_000000000003.jpg ### dog, cat ### 1.0\n")
    out = tmp_path / "caps.jsonl"
    args = ["--model", "llava", "--image_dir", str(folder), "--objects_file", str(objects), "--num_images", "3",
            "--output_file", str(out), "--output_json", str(tmp_path / "summary.json")]
    assert eval_caption.main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # sorted, 3 excluded, first three of the rest
    assert rows == [{"image_id": i, "image": f"COCO_train2014_{i:012d}.jpg", "caption": "A dog and a cat."}
                    for i in (1, 5, 7)]
    assert fake.calls[0][2] == {"max_new_tokens": 200, "num_beams": 5, "do_sample": False}  # EFUF defaults
    assert eval_caption.main(args + ["--num_images", "4"]) == 0  # resume: only image 9 is new
    assert [json.loads(x)["image_id"] for x in out.read_text().splitlines()] == [1, 5, 7, 9]
    assert sum(len(c[1]) for c in fake.calls) == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["generated"], summary["already_done"]) == (1, 3)


def test_config_file_supplies_defaults(fake, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "COCO_val2014_000000000042.jpg")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: llava\nllava_path: /ckpt/llava\nnum_beams: 1\nmax_new_tokens: 9\n")
    out = tmp_path / "c.jsonl"
    assert eval_caption.main(["--config", str(cfg), "--image_dir", str(folder), "--output_file", str(out),
                              "--max_new_tokens", "11"]) == 0
    assert fake.seen["path"] == "/ckpt/llava"
    assert fake.calls[0][2] == {"max_new_tokens": 11, "num_beams": 1, "do_sample": False}  # flag beats config
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_flag: 1\n")
    assert eval_caption.main(["--config", str(bad), "--image_dir", str(folder), "--output_file", str(out)]) == 2


def test_append_jsonl_then_resume_ids(tmp_path):
    out = tmp_path / "x.jsonl"
    append_jsonl(out, [{"image": "a.jpg", "caption": "x"}])
    assert load_done_ids(out, "image") == {"a.jpg"}
    assert load_done_ids(tmp_path / "absent.jsonl", "image") == set()


def test_identical_image_prompt_pairs_are_generated_once_when_greedy(images, tmp_path):
    # POPE's three splits repeat their positive questions: greedy answers are generated once per (image, prompt)
    base = _items(images, 3)
    items = base + [{**it, "id": it["id"] + "-again"} for it in base]
    vlm = FakeVLM()
    run_generation(vlm, items, tmp_path / "a.jsonl", batch_size=4, progress=False)
    assert sum(len(p) for _, p, _ in vlm.calls) == 3
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [it["id"] for it in items]
    assert rows[0]["text"] == rows[3]["text"]
    sampled = FakeVLM()
    run_generation(sampled, items, tmp_path / "s.jsonl", batch_size=4, do_sample=True, progress=False)
    assert sum(len(p) for _, p, _ in sampled.calls) == 6  # sampling: every item its own draw
