"""Stethoscope's relevancy and logit lens against brute-force references on tiny checkpoints of every family."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from stethoscope.relevancy import Explainer

QUESTION, ANSWER = "Describe the image.", "a red ball and a box"


def _explainer(tiny_dir, family):
    from common.models import load_model

    vlm = load_model(family, tiny_dir(family), dtype="float32", device="cpu", attn_implementation="eager")
    return Explainer(vlm)


def _image():
    import numpy as np

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))


def _brute_force(ex: Explainer, k: int):
    """Token k the naive way: its own fresh forward, `.backward()` of its logit with `retain_grad` on every map,
    then the rules written out as plain loops (no code shared with the explainer beyond capturing the maps)."""
    from common.models import Sample

    vlm = ex.vlm
    batch = vlm.build_batch([Sample(_image(), QUESTION, target=ANSWER, add_eos=False)])
    maps = {g: [] for g in ex.groups}
    hooks = [h for g, mods in ex.groups.items() for _, m in mods for h in ex._capture(m, maps[g])]
    inputs = {k_: (v.detach().clone().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k_, v in batch.inputs.items()}
    with torch.enable_grad():
        out = vlm.model(**inputs, use_cache=False)
    for h in hooks:
        h.remove()
    for group in maps.values():
        for a in group:
            a.retain_grad()
    labels = batch.labels[0]
    where = torch.nonzero(labels != -100).flatten().tolist()
    pred, tok = where[k] - 1, int(labels[where[k]])
    out.logits[0, pred, tok].backward()

    def cam(a):
        g = a.grad if a.grad is not None else torch.zeros_like(a)
        c = torch.zeros(a.shape[-2:], dtype=torch.float64)
        for h in range(a.shape[1]):
            c += (g[0, h].double() * a[0, h].detach().double()).clamp(min=0)
        return c / a.shape[1]

    n = pred + 1
    r = torch.eye(n, dtype=torch.float64)
    rows = []
    for a in maps["llm"]:
        r = r + cam(a)[:n, :n] @ r
        rows.append((r - torch.eye(n, dtype=torch.float64))[n - 1])
    rows = torch.stack(rows)
    image_pos = torch.nonzero(vlm.token_positions(batch)["image"][0][:n]).flatten()
    patches = None
    if maps["vision"]:
        nv = maps["vision"][0].shape[-1]
        rv = torch.eye(nv, dtype=torch.float64)
        for a in maps["vision"]:
            rv = rv + cam(a) @ rv
        if maps["bridge"]:
            def residual(m):
                e = torch.eye(m.shape[0], dtype=torch.float64)
                x = m - e
                s = x.sum(1, keepdim=True)
                x = torch.where(s != 0, x / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(x))
                return x + e

            q = maps["bridge"][0].shape[-2]
            sq = maps["bridge"][0].shape[-1] if maps["bridge"][0].shape[-1] == maps["bridge"][0].shape[-2] else q
            r_ss, r_si = torch.eye(sq, dtype=torch.float64), torch.zeros(sq, nv, dtype=torch.float64)
            for a in maps["bridge"]:
                c = cam(a)
                if c.shape[0] == c.shape[1]:
                    r_si, r_ss = r_si + c @ r_si, r_ss + c @ r_ss
                    continue
                rows_q = c.shape[0]
                if c.shape[1] == rows_q + nv:
                    s_part, c = c[:, :rows_q], c[:, rows_q:]
                    r_si[:rows_q] = r_si[:rows_q] + s_part @ r_si[:rows_q]
                    r_ss[:rows_q, :rows_q] = r_ss[:rows_q, :rows_q] + s_part @ r_ss[:rows_q, :rows_q]
                r_si[:rows_q] = r_si[:rows_q] + residual(r_ss[:rows_q, :rows_q]).T @ c @ residual(rv)
            used = min(len(image_pos), r_si.shape[0])
            patches = (rows[:, image_pos[:used]] @ r_si[:used])[:, 1:]
        else:
            patches = rows[:, image_pos] @ rv[1:, 1:]
    return rows, patches


@pytest.mark.parametrize("family", ["llava", "blip2", "owl"])
def test_relevancy_equals_a_brute_force_reference(tiny_dir, family):
    ex = _explainer(tiny_dir, family)
    tr = ex.trace(_image(), QUESTION, ANSWER)
    assert len(tr.answer_ids) >= 3 and ex.groups["vision"] and tr.maps["vision"]
    for k in range(len(tr.answer_ids)):
        got = ex.explain(tr, k)
        rows, patches = _brute_force(ex, k)
        assert torch.allclose(got.full.double(), rows, atol=1e-5, rtol=0), (family, k)
        assert got.patches is not None and patches is not None
        assert torch.allclose(got.patches.flatten(1).double(), patches, atol=1e-5, rtol=0), (family, k)
        assert float(rows.abs().sum()) > 0  # not a vacuous match of zeros


@pytest.mark.parametrize("family", ["llava", "blip2"])
def test_explaining_a_token_does_not_depend_on_the_tokens_explained_before(tiny_dir, family):
    ex = _explainer(tiny_dir, family)
    alone = ex.explain(ex.trace(_image(), QUESTION, ANSWER), 2)
    tr = ex.trace(_image(), QUESTION, ANSWER)
    for k in (0, 1):
        ex.explain(tr, k)
    after = ex.explain(tr, 2)
    assert torch.equal(alone.full, after.full) and torch.equal(alone.patches, after.patches)
    assert torch.equal(ex.explain_all(tr)[2].full, alone.full)
    assert all(p.grad is None for p in ex.vlm.model.parameters())  # no weight gradient, ever


@pytest.mark.parametrize("family", ["llava", "llava_next", "blip2", "instructblip", "hf", "minigpt4", "owl",
                                    "share4v"])
def test_every_family_explains_and_its_logit_lens_ends_at_the_model_distribution(tiny_dir, family):
    """The logit lens applies the final norm: its last layer is the model's own output distribution."""
    ex = _explainer(tiny_dir, family)
    tr = ex.trace(_image(), QUESTION, ANSWER)
    r = ex.explain(tr, 1)
    n_llm = len(ex.groups["llm"])
    assert r.full.shape[0] == n_llm and r.image.shape == (n_llm, int(tr.image[:tr.predictor[1] + 1].sum()))
    assert r.previous.shape == (n_llm, 1) and r.question.shape[1] > 0
    lens = ex.logit_lens(tr, 1, top_k=3)
    own = torch.softmax(tr.logits[1].detach().float(), dim=-1)
    assert lens["probs"].shape[0] == n_llm + 1
    assert torch.allclose(lens["probs"][-1], own, atol=1e-5)
    assert int(lens["rank"][-1]) == int((own > own[tr.answer_ids[1]]).sum())
    assert len(lens["top"][0]) == 3
    if family != "llava_next":  # its crops + newline tokens do not form one patch grid
        assert r.patches is not None and r.patches.shape[1] == r.patches.shape[2]


