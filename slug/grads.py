"""SLUG's two gradients: one pass over the forget set, one over the retain set.

Sign convention (stated once, used everywhere in ``slug/``): the **forget loss** is the mean cosine similarity of
the forget pairs, ``L_f = mean_k cos(f_I(x_k), f_T(t_k))``, and ``g_f = ∇_θ L_f``. Unlearning *lowers* L_f, so the
single step is ``θ_l ← θ_l − λ·g_f,l`` with ``λ > 0``. (The original code minimises ``−CosineEmbeddingLoss(+1) =
cos − 1`` and steps with ``λ < 0``; same gradient, same update.) The **retain loss** is CLIP's symmetric contrastive
loss with the model's logit scale, ``g_r = ∇_θ L_r``.

Each gradient is the mean over batches of the per-batch gradient, taken with ``torch.autograd.grad``: nothing is
accumulated in ``.grad``, so the retain gradient is the same whether or not the forget pass ran before it (the
original's HF scripts never zeroed the gradients between batches or between the two sets).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from common.errors import LetheError
from common.retrieval import RetrievalSplit
from multidelete.losses import contrastive


def forget_loss(fi: torch.Tensor, ft: torch.Tensor, logit_scale: torch.Tensor | None = None) -> torch.Tensor:
    """L_f: the mean cosine of the paired (L2-normalised) image and text features."""
    return (fi * ft).sum(-1).mean()


def retain_loss(fi: torch.Tensor, ft: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """L_r: CLIP's symmetric cross-entropy over the batch (pair k's positive is column k)."""
    return contrastive(fi, ft, logit_scale)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"forget": forget_loss, "retain": retain_loss}


def pair_batches(split: RetrievalSplit, batch_size: int) -> list[tuple[list[int], list[int]]]:
    """(image indices, text indices) per batch, one caption per image (its first), in order."""
    pairs = [(i, caps[0]) for i, caps in enumerate(split.img2txt) if caps]
    if not pairs:
        raise LetheError(f"split {split.name!r} has no image-caption pairs")
    out = []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        out.append(([i for i, _ in chunk], [j for _, j in chunk]))
    return out


def mean_gradient(clip, split: RetrievalSplit, loss: str, names: Sequence[str], batch_size: int = 32,
                  progress: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """The mean over batches of ∇(loss) w.r.t. the parameters ``names`` of ``clip`` (a ``ClipModel``), float32 on
    CPU; returns (gradients, mean loss). The model's ``.grad`` fields are neither read nor written."""
    if loss not in LOSSES:
        raise LetheError(f"unknown SLUG loss {loss!r}; valid: {', '.join(LOSSES)}")
    fn = LOSSES[loss]
    params = dict(clip.model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise LetheError(f"no parameter named {unknown[0]!r} in the model")
    wanted = [params[n] for n in names]
    total = {n: torch.zeros(p.shape, dtype=torch.float32) for n, p in zip(names, wanted)}
    batches = pair_batches(split, batch_size)
    if loss == "retain" and any(len(b[0]) < 2 for b in batches[:1]):
        raise LetheError(f"the retain set {split.name!r} needs at least 2 pairs (a contrastive loss)")
    from tqdm.auto import tqdm

    losses = []
    was = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in total)  # the graph reaches only the wanted tensors
    try:
        with torch.enable_grad():
            for img_idx, txt_idx in tqdm(batches, desc=f"{loss} gradient", disable=not progress, unit="batch"):
                fi = clip.encode_image(clip.preprocess([split.image(i) for i in img_idx]))
                ft = clip.encode_text([split.texts[j] for j in txt_idx])
                value = fn(fi.float(), ft.float(), clip.logit_scale.float())
                for n, g in zip(names, torch.autograd.grad(value, wanted, allow_unused=True)):
                    if g is not None:
                        total[n] += g.detach().float().cpu()
                losses.append(float(value.detach()))
    finally:
        for n, p in params.items():
            p.requires_grad_(was[n])
    return {n: t / len(batches) for n, t in total.items()}, sum(losses) / len(losses)
