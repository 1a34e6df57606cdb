"""SLUG: layer statistics, Pareto front, step-size search, gradients, the CLIs end to end and the VLM mode."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from slug.layers import eligible, front_by_tower, layer_stat, pareto_front, tensor_stats, tower_of
from slug.search import initial_lambda, search


# ------------------------------------------------------------------------------------------------ layer statistics
def test_importance_and_alignment_equal_hand_computed_values():
    theta = torch.tensor([[3.0, 4.0]])  # ‖θ‖ = 5
    g_f = torch.tensor([[0.0, 1.0]])  # ‖g_f‖ = 1
    g_r = torch.tensor([[-1.0, -1.0]])  # cos(g_r, g_f) = -1/√2
    s = layer_stat("visual.transformer.resblocks.0.attn.out_proj.weight", tensor_stats(theta, g_f, g_r))
    assert s.importance == pytest.approx(0.2)
    assert s.alignment == pytest.approx(1 / math.sqrt(2))  # the absolute cosine
    assert s.tower == "vision"
    zero = layer_stat("transformer.resblocks.0.mlp.c_fc.weight", tensor_stats(theta, g_f, torch.zeros(1, 2)))
    assert zero.alignment == 0.0 and zero.tower == "text"


def test_importance_and_alignment_of_a_two_layer_model_by_hand():
    """Two linear layers y = W2 W1 x; forget loss = sum(y), retain loss = sum(y²); gradients by hand."""
    w1 = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    w2 = torch.tensor([[2.0, -1.0]])
    x = torch.tensor([1.0, 1.0])
    h = w1 @ x  # [3, 1]
    y = w2 @ h  # [5]
    # d sum(y)/dW2 = hᵀ, d sum(y)/dW1 = W2ᵀ xᵀ; d sum(y²)/dW = 2y · (the same)
    gf = {"w1": torch.outer(w2[0], x), "w2": h.view(1, -1)}
    gr = {k: 2 * y[0] * v for k, v in gf.items()}
    a = torch.nn.Parameter(w1.clone())
    b = torch.nn.Parameter(w2.clone())
    auto_f = torch.autograd.grad((b @ (a @ x)).sum(), [a, b])
    auto_r = torch.autograd.grad(((b @ (a @ x)) ** 2).sum(), [a, b])
    for (k, w), f, r in zip((("w1", w1), ("w2", w2)), auto_f, auto_r):
        assert torch.allclose(f, gf[k]) and torch.allclose(r, gr[k])
        s = layer_stat(k, tensor_stats(w, f, r))
        assert s.importance == pytest.approx(float(gf[k].norm() / w.norm()))
        assert s.alignment == pytest.approx(1.0)  # g_r ∥ g_f here
    assert layer_stat("w2", tensor_stats(w2, auto_f[1], auto_r[1])).importance == pytest.approx(math.sqrt(10) / math.sqrt(5))


def test_eligible_tensors_and_towers():
    assert eligible("visual.transformer.resblocks.0.attn.in_proj_weight", (96, 32))
    assert eligible("vision_model.encoder.layers.0.self_attn.q_proj.weight", (32, 32))
    for name, shape in (("visual.transformer.resblocks.0.attn.in_proj_bias", (96,)),
                        ("positional_embedding", (77, 32)), ("token_embedding.weight", (100, 32)),
                        ("visual.conv1.weight", (32, 3, 16, 16)), ("logit_scale", ()),
                        ("text_model.embeddings.token_embedding.weight", (100, 32)),
                        ("vision_model.post_layernorm.weight", (32,)), ("visual.ln_post.weight", (32,))):
        assert not eligible(name, shape), name
    assert tower_of("visual.proj") == "vision" and tower_of("visual_projection.weight") == "vision"
    assert tower_of("text_projection") == "text" and tower_of("text_model.encoder.layers.0.mlp.fc1.weight") == "text"


def test_pareto_front_on_a_hand_made_point_set_with_ties():
    pts = {"a": (0.1, 1.0), "b": (0.2, 2.0), "c": (0.3, 1.5),  # c dominated by b (lower alignment, higher imp.)
           "d": (0.1, 1.0),  # equal to a: neither dominates the other
           "e": (0.2, 0.5),  # same alignment as b, lower importance: dominated by a (0.1 < 0.2 and 1.0 > 0.5)
           "f": (0.05, 0.2), "g": (0.4, 2.0)}  # g: same importance as b, higher alignment: not strictly dominated
    assert set(pareto_front(pts)) == {"a", "b", "d", "f", "g"}
    assert pareto_front(pts)[:2] == ["b", "g"]  # by importance, then alignment
    assert pareto_front({}) == []
    stats = [layer_stat(n, {"weight_norm": 1.0, "forget_norm": i, "retain_norm": 1.0, "dot": a * i})
             for n, (a, i) in (("visual.x", (0.5, 1.0)), ("visual.y", (0.1, 2.0)), ("text.z", (0.9, 0.1)))]
    assert front_by_tower(stats) == {"vision": ["visual.y"], "text": ["text.z"]}


# ------------------------------------------------------------------------------------------------ the search
def _monotone(result):
    los = [t.lo for t in result.trials]
    his = [t.hi for t in result.trials]
    assert all(a <= b for a, b in zip(los, los[1:])) and all(a >= b for a, b in zip(his, his[1:]))
    for before, t in zip(result.trials, result.trials[1:]):  # every λ lies inside the bracket known before it
        assert before.lo <= t.lam <= before.hi


def test_search_is_monotone_and_stops_at_the_first_lambda_meeting_both_bounds():
    calls = []

    def trial(lam):  # forget falls with λ, retain too; both bounds met for λ in [2, 3]
        calls.append(lam)
        return (0.0 if lam >= 2 else 0.5), (0.9 if lam <= 3 else 0.5), {}

    r = search(trial, 0.25, target=0.1, bound=0.8, max_iter=10)
    assert r.success and 2 <= r.lam <= 3 and r.trials[-1].verdict == "ok"
    assert calls[:4] == [0.25, 0.5, 1.0, 2.0]  # doubling until the forget target is reached
    _monotone(r)
    r = search(trial, 16.0, target=0.1, bound=0.8, max_iter=10)  # too large first: bisect down
    assert r.success and 2 <= r.lam <= 3 and [t.verdict for t in r.trials][:2] == ["decrease", "decrease"]
    _monotone(r)


def test_search_terminates_within_its_iteration_limit_and_keeps_the_best_effort():
    never = search(lambda lam: (0.9, 1.0, {}), 1.0, target=0.1, bound=0.5, max_iter=7)
    assert not never.success and len(never.trials) == 7 and never.lam is None
    _monotone(never)

    def tradeoff(lam):  # forget and retain both fall with λ; retain breaks the bound (0.5) at λ = 2, forget > 0.1
        return max(0.2, 1 - lam / 4), (1.0 if lam < 2 else 0.0), {}

    r = search(tradeoff, 0.5, target=0.1, bound=0.5, max_iter=10)
    assert not r.success and len(r.trials) == 10
    _monotone(r)
    best = r.best_effort  # converges on the largest λ below 2: the lowest forget within the retain bound
    assert best.lam < 2 and best.lam > 1.9 and best.retain_top1 == 1.0
    assert best.forget_top1 == min(t.forget_top1 for t in r.trials if t.retain_top1 >= 0.5)
    broken = search(lambda lam: (0.9, 0.1, {}), 1.0, target=0.1, bound=0.5, max_iter=5)
    assert [t.verdict for t in broken.trials] == ["decrease"] * 5 and broken.best_effort is None
    assert initial_lambda(5.0, 2.0, 10.0) == pytest.approx(0.25)
    assert search(lambda lam: (0, 1, {}), 0.0, 0.1, 0.5).trials == []  # a zero gradient: nothing to try


def test_layer_choice_prefers_success_then_retain_and_falls_back_to_the_best_effort():
    from slug.unlearn import pick

    r = {"a": {"success": True, "lambda": 2.0, "forget_top1": 0.0, "retain_top1": 0.97},
         "b": {"success": True, "lambda": 1.0, "forget_top1": 0.05, "retain_top1": 0.99},
         "c": {"success": False, "lambda": 3.0, "forget_top1": 0.0, "retain_top1": 1.0}}
    assert pick(r)[0] == "b"
    fallback = {"a": {"success": False, "lambda": 2.0, "forget_top1": 0.4, "retain_top1": 0.97},
                "b": {"success": False, "lambda": 1.0, "forget_top1": 0.6, "retain_top1": 0.99},
                "c": {"success": False, "lambda": None, "forget_top1": None, "retain_top1": None}}
    layer, why = pick(fallback)
    assert layer == "a" and "best effort" in why
    assert pick({"c": fallback["c"]})[0] is None


# ------------------------------------------------------------------------------------------------ gradients
@pytest.fixture
def pairs(images, tmp_path):
    from common.retrieval import RetrievalSplit

    paths = []
    for k, im in enumerate(images):
        p = tmp_path / f"im{k}.png"
        im.save(p)
        paths.append(p)
    caps = [["a red ball"], ["a blue box"], ["a green tent"], ["a pink flower"]]
    return RetrievalSplit.from_groups("pairs", [p.name for p in paths], paths, caps)


def _clip(tiny_dir, family="open_clip"):
    from common.models import load_model

    return load_model("clip", tiny_dir(family), device="cpu")


def test_retain_gradient_is_the_same_whether_or_not_the_forget_pass_ran_first(tiny_dir, pairs):
    from slug.grads import mean_gradient

    clip = _clip(tiny_dir)
    names = [n for n, p in clip.model.named_parameters() if eligible(n, p.shape)]
    alone, loss_alone = mean_gradient(clip, pairs, "retain", names, batch_size=2)
    mean_gradient(clip, pairs, "forget", names, batch_size=2)
    after, loss_after = mean_gradient(clip, pairs, "retain", names, batch_size=2)
    assert loss_alone == loss_after and all(torch.equal(alone[n], after[n]) for n in names)
    assert all(p.grad is None for p in clip.model.parameters())  # nothing accumulates in .grad


def test_gradients_are_the_mean_over_batches_of_the_stated_losses(tiny_dir, pairs):
    """g_f = ∇ mean cos(f_I, f_T); with 2 batches of 2 the mean of the two batch gradients (not their sum)."""
    from slug.grads import mean_gradient

    clip = _clip(tiny_dir)
    name = next(n for n, p in clip.model.named_parameters() if eligible(n, p.shape) and tower_of(n) == "vision")
    p = dict(clip.model.named_parameters())[name]
    got, loss = mean_gradient(clip, pairs, "forget", [name], batch_size=2)
    by_hand, values = [], []
    for idx in ([0, 1], [2, 3]):
        fi = clip.encode_image(clip.preprocess([pairs.image(i) for i in idx]))
        ft = clip.encode_text([pairs.texts[i] for i in idx])
        value = torch.nn.functional.cosine_similarity(fi, ft).mean()
        by_hand.append(torch.autograd.grad(value, [p])[0])
        values.append(float(value.detach()))
    assert torch.allclose(got[name], (by_hand[0] + by_hand[1]) / 2, atol=1e-6)
    assert loss == pytest.approx(sum(values) / 2, rel=1e-6)


def test_a_step_along_the_forget_gradient_lowers_the_forget_loss(tiny_dir, pairs):
    """The sign convention: θ − λ·g_f with λ > 0 lowers the mean forget-pair cosine."""
    from slug.grads import mean_gradient
    from slug.unlearn import LayerEditor

    clip = _clip(tiny_dir)
    names = [n for n, p in clip.model.named_parameters() if eligible(n, p.shape)]
    g, before = mean_gradient(clip, pairs, "forget", names, batch_size=4)
    name = max(names, key=lambda n: float(g[n].norm()))
    editor = LayerEditor(clip.model, g)
    editor.apply(name, 1e-2 / float(g[name].norm()))
    _, after = mean_gradient(clip, pairs, "forget", names, batch_size=4)
    assert after < before
    editor.restore(name)
    _, again = mean_gradient(clip, pairs, "forget", names, batch_size=4)
    assert again == pytest.approx(before, abs=1e-6)


# ------------------------------------------------------------------------------------------------ the CLIs
def _sets(toy, concept="ball"):
    cls = toy / "classification"
    return ["--concept", concept, "--forget_images", str(cls / "val" / concept), "--class_names",
            str(cls / "classes.json"), "--retain_folder", str(cls / "val"), "--templates", "a photo containing a {}."]


@pytest.fixture(scope="module")
def slug_data(toy_world, tmp_path_factory):
    """The toy world's forget set for 'ball' (train), its held-out pairs (val) and a retain set."""
    from slug.create_forget_set import main

    d = tmp_path_factory.mktemp("slugdata")
    assert main(["--name", "ball", "--source", f"toy:{toy_world}:train", "--n_imgs", "0", "--out",
                 str(d / "ball.tar"), "--exclude_out", str(d / "retain.tar"), "--n_retain", "40"]) == 0
    assert main(["--name", "ball", "--source", f"toy:{toy_world}:val", "--n_imgs", "0", "--out",
                 str(d / "ball_val.tar")]) == 0
    return d