def test_sdpa_models_are_refused_with_one_clear_line(tiny_dir):
    from common.errors import LetheError
    from common.models import load_model

    vlm = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu", attn_implementation="sdpa")
    with pytest.raises(LetheError, match="attn_implementation='eager'"):
        Explainer(vlm)


# ------------------------------------------------------------------------------------------------ calibration
def test_visual_contribution_modes_and_threshold_by_hand():
    from stethoscope.calibrate import increments, visual_contribution, youden_threshold

    assert torch.equal(increments(torch.tensor([[1.0, 2.0], [1.5, 2.0], [4.0, 3.0]])),
                       torch.tensor([[1.0, 2.0], [0.5, 0.0], [2.5, 1.0]]))
    img, q, p = torch.tensor([0.2, 0.6]), torch.tensor([0.1, 0.3]), torch.tensor([0.4])
    assert visual_contribution(img, q, p, "max") == pytest.approx(0.6 / 0.4)
    assert visual_contribution(img, q, p, "sum") == pytest.approx(0.8 / 0.8)
    assert visual_contribution(img, q, p, "mean") == pytest.approx(0.4 / (0.8 / 3))
    # hallucinated (1) tokens have VC 0.1/0.2, correct ones 0.5/0.9: any threshold in (0.2, 0.5] separates them
    thr = youden_threshold([0.1, 0.2, 0.5, 0.9], [1, 1, 0, 0])
    assert 0.2 <= thr < 0.5 and all((s <= thr) == bool(y) for s, y in zip([0.1, 0.2, 0.5, 0.9], [1, 1, 0, 0]))


def test_token_spans_cover_the_decoded_answer(tiny_dir):
    from common.models import load_model
    from stethoscope.calibrate import token_spans

    tok = load_model("llava", tiny_dir("llava"), dtype="float32", device="cpu").tokenizer
    ids = tok("a red ball and a box", add_special_tokens=False)["input_ids"]
    spans = token_spans(tok, ids)
    text = tok.decode(ids)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert "".join(text[a:b] for a, b in spans) == text


def test_calibration_chooses_on_one_half_and_measures_on_the_other():
    from stethoscope.calibrate import calibrate

    def row(y, vc_good):  # layer 1 of mode "sum" separates; everything else is noise
        noise = 0.5
        return {"hallucinated": y, "vc": {k: [noise, vc_good if k == "layer:sum" else noise]
                                          for k in ("cumulative:max", "cumulative:sum", "layer:sum", "layer:mean")}}

    images = [[row(1, 0.1), row(0, 0.8 + 0.01 * i)] for i in range(20)]
    s = calibrate(images, seed=0)
    assert (s["mode"], s["layer"]) == ("layer:sum", 1) and s["auroc"] == 1.0 and s["calibration_auroc"] == 1.0
    assert s["n_tokens"] == 20 and s["calibration_tokens"] == 20 and 0.1 <= s["threshold"] < 0.8
    assert s["flag_recall"] == 1.0 and s["flag_precision"] == 1.0


