"""EFUF's objective: one signed, score-weighted loss over positive, gold, sentence and negative samples.

    L = pos_w(t) · mean_i(ℓ_pos,i · s_i)
      + gold_w · gold_score · mean(ℓ_gold)
      + sent_w · mean(ℓ_sent,i · mean_score_i)
      − neg_w(t) · mean_i(ℓ_neg,i · (max_score − s_i))        (gradient ascent on hallucinated sub-sentences)

ℓ is the mean NLL over a sample's target tokens; ``max_score = hal_thres + norm_thres`` (55 with EFUF's 23/32);
``t`` is the training progress in [0, 1]. Schedules (EFUF defaults): pos 1 → 0.5 linearly over the run,
neg 0.3 held for the first 40 % then linearly to 0; each has its own type (``--pos_w_sched_type``,
``--neg_w_sched_type``: linear | exp | const, as the original's flags).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from common.errors import LetheError

COMPONENTS = ("pos", "gold", "sent", "neg")


SCHEDULE_KINDS = ("linear", "exp", "const")


@dataclass(frozen=True)
class WeightSchedule:
    """EFUF's ``WeightScheduler``: ``start`` until ``start_pos`` (fraction of the run), then towards ``end``.

    With ``u = (t - start_pos) / (1 - start_pos)`` the weight is ``start + (end - start) · f(u)``:
    ``linear`` f(u) = u; ``exp`` f(u) = 1 − e^(−u), so it covers 1 − 1/e ≈ 63 % of the way by the end of the run
    (exactly the original's formula, which never reaches ``end`` inside the run); ``const`` holds ``start`` and,
    as in the original, requires ``start == end``.
    """

    start: float
    end: float
    start_pos: float = 0.0
    kind: str = "linear"  # linear | exp | const

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise LetheError(f"unknown schedule type {self.kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")
        if self.kind == "const" and self.start != self.end:
            raise LetheError(f"a const schedule needs equal start and end weights (got {self.start} and {self.end})")
        if not 0.0 <= self.start_pos <= 1.0:
            raise LetheError(f"schedule start position {self.start_pos} outside [0, 1]")

    def __call__(self, t: float) -> float:
        t = min(max(t, 0.0), 1.0)
        if self.kind == "const" or t < self.start_pos:
            return self.start
        u = (t - self.start_pos) / max(1e-12, 1.0 - self.start_pos)
        f = u if self.kind == "linear" else 1.0 - math.exp(-u)
        return self.start + (self.end - self.start) * f


@dataclass(frozen=True)
class EfufWeights:
    pos: WeightSchedule
    neg: WeightSchedule
    gold_w: float
    gold_score: float
    sent_w: float
    max_score: float

    def at(self, t: float) -> dict[str, float]:
        """Component weights at progress t (the multiplier in front of each mean)."""
        return {"pos": self.pos(t), "gold": self.gold_w * self.gold_score, "sent": self.sent_w,
                "neg": self.neg(t)}


def efuf_loss(nll: torch.Tensor, component: torch.Tensor | Sequence[int], score: torch.Tensor, weights: EfufWeights,
              t: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combine per-sample NLLs ([B]) of mixed components into EFUF's signed loss.

    ``component`` holds indices into COMPONENTS (a host-side sequence: nothing is read back from the device; a
    tensor is read once), ``score`` the CLIP score (mean score for ``sent``; unused for gold). Returns the loss and
    the per-component mean NLLs for logging, as detached 0-d tensors (read them when logging, not every step).
    """
    comp = component.tolist() if torch.is_tensor(component) else list(component)
    w = weights.at(t)
    total = nll.sum() * 0.0  # attached to the graph even when every weight is 0
    logs: dict[str, torch.Tensor] = {}
    for idx, name in enumerate(COMPONENTS):
        rows = [i for i, c in enumerate(comp) if c == idx]
        if not rows or w[name] == 0:
            continue
        at = torch.tensor(rows, device=nll.device) if len(rows) < len(comp) else None
        l = nll if at is None else nll.index_select(0, at)
        s = (score if at is None else score.index_select(0, at)).to(nll.dtype)
        logs[f"nll_{name}"] = l.detach().mean()
        total = total + component_term(name, l, s, w[name], weights.max_score)
    return total, logs


def component_term(name: str, nll: torch.Tensor, score: torch.Tensor, weight: float,
                   max_score: float) -> torch.Tensor:
    """One component's signed term of the loss, from its samples' NLLs and scores (see the module docstring)."""
    if name in ("pos", "sent"):
        return weight * (nll * score).mean()
    if name == "gold":
        return weight * nll.mean()
    return -weight * (nll * (max_score - score)).mean()