def _grads(tiny, data, out):
    from slug.compute_grad import main

    assert main(["--clip_path", tiny, "--forget", str(data / "ball.tar"), "--retain", str(data / "retain.tar"),
                 "--grad_batch_size", "16", "--grads_dir", str(out)]) == 0


@pytest.mark.parametrize("family", ["open_clip", "clip"])
def test_slug_end_to_end_edits_exactly_one_tensor(tiny_dir, toy_world, slug_data, tmp_path, family, capsys):
    """compute_grad → unlearn → eval → table on a tiny CLIP of each backend. Bounds that the first trial meets (a
    random tiny CLIP cannot be made to forget anything meaningful): the plumbing, not the effect, is tested here."""
    from common.models import load_model
    from safetensors.torch import load_file
    from slug.eval import main as eval_main
    from slug.unlearn import main as unlearn_main

    tiny = tiny_dir(family)
    _grads(tiny, slug_data, tmp_path / "grads")
    stats = json.loads((tmp_path / "grads" / "stats.json").read_text())
    g = load_file(str(tmp_path / "grads" / "forget_grads.safetensors"))
    assert set(g) == set(stats["tensors"]) and all(eligible(n, t.shape) for n, t in g.items())
    assert {t["tower"] for t in stats["tensors"].values()} == {"vision", "text"}
    assert not (tmp_path / "grads" / "retain_grads.safetensors").exists()  # one full-size copy, not two
    out = tmp_path / "run"
    assert unlearn_main(["--clip_path", tiny, "--grads_dir", str(tmp_path / "grads"), *_sets(toy_world),
                         "--forget_target", "1.0", "--max_retain_drop", "1.0", "--output_dir", str(out)]) == 0
    trace = json.loads((out / "trace.json").read_text())
    layer = trace["layer"]
    assert trace["success"] and layer in trace["candidates"]
    assert set(trace["candidates"]) <= set(trace["fronts"]["vision"]) | set(trace["fronts"]["text"])
    assert (out / "pareto_vision.png").stat().st_size > 0 and (out / "search.png").stat().st_size > 0
    saved = load_file(str(out / "trainable.safetensors"))
    assert list(saved) == [layer]
    before = load_model("clip", tiny, device="cpu").model.state_dict()
    after = load_model("clip", tiny, device="cpu", ckpt_load_path=str(out)).model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [layer]
    lam = trace["lambda"]
    assert torch.allclose(after[layer], before[layer] - lam * g[layer], atol=1e-6)
    for name, run in (("original", None), ("slug", out)):
        argv = ["--clip_path", tiny, *_sets(toy_world), "--mia_members", str(slug_data / "ball.tar"),
                "--mia_holdout", str(slug_data / "ball_val.tar"), "--output_json", str(tmp_path / f"{name}.json")]
        if run:
            argv += ["--clip_ckpt_load_path", str(run), "--run_info", str(run / "trace.json")]
        assert eval_main(argv) == 0
    rep = json.loads((tmp_path / "slug.json").read_text())
    assert rep["layer"] == layer and rep["wall_s"] > 0 and 0 <= rep["mia"]["accuracy"] <= 1
    assert rep["chance_top1"] == pytest.approx(0.1) and rep["forget"]["images"] == 30
    assert eval_main(["--table", f"original={tmp_path / 'original.json'}", f"slug={tmp_path / 'slug.json'}",
                      "--summary_json", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"chance_top1", "original", "slug"}
    assert {"forget_top1", "retain_top1", "wall_s", "layer"} <= set(summary["slug"])


def test_the_evaluator_reuses_only_the_untouched_tower(tiny_dir, toy_world, slug_data, tmp_path):
    """A partial evaluation after an edit equals a full evaluation of the same weights, also after another
    tower's edit was undone (the reference is the last full evaluation, never a trial's features)."""
    from slug.compute_grad import GradArguments, compute
    from slug.data import load_pairs
    from slug.unlearn import LayerEditor
    from slug.zeroshot import EvalSetArguments, Evaluator, build_sets

    clip = _clip(tiny_dir)
    g_f, _, _ = compute(clip, load_pairs(str(slug_data / "ball.tar")), load_pairs(str(slug_data / "retain.tar")),
                        GradArguments(), progress=False)
    ev = EvalSetArguments(concept="ball", forget_images=str(toy_world / "classification/val/ball"),
                          retain_folder=str(toy_world / "classification/val"))
    sets = list(build_sets(ev).values())
    fast = Evaluator(clip, sets, ev.templates)
    fast.evaluate()
    editor = LayerEditor(clip.model, g_f)
    vis = next(n for n in g_f if tower_of(n) == "vision")
    txt = next(n for n in g_f if tower_of(n) == "text")
    for name, tower in ((vis, "vision"), (txt, "text")):
        editor.apply(name, 50 * float(dict(clip.model.named_parameters())[name].detach().norm() / g_f[name].norm()))
        assert fast.evaluate(changed=tower) == Evaluator(clip, sets, ev.templates).evaluate()
        editor.restore(name)


def test_bad_input_is_one_error_line(tiny_dir, toy_world, slug_data, tmp_path, capsys):
    from slug.compute_grad import main as grad_main
    from slug.unlearn import main as unlearn_main

    tiny = tiny_dir("open_clip")
    _grads(tiny, slug_data, tmp_path / "grads")
    capsys.readouterr()

    def err(fn, argv) -> str:
        assert fn(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    base = ["--clip_path", tiny, "--grads_dir", str(tmp_path / "grads"), "--output_dir", str(tmp_path / "o")]
    msg = err(unlearn_main, [*base, *_sets(toy_world), "--layers", "visual.transformer.resblocks.0.attn.out_prj.weight"])
    assert "no eligible tensor" in msg and "close: visual.transformer.resblocks.0.attn.out_proj.weight" in msg
    assert "not among" in err(unlearn_main, [*base, *_sets(toy_world, "unicorn")])
    assert "compute_grad" in err(unlearn_main, [*base[:2], "--grads_dir", str(tmp_path / "none"), *_sets(toy_world)])
    assert "another checkpoint" in err(unlearn_main, ["--clip_path", tiny_dir("open_clip", seed=1), *base[2:],
                                                      *_sets(toy_world)])
    assert "--forget is required" in err(grad_main, ["--clip_path", tiny, "--retain", str(slug_data / "retain.tar")])


def test_celeba_style_identities_as_the_forget_and_celeba_sets(tmp_path, images):
    from slug.zeroshot import EvalSetArguments, build_sets

    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    rows = []
    for k in range(8):
        images[k % 4].save(root / "img_align_celeba" / f"{k + 1:06d}.jpg")
        rows.append(f"{k + 1:06d}.jpg {k % 3 + 1}")
    (root / "list_identity_celeba.txt").write_text("\n".join(rows) + "\n")
    names = tmp_path / "names.txt"
    names.write_text("1 Elon_Musk\n2 Taylor Swift\n3 Jeff_Bezos\n")
    sets = build_sets(EvalSetArguments(concept="Elon Musk", celeba_root=str(root), identity_names=str(names),
                                       celeba_identities="Taylor Swift,Jeff_Bezos"))
    forget, celeba = sets["forget"], sets["celeba"]
    assert [p.name for p in forget.images] == ["000001.jpg", "000004.jpg", "000007.jpg"]
    assert {forget.class_names[lab] for lab in forget.labels} == {"Elon_Musk"}
    assert len(celeba.images) == 5 and "Elon_Musk" not in {celeba.class_names[lab] for lab in celeba.labels}
    assert forget.class_names == celeba.class_names == ["Elon_Musk", "Jeff_Bezos", "Taylor Swift"]
    with pytest.raises(Exception, match="no identity named"):
        build_sets(EvalSetArguments(concept="Nobody", celeba_root=str(root), identity_names=str(names)))


def test_vlm_mode_writes_only_vision_tower_tensors_of_the_vlm(toy_world, slug_data, tmp_path, capsys, tiny_dir):
    """A toy CLIP and the LLaVA built on its vision tower (3 pretraining steps each): the edit lands in the LLaVA's
    tower (and nowhere else); a CLIP the VLM was not built from is refused in one line."""
    from common.models import load_model
    from common.toy.pretrain import PretrainConfig, pretrain
    from slug.unlearn import main as unlearn_main

    models = tmp_path / "models"
    pretrain(PretrainConfig(data=str(toy_world), out=str(models), seed=0, clip_steps=3, clip_batch=16, llava_steps=3,
                            llava_batch=8, clip_width=64, clip_layers=2, llm_hidden=64, llm_layers=1, vocab_size=400,
                            eval_batch=32, eval_max_new_tokens=4), log=lambda *_: None)
    clip = str(models / "clip")
    _grads(clip, slug_data, tmp_path / "grads")
    out = tmp_path / "vlm"
    assert unlearn_main(["--clip_path", clip, "--grads_dir", str(tmp_path / "grads"), *_sets(toy_world),
                         "--vlm", "llava", "--vlm_path", str(models / "llava"), "--vlm_judge", "false",
                         "--forget_target", "1.0", "--max_retain_drop", "1.0", "--output_dir", str(out)]) == 0
    trace = json.loads((out / "trace.json").read_text())
    assert trace["layer"].startswith("visual.transformer.resblocks.") and trace["vlm"]["tensors"]
    before = load_model("llava", str(models / "llava"), dtype="float32", device="cpu").model.state_dict()
    after = load_model("llava", str(models / "llava"), dtype="float32", device="cpu",
                       ckpt_load_path=str(out / "vlm")).model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(".vision_tower." in k for k in changed)
    assert len(changed) == len(trace["vlm"]["tensors"])
    capsys.readouterr()
    other = tmp_path / "other"
    assert unlearn_main(["--clip_path", clip, "--grads_dir", str(tmp_path / "grads"), *_sets(toy_world),
                         "--vlm", "llava", "--vlm_path", str(models / "llava"), "--output_dir", str(other),
                         "--forget_target", "1.0", "--max_retain_drop", "1.0"]) == 0  # the VLM judge runs too
    assert json.loads((other / "trace.json").read_text())["metric"] == "VLM yes-rate"
    from common.errors import LetheError
    from slug.vlm import VisionTransplant

    with pytest.raises(LetheError, match="not this CLIP's vision tower"):
        VisionTransplant("llava", str(models / "llava"), _clip(tiny_dir), device="cpu")
