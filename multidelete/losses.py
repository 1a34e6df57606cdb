"""CLIP unlearning objectives: MultiDelete (``vlul``), the SALMU fork's ``delete`` and ``erase``, ``ft``, ``neggrad``.

Notation: ``fi``, ``ft`` are the L2-normalised image / text embeddings of a batch of true pairs (row k of each is
one pair) under the model being unlearned; ``fi0``, ``ft0`` the same under the frozen original model (the teacher).
``S = fi @ ft.T`` is the batch's cosine matrix (no temperature: the fork's losses act on raw cosines in [-1, 1]).
Every distance is the mean squared error over all entries (``torch.nn.functional.mse_loss``), as in the original.

- **Modality decoupling** (MultiDelete, on Df): the unlearned similarities of the Df batch are pulled towards the
  original model's similarities of *mismatched* pairs, ``MSE(S, fi0 @ ft0[π].T) + MSE(S.T, ft0[π] @ fi0.T)``.
  π is a random derangement (no text keeps its own image; the original's ``randperm`` left some true pairs as
  targets). The two terms are the image→text and text→image views of one matrix, so they are equal; both are
  kept so the loss has the original's scale.
- **Multimodal knowledge retention** (on Dr): CLIP has no fusion encoder; its multimodal embedding is taken, as the
  SALMU fork does, to be ``normalize((fi + ft) / 2)`` — the point between a pair's two embeddings, which moves when
  either tower or their alignment changes — and kept at the original's: ``MSE(m, m0)``.
- **Unimodal knowledge retention** (on Dr, as the SALMU fork): ``MSE(fi, fi0) + MSE(ft, ft0)``.
- ``vlul`` = α·MD + β·MKR + γ·UKR (``--alpha``, ``--beta``, ``--gamma``; the original parsed ``--alpha`` and never
  used it, and its unit weights are the default here).
- ``delete`` (the fork's): ``MSE(S_df, 0)·2 + MSE(S_dr, S0_dr)·2`` — every Df cosine, matched or not, to 0, the Dr
  cosines kept. The published DELETE (Zhou et al., CVPR 2025) is a masked-logit KL distillation without retain
  data; this is not it.
- ``erase`` (the fork's CLIPErase proxy): ``delete`` + ``MSE(fi_dr, fi0_dr) + MSE(ft_dr, ft0_dr)``. The published
  CLIPErase (Yang et al., ACL 2025) has forgetting / retention / consistency modules with their own losses.
- ``ft``: CLIP's contrastive loss on Dr. ``neggrad``: the contrastive loss on Df ascended, but only up to chance
  (``log B`` for a batch of B pairs): ``relu(log B − L_df)``, so it stops instead of diverging.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.errors import LetheError

METHODS = ("vlul", "delete", "erase", "ft", "neggrad")


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of range(n) with no fixed point (n >= 2), by rejection."""
    if n < 2:
        raise LetheError(f"modality decoupling needs at least 2 forget pairs in a batch (got {n})")
    while True:
        p = torch.randperm(n, generator=generator)
        if not bool((p == torch.arange(n)).any()):
            return p


def modality_decoupling(fi: torch.Tensor, ft: torch.Tensor, fi0: torch.Tensor, ft0: torch.Tensor,
                        perm: torch.Tensor) -> torch.Tensor:
    target = fi0 @ ft0[perm].T
    s = fi @ ft.T
    return F.mse_loss(s, target) + F.mse_loss(s.T, target.T)


def multimodal_embedding(fi: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    return F.normalize((fi + ft) / 2, dim=-1)


def multimodal_retention(fi: torch.Tensor, ft: torch.Tensor, fi0: torch.Tensor, ft0: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(multimodal_embedding(fi, ft), multimodal_embedding(fi0, ft0))


def unimodal_retention(fi: torch.Tensor, ft: torch.Tensor, fi0: torch.Tensor, ft0: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(fi, fi0) + F.mse_loss(ft, ft0)


def forget_to_zero(fi: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    s = fi @ ft.T
    return F.mse_loss(s, torch.zeros_like(s)) + F.mse_loss(s.T, torch.zeros_like(s))


def similarity_retention(fi: torch.Tensor, ft: torch.Tensor, fi0: torch.Tensor, ft0: torch.Tensor) -> torch.Tensor:
    s, s0 = fi @ ft.T, fi0 @ ft0.T
    return F.mse_loss(s, s0) + F.mse_loss(s.T, s0.T)


def contrastive(fi: torch.Tensor, ft: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch (row k's positive is column k)."""
    logits = logit_scale * fi @ ft.T
    labels = torch.arange(len(fi), device=fi.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def bounded_ascent(loss_df: torch.Tensor, batch_size: int) -> torch.Tensor:
    """NegGrad's objective, floored at zero once the Df loss reaches chance (log B): it cannot diverge."""
    return F.relu(math.log(batch_size) - loss_df)
