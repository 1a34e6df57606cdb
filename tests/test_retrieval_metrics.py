"""common.retrieval.metrics: recall@K with known ranks, chance, Df/Dr AUROC, membership inference, embed_split."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.errors import LetheError
from common.retrieval import (RetrievalSplit, chance_recall, df_dr_auroc, embed_split, membership_inference,
                              pair_scores, recall_at_k, retrieval_ranks)
from common.retrieval import metrics as M

# 3 images x 6 texts; image i owns texts 2i, 2i+1. With one-hot image features, sim[i, j] = text_feats[j, i].
SIM = np.array([
    [0.9, 0.1, 0.8, 0.2, 0.3, 0.0],  # img0: best own 0.9, nothing above          -> i2t rank 0
    [0.7, 0.6, 0.5, 0.1, 0.2, 0.3],  # img1: best own 0.5, 0.7 and 0.6 above      -> rank 2
    [0.2, 0.9, 0.4, 0.8, 0.3, 0.1],  # img2: best own 0.3, 0.9, 0.4, 0.8 above    -> rank 3
], dtype=np.float32)
IMG2TXT = [[0, 1], [2, 3], [4, 5]]
TXT2IMG = [0, 0, 1, 1, 2, 2]
# t2i ranks by column: t0 0; t1 2; t2 1; t3 2; t4 1 (img0 ties its own 0.3: ties count against); t5 1
I2T_RANKS, T2I_RANKS = [0, 2, 3], [0, 2, 1, 2, 1, 1]


def _feats():
    return torch.eye(3), torch.from_numpy(SIM.T.copy())


def test_ranks_on_a_hand_made_similarity():
    i2t, t2i = retrieval_ranks(*_feats(), IMG2TXT, TXT2IMG)
    assert i2t.tolist() == I2T_RANKS and t2i.tolist() == T2I_RANKS


def test_recall_at_k_known_values_both_directions():
    r = recall_at_k(*_feats(), IMG2TXT, TXT2IMG, ks=(1, 2, 3))
    want = {"txt_r1": 1 / 3, "txt_r2": 1 / 3, "txt_r3": 2 / 3, "img_r1": 1 / 6, "img_r2": 4 / 6, "img_r3": 1.0,
            "txt_r_mean": 4 / 9, "img_r_mean": 11 / 18, "r_mean": 19 / 36}
    assert set(r) == set(want)
    for k, v in want.items():
        assert r[k] == pytest.approx(v), k
    default = recall_at_k(*_feats(), IMG2TXT, TXT2IMG)
    assert set(default) == {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "txt_r_mean", "img_r_mean",
                            "r_mean"}
    assert (default["txt_r1"], default["txt_r5"], default["img_r1"], default["img_r10"]) == pytest.approx(
        (1 / 3, 1.0, 1 / 6, 1.0))


def _lavis_ranks(sim: np.ndarray, img2txt, txt2img):
    """LAVIS ``_report_metrics`` rank loops (argsort, best true caption), for tie-free scores."""
    i2t = []
    for index, score in enumerate(sim):
        inds = np.argsort(score)[::-1]
        i2t.append(min(np.where(inds == i)[0][0] for i in img2txt[index]))
    t2i = []
    for index, score in enumerate(sim.T):
        inds = np.argsort(score)[::-1]
        t2i.append(np.where(inds == txt2img[index])[0][0])
    return i2t, t2i


def test_ranks_match_lavis_on_random_features_and_across_chunks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(7, 16, generator=g), dim=-1)
    counts = [1, 3, 2, 5, 1, 2, 4]
    txt2img = [i for i, c in enumerate(counts) for _ in range(c)]
    img2txt = [[j for j, i in enumerate(txt2img) if i == k] for k in range(7)]
    txt = torch.nn.functional.normalize(img[txt2img] + 1.2 * torch.randn(len(txt2img), 16, generator=g), dim=-1)
    want = _lavis_ranks((img @ txt.T).numpy(), img2txt, txt2img)
    got = retrieval_ranks(img, txt, img2txt, txt2img)
    assert [t.tolist() for t in got] == [list(map(int, w)) for w in want]
    assert 0 < sum(want[1]) and 0 < sum(want[0])  # not a trivial all-first ranking
    monkeypatch.setattr(M, "_ROWS", 2)
    assert [t.tolist() for t in retrieval_ranks(img, txt, img2txt, txt2img)] == [t.tolist() for t in got]


def test_a_collapsed_model_is_not_perfect():
    img, txt = torch.ones(3, 4), torch.ones(6, 4)  # every score ties
    r = recall_at_k(img, txt, IMG2TXT, TXT2IMG, ks=(1, 3))
    assert r["txt_r1"] == 0.0 and r["img_r1"] == 0.0 and r["img_r3"] == 1.0


def test_chance_recall():
    assert chance_recall(10, 1) == pytest.approx(0.1)
    assert chance_recall(10, 5) == pytest.approx(0.5)
    assert chance_recall(3, 10) == 1.0
    assert chance_recall(25, 1, n_true=5) == pytest.approx(0.2)
    assert chance_recall(25, 2, n_true=5) == pytest.approx(1 - math.comb(20, 2) / math.comb(25, 2))  # 0.3667
    with pytest.raises(LetheError):
        chance_recall(0, 1)


def test_pair_scores_are_the_true_pair_cosines():
    assert pair_scores(*_feats(), TXT2IMG).tolist() == pytest.approx([0.9, 0.1, 0.5, 0.1, 0.3, 0.1])


def test_df_dr_auroc_known_values():
    assert df_dr_auroc([0.1, 0.2], [0.5, 0.6, 0.7, 0.8, 0.9]) == 1.0
    assert df_dr_auroc([0.8, 0.9], [0.1, 0.2, 0.3]) == 0.0
    # 2 chunks of |Df| = 2 cover Dr exactly, so the mean equals the all-pairs AUROC whatever the shuffle:
    # P(dr > df) over (0.3: 1 of 2), (0.5: 2), (0.6: 2), (0.2: 1) = 6/8
    for seed in (0, 1, 2):
        assert df_dr_auroc([0.1, 0.4], [0.3, 0.5, 0.6, 0.2], n_chunks=2, seed=seed) == pytest.approx(0.75)
    assert df_dr_auroc([0.1, 0.4], [0.3, 0.5], n_chunks=5) == pytest.approx(0.75)  # one chunk available
    assert df_dr_auroc([0.1, 0.2, 0.3], [0.25]) == pytest.approx(2 / 3)  # Dr smaller than Df: one chunk
    assert df_dr_auroc([0.5], [0.5]) == 0.5  # ties
    # more Dr than n_chunks * |Df|: the chunks are a seeded draw (deterministic, seed-dependent)
    dr = np.linspace(0, 1, 40)
    a = [df_dr_auroc([0.3, 0.6], dr, n_chunks=2, seed=s) for s in range(6)]
    assert a[0] == df_dr_auroc([0.3, 0.6], dr, n_chunks=2, seed=0) and len(set(a)) > 1
    for bad in (([], [0.1]), ([0.1], [])):
        with pytest.raises(LetheError, match="no scores"):
            df_dr_auroc(*bad)


def test_membership_inference():
    rng = np.random.default_rng(0)
    same = membership_inference(rng.normal(0.3, 0.05, 600), rng.normal(0.3, 0.05, 400), seed=0)
    assert same["n_per_class"] == 400
    assert abs(same["accuracy"] - 0.5) < 0.07 and abs(same["auc"] - 0.5) < 0.08
    apart = membership_inference(rng.normal(0.8, 0.02, 200), rng.normal(0.2, 0.02, 300))
    assert apart["accuracy"] == 1.0 and apart["auc"] == 1.0
    lower = membership_inference(rng.normal(0.2, 0.02, 100), rng.normal(0.8, 0.02, 100))  # members score lower
    assert lower["accuracy"] == 1.0
    x, y = rng.normal(0.3, 0.1, 50), rng.normal(0.35, 0.1, 80)
    assert membership_inference(x, y, seed=3) == membership_inference(x, y, seed=3)
    with pytest.raises(LetheError, match="per class"):
        membership_inference([0.1, 0.2], [0.3, 0.4, 0.5])


# ---------------------------------------------------------------------------------------------------- embed_split


@pytest.fixture(params=["clip", "open_clip"])
def clip(request, tiny_dir):
    from common.models import load_model

    return load_model("clip", tiny_dir(request.param), device="cpu")


@pytest.fixture
def small_split(images, tmp_path):
    paths = []
    for i, im in enumerate(images[:3]):
        paths.append(tmp_path / f"im{i}.png")
        im.save(paths[-1])
    caps = [["a red ball.", "a ball on grey."], ["two blue boxes."], ["a kite", "a cup and a bottle."]]
    return RetrievalSplit.from_groups("small", [p.name for p in paths], paths, caps)


def test_embed_split_matches_items_one_by_one_and_caches(clip, small_split, tmp_path, monkeypatch):
    cache = tmp_path / "emb" / "small.safetensors"
    # batches of 2 cross both boundaries (3 images, 5 texts)
    img, txt = embed_split(clip, small_split, batch_size=2, cache_path=cache)
    assert cache.is_file()
    assert img.dtype == txt.dtype == torch.float32 and img.device.type == "cpu"
    assert img.shape[0] == 3 and txt.shape[0] == 5 and img.shape[1] == txt.shape[1]
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(5), atol=1e-5)
    with torch.no_grad():
        for i in range(3):
            one = clip.encode_image(clip.preprocess([small_split.image(i)]))[0]
            assert torch.allclose(img[i], one, atol=1e-5)
        for j, t in enumerate(small_split.texts):
            assert torch.allclose(txt[j], clip.encode_text([t])[0], atol=1e-5)

    calls = {"image": 0, "text": 0}
    enc_i, enc_t = clip.encode_image, clip.encode_text

    def count(kind, fn):
        def wrapped(*a, **k):
            calls[kind] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(clip, "encode_image", count("image", enc_i))
    monkeypatch.setattr(clip, "encode_text", count("text", enc_t))
    again = embed_split(clip, small_split, batch_size=2, cache_path=cache)
    assert calls == {"image": 0, "text": 0}
    assert torch.equal(again[0], img) and torch.equal(again[1], txt)

    changed = RetrievalSplit.from_groups("small", small_split.keys, small_split.images,
                                         [["a red ball.", "a ball on grey."], ["two blue boxes."],
                                          ["a kite", "a white jet."]])
    new = embed_split(clip, changed, batch_size=2, cache_path=cache)
    assert calls["image"] > 0 and calls["text"] > 0 and not torch.allclose(new[1][4], txt[4], atol=1e-4)
    assert torch.allclose(new[0], img, atol=1e-6)
    calls.update(image=0, text=0)
    embed_split(clip, changed, batch_size=2, cache_path=cache)  # the cache now holds the changed split
    assert calls == {"image": 0, "text": 0}

    with torch.no_grad():  # editing one middle layer (as SLUG does) invalidates it too
        for p in clip.vision_layers()[1].parameters():
            p.mul_(1.5)
    edited = embed_split(clip, changed, batch_size=2, cache_path=cache)
    assert calls["image"] > 0 and not torch.allclose(edited[0], new[0], atol=1e-4)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["small.safetensors"]  # no temporary files left