def test_calibrate_cli_on_a_tiny_model_and_the_toy_world(tiny_dir, toy_world, tmp_path, capsys):
    """End to end on a random tiny LLaVA with given captions (a random model names no object): each caption names
    one object the image shows and one it does not, so both labels occur; the files and their format are checked
    (a random model's AUROC means nothing)."""
    import json

    from stethoscope.calibrate import coco_truth, main

    truth = coco_truth(toy_world / "annotations/instances_val.json")
    names = ["ball", "box", "tent", "kite", "flower", "cup", "bottle", "boat", "clock", "plane"]
    rows = []
    for f, cats in sorted(truth.items())[:16]:
        present = sorted(cats)[0]
        absent = next(n for n in names if n not in cats)
        rows.append({"image": f, "caption": f"There is a {present} and a {absent}."})
    caps = tmp_path / "captions.jsonl"
    caps.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "cal"
    rc = main(["--model", "llava", "--llava_path", tiny_dir("llava"), "--image_dir", str(toy_world / "images/val"),
               "--annotations", str(toy_world / "annotations/instances_val.json"), "--synonyms",
               str(toy_world / "synonyms.txt"), "--captions_file", str(caps), "--output_dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert {"auroc", "threshold", "n_tokens", "mode", "layer"} <= set(summary) and summary["images"] == 16
    scored = [json.loads(x) for x in (out / "tokens.jsonl").read_text().splitlines()]
    assert len(scored) == 32 and sum(r["hallucinated"] for r in scored) == 16
    assert all(set(r["vc"]) == {f"{k}:{m}" for k in ("cumulative", "layer") for m in ("max", "sum", "mean")}
               and len(r["vc"]["layer:sum"]) == 2 for r in scored)
    assert summary["n_tokens"] + summary["calibration_tokens"] == 32
    assert main(["--model", "llava", "--llava_path", tiny_dir("llava"), "--data", str(toy_world), "--captions_file",
                 str(caps), "--output_dir", str(tmp_path / "cal2"), "--synonyms", str(toy_world / "synonyms.txt")]) == 0
    assert json.loads((tmp_path / "cal2" / "summary.json").read_text())["images"] == 16  # --data: the COCO layout
    assert main(["--model", "llava", "--llava_path", tiny_dir("llava"), "--image_dir", str(tmp_path),
                 "--annotations", str(toy_world / "annotations/instances_val.json"), "--output_dir", str(out)]) == 2
    assert "no image named" in capsys.readouterr().err


def test_a_killed_calibration_resumes_where_it_stopped(tiny_dir, toy_world, tmp_path, monkeypatch):
    """Captions are appended chunk by chunk and scored images one by one: a run killed in its second chunk of
    captions, then one killed while scoring, lose nothing; the resumed result equals an uninterrupted run."""
    import json

    from common.models.base import VisionLanguageModel
    from stethoscope import calibrate

    calls = {"generate": [], "score": 0}

    def fake_generate(self, images, prompts, **kw):  # a caption naming a shown and an absent object
        calls["generate"].append(len(images))
        if len(calls["generate"]) == 2 and not calls.get("resumed"):
            raise KeyboardInterrupt  # killed in the second chunk
        return ["There is a ball and a box." for _ in images]

    real_score = calibrate.score_caption

    def counting_score(*args, **kw):
        calls["score"] += 1
        if calls["score"] == 5 and not calls.get("resumed_scoring"):
            raise KeyboardInterrupt  # killed while scoring the 5th image
        return real_score(*args, **kw)

    monkeypatch.setattr(VisionLanguageModel, "generate", fake_generate)
    monkeypatch.setattr(calibrate, "score_caption", counting_score)
    argv = ["--model", "llava", "--llava_path", tiny_dir("llava"), "--data", str(toy_world), "--synonyms",
            str(toy_world / "synonyms.txt"), "--num_images", "16", "--batch_size", "2"]
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        calibrate.main([*argv, "--output_dir", str(out)])
    assert len((out / "captions.jsonl").read_text().splitlines()) == 8  # the first chunk was kept
    calls["resumed"] = True
    with pytest.raises(KeyboardInterrupt):
        calibrate.main([*argv, "--output_dir", str(out)])
    assert calls["generate"][-1] == 8  # only the missing captions were generated
    assert len((out / "scored.jsonl").read_text().splitlines()) == 4
    calls["resumed_scoring"] = True
    calls["score"] = 0
    assert calibrate.main([*argv, "--output_dir", str(out)]) == 0
    assert calls["score"] == 12  # the 4 scored images were not scored again
    resumed = json.loads((out / "summary.json").read_text())
    fresh = tmp_path / "fresh"
    assert calibrate.main([*argv, "--output_dir", str(fresh)]) == 0
    assert json.loads((fresh / "summary.json").read_text()) == resumed
    assert (fresh / "tokens.jsonl").read_text() == (out / "tokens.jsonl").read_text()
    calls["score"] = 0
    assert calibrate.main([*argv, "--output_dir", str(fresh), "--restart"]) == 0 and calls["score"] == 16
