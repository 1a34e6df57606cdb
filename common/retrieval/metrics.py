"""CLIP retrieval embeddings and metrics: recall@K (LAVIS names), Df/Dr AUROC (MultiDelete), membership inference.

All recalls are **fractions in [0, 1]** (LAVIS prints percentages; multiply by 100 to compare). Features are
L2-normalised, so a dot product is a cosine.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from common.errors import LetheError
from common.retrieval.data import RetrievalSplit

#: bump when the cache layout or the fingerprint recipe changes
CACHE_FORMAT = "lethe-retrieval-embeddings/1"
_ROWS = 1024  # similarity rows per chunk (bounds memory: COCO 5K test x 25K captions never materialises at once)


# ---------------------------------------------------------------------------------------------------- embedding


def model_fingerprint(clip) -> str:
    """A cheap identity of a :class:`~common.models.clip.ClipModel`'s weights and input pipeline.

    Per tensor of the state dict: name, shape, dtype, and for floating tensors their float64 sum, sum of squares
    and 16 evenly spaced values (all computed on the model's device, copied back once); integer buffers are hashed
    whole. So any edit to any layer (SLUG changes one) changes it, at the cost of one read of the weights, not a
    hash of every byte. The backend, preprocessing transform and tokenizer settings are included too.
    """
    h = hashlib.sha256()
    h.update(f"{CACHE_FORMAT}|{clip.backend}|{type(clip.model).__name__}\n".encode())
    if clip.backend == "open_clip":
        h.update(repr(clip._preprocess).encode())
        tok = clip._tokenizer
    else:
        h.update(clip.processor.image_processor.to_json_string().encode())
        tok = clip.processor.tokenizer
    h.update(f"|{type(tok).__name__}|{getattr(tok, 'context_length', None)}|{getattr(tok, 'vocab_size', None)}|"
             f"{getattr(tok, 'model_max_length', None)}\n".encode())
    stats = []
    with torch.no_grad():
        for name, t in clip.model.state_dict().items():
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
            if t.is_floating_point():
                flat = t.detach().reshape(-1)
                if flat.numel() == 0:
                    continue
                d = flat.double()
                pick = torch.linspace(0, flat.numel() - 1, min(16, flat.numel()), device=flat.device).long()
                stats.append(torch.cat([torch.stack([d.sum(), d.square().sum()]), d[pick]]))
            else:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if stats:
        h.update(torch.cat(stats).cpu().numpy().tobytes())
    return h.hexdigest()


def split_fingerprint(split: RetrievalSplit) -> str:
    """sha256 of the split's image keys and texts (length-prefixed, in order)."""
    h = hashlib.sha256()
    for part in (split.keys, split.texts):
        h.update(f"{len(part)}\n".encode())
        for s in part:
            b = s.encode("utf-8", "surrogatepass")
            h.update(f"{len(b)}:".encode() + b)
    return h.hexdigest()


def _read_cache(path: Path, fingerprint: str, split: RetrievalSplit) -> tuple[torch.Tensor, torch.Tensor] | None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            img, txt = f.get_tensor("image_feats"), f.get_tensor("text_feats")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None  # unreadable or foreign file: recompute and overwrite
    if img.shape[0] != split.n_images or txt.shape[0] != split.n_pairs:
        return None
    return img, txt


def _write_cache(path: Path, fingerprint: str, img: torch.Tensor, txt: torch.Tensor) -> None:
    from safetensors.torch import save_file

    from common.io import atomic_path

    meta = {"fingerprint": fingerprint, "format": CACHE_FORMAT, "n_images": str(img.shape[0]),
            "n_texts": str(txt.shape[0])}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({"image_feats": img.contiguous(), "text_feats": txt.contiguous()}, str(tmp), metadata=meta)


def embed_split(clip, split: RetrievalSplit, batch_size: int = 64, cache_path: str | Path | None = None,
                progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(image_feats [N_img, D], text_feats [N_txt, D]): L2-normalised float32 on CPU, one batched pass each.

    ``clip``: a :class:`~common.models.clip.ClipModel`. With ``cache_path`` (a ``.safetensors`` file) the features
    are reused when the file's fingerprint (:func:`model_fingerprint` + :func:`split_fingerprint`) matches, and
    otherwise computed and written atomically.
    """
    if split.n_images == 0 or split.n_pairs == 0:
        raise LetheError(f"split {split.name!r} has no images or no texts to embed")
    if batch_size < 1:
        raise LetheError(f"batch_size must be >= 1, got {batch_size}")
    fingerprint = None
    if cache_path is not None:
        cache_path = Path(cache_path)
        fingerprint = hashlib.sha256(f"{model_fingerprint(clip)}|{split_fingerprint(split)}".encode()).hexdigest()
        cached = _read_cache(cache_path, fingerprint, split)
        if cached is not None:
            return cached
    from tqdm.auto import tqdm

    def batches(n: int, what: str):
        starts = range(0, n, batch_size)
        return tqdm(starts, desc=f"embed {split.name} {what}", disable=not progress, unit="batch")

    img_out, txt_out = [], []
    with torch.inference_mode():
        for s in batches(split.n_images, "images"):
            ims = [split.image(i) for i in range(s, min(s + batch_size, split.n_images))]
            f = clip.encode_image(clip.preprocess(ims), normalize=False)
            img_out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
        for s in batches(split.n_pairs, "texts"):
            f = clip.encode_text(list(split.texts[s:s + batch_size]), normalize=False)
            txt_out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
    img, txt = torch.cat(img_out), torch.cat(txt_out)
    if fingerprint is not None:
        _write_cache(cache_path, fingerprint, img, txt)
    return img, txt


# ---------------------------------------------------------------------------------------------------- retrieval


def _as_tensor(x: Any) -> torch.Tensor:
    return x.detach().float() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x), dtype=torch.float32)


def retrieval_ranks(image_feats: Any, text_feats: Any, img2txt: Sequence[Sequence[int]],
                    txt2img: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks (i2t [N_img], t2i [N_txt]) of the best true candidate, by cosine (dot product).

    i2t: for image ``i``, the number of *non-matching* captions scoring >= its best caption; t2i: for caption
    ``j``, the number of other images scoring >= its image. Ties count against the query, so a collapsed model
    (all features equal) ranks last instead of first. An image without captions gets rank N_txt.
    """
    img, txt = _as_tensor(image_feats), _as_tensor(text_feats)
    n_img, n_txt = img.shape[0], txt.shape[0]
    if len(img2txt) != n_img or len(txt2img) != n_txt:
        raise LetheError(f"img2txt has {len(img2txt)} entries for {n_img} images and txt2img {len(txt2img)} for "
                         f"{n_txt} texts")
    t2i_index = torch.as_tensor(list(txt2img), dtype=torch.long, device=img.device)
    i2t = torch.empty(n_img, dtype=torch.long)
    for s in range(0, n_img, _ROWS):
        e = min(s + _ROWS, n_img)
        sim = img[s:e] @ txt.T
        true = torch.zeros_like(sim, dtype=torch.bool)
        for r, i in enumerate(range(s, e)):
            true[r, list(img2txt[i])] = True
        best = sim.masked_fill(~true, -math.inf).amax(dim=1, keepdim=True)
        i2t[s:e] = ((sim >= best) & ~true).sum(dim=1).cpu()
    t2i = torch.empty(n_txt, dtype=torch.long)
    for s in range(0, n_txt, _ROWS):
        e = min(s + _ROWS, n_txt)
        sim = txt[s:e] @ img.T
        own = sim.gather(1, t2i_index[s:e, None])
        t2i[s:e] = ((sim >= own).sum(dim=1) - 1).cpu()
    return i2t, t2i


def recall_at_k(image_feats: Any, text_feats: Any, img2txt: Sequence[Sequence[int]], txt2img: Sequence[int],
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """LAVIS retrieval metrics as **fractions in [0, 1]**: ``txt_r{k}`` (image→text: an image is a hit when any of
    its captions ranks within the top k), ``img_r{k}`` (text→image), ``txt_r_mean``, ``img_r_mean`` (means over
    ``ks``) and ``r_mean`` (their mean). Ranks as :func:`retrieval_ranks` (ties count against the query)."""
    i2t, t2i = retrieval_ranks(image_feats, text_feats, img2txt, txt2img)
    out: dict[str, float] = {}
    for k in ks:
        out[f"txt_r{k}"] = float((i2t < k).double().mean())
    for k in ks:
        out[f"img_r{k}"] = float((t2i < k).double().mean())
    out["txt_r_mean"] = sum(out[f"txt_r{k}"] for k in ks) / len(ks)
    out["img_r_mean"] = sum(out[f"img_r{k}"] for k in ks) / len(ks)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def chance_recall(n_candidates: int, k: int, n_true: int = 1) -> float:
    """Recall@k of a random ranking: the chance that one of ``n_true`` matching candidates among ``n_candidates``
    lands in the top ``k`` = 1 - C(n - m, k) / C(n, k) (= min(k, n) / n for one match)."""
    if n_candidates < 1 or not 1 <= n_true <= n_candidates or k < 0:
        raise LetheError(f"chance_recall: need n_candidates >= n_true >= 1 and k >= 0 (got {n_candidates}, {n_true}, "
                         f"{k})")
    k = min(k, n_candidates)
    return 1.0 - math.comb(n_candidates - n_true, k) / math.comb(n_candidates, k)


def pair_scores(image_feats: Any, text_feats: Any, txt2img: Sequence[int]) -> torch.Tensor:
    """Cosine of every true pair: ``[N_txt]``, entry ``j`` = cos(image txt2img[j], text j)."""
    img, txt = _as_tensor(image_feats), _as_tensor(text_feats)
    if len(txt2img) != txt.shape[0]:
        raise LetheError(f"txt2img has {len(txt2img)} entries for {txt.shape[0]} texts")
    idx = torch.as_tensor(list(txt2img), dtype=torch.long, device=img.device)
    return (img[idx] * txt).sum(dim=-1)


# ------------------------------------------------------------------------------------------------ forget efficacy


def _as_array(x: Any, what: str) -> np.ndarray:
    a = (x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)).reshape(-1)
    if a.size == 0:
        raise LetheError(f"{what}: no scores")
    if not np.isfinite(a).all():
        raise LetheError(f"{what}: scores must be finite")
    return a.astype(np.float64)


def df_dr_auroc(scores_df: Any, scores_dr: Any, n_chunks: int = 5, seed: int = 0) -> float:
    """MultiDelete's unlearning efficacy: AUROC of telling Df pairs (label 0) from Dr pairs (label 1) by score.

    Dr is shuffled with ``numpy.random.default_rng(seed)`` and cut into disjoint chunks of |Df| pairs, as many as
    it holds up to ``n_chunks`` (all of Dr as one chunk when it holds fewer than |Df|); the result is the mean of
    ``sklearn.metrics.roc_auc_score`` over the chunks. High (→1) means the model scores forgotten pairs below
    retained ones; 0.5 means it cannot tell them apart. Any monotone transform of the scores (MultiDelete applies
    a sigmoid to the cosines) gives the same value.
    """
    from sklearn.metrics import roc_auc_score

    df, dr = _as_array(scores_df, "Df"), _as_array(scores_dr, "Dr")
    if n_chunks < 1:
        raise LetheError(f"n_chunks must be >= 1, got {n_chunks}")
    dr = dr[np.random.default_rng(seed).permutation(dr.size)]
    m = min(n_chunks, dr.size // df.size)
    chunks = [dr[c * df.size:(c + 1) * df.size] for c in range(m)] or [dr]
    y_df = np.zeros(df.size)
    aucs = [roc_auc_score(np.concatenate([y_df, np.ones(c.size)]), np.concatenate([df, c])) for c in chunks]
    return float(np.mean(aucs))


def membership_inference(member_scores: Any, nonmember_scores: Any, folds: int = 5,
                         seed: int = 0) -> dict[str, float]:
    """A membership-inference attack on the per-pair similarity.

    Definition: the larger class is subsampled (``numpy.random.default_rng(seed)``, without replacement) to the
    size of the smaller; a logistic regression (on the standardised score, one feature) is trained to tell members
    (label 1) from non-members (label 0) with ``StratifiedKFold(folds, shuffle=True, random_state=seed)``. Returns
    the mean held-out ``accuracy`` and ``auc`` (ROC AUC of the predicted member probability) over the folds, and
    ``n_per_class``. accuracy 0.5 = no leakage; an unlearned Df should look like non-members (≈0.5 against a
    held-out set), whichever direction the scores move.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mem, non = _as_array(member_scores, "members"), _as_array(nonmember_scores, "non-members")
    rng = np.random.default_rng(seed)
    n = min(mem.size, non.size)
    if folds < 2 or n < folds:
        raise LetheError(f"membership_inference: need folds >= 2 and at least {max(folds, 2)} scores per class "
                         f"(got {mem.size} members, {non.size} non-members, folds={folds})")
    mem = mem if mem.size == n else mem[np.sort(rng.choice(mem.size, n, replace=False))]
    non = non if non.size == n else non[np.sort(rng.choice(non.size, n, replace=False))]
    x = np.concatenate([mem, non])[:, None]
    y = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    accs, aucs = [], []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression())
        clf.fit(x[train], y[train])
        accs.append(accuracy_score(y[test], clf.predict(x[test])))
        aucs.append(roc_auc_score(y[test], clf.predict_proba(x[test])[:, 1]))
    return {"accuracy": float(np.mean(accs)), "auc": float(np.mean(aucs)), "n_per_class": n}
