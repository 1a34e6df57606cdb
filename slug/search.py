"""SLUG's step-size search on one layer: θ_l ← θ_l − λ·g_f,l, λ found by bisection.

Rule (both bounds are flags): a trial *succeeds* when forget top-1 ≤ ``target`` **and** retain top-1 ≥ ``bound``;
the search stops at the first success. Otherwise

* forget still too high, retain fine → λ too small: ``lo = λ``; λ doubles while no upper end is known, else
  bisects;
* forget reached, retain too low → λ too large: ``hi = λ``; bisect;
* forget too high *and* retain already too low → no λ serves this layer (a larger step only hurts retain more,
  a smaller one forgets less): give up on it.

``lo`` only grows and ``hi`` only shrinks, so the bracket is monotone; at most ``max_iter`` trials. The start is
``λ0 = (‖θ_l‖/‖g_f,l‖) / divisor`` (the original's ratio/10: a step of a tenth of the layer's norm).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

#: what a trial returns: (forget top-1, retain top-1, any other numbers to keep in the trace)
Outcome = tuple[float, float, dict]


@dataclass
class Trial:
    step: int
    lam: float
    forget_top1: float
    retain_top1: float
    lo: float
    hi: float
    verdict: str  # "ok" | "increase" | "decrease" | "give up"
    extra: dict

    def as_dict(self) -> dict:
        d = asdict(self)
        d["hi"] = None if math.isinf(self.hi) else self.hi
        return d


@dataclass
class SearchResult:
    success: bool
    lam: float | None  # the successful λ (None when none succeeded)
    trials: list[Trial]


def initial_lambda(weight_norm: float, grad_norm: float, divisor: float = 10.0) -> float:
    if grad_norm <= 0:
        return 0.0
    return weight_norm / grad_norm / divisor


def search(trial: Callable[[float], Outcome], lam0: float, target: float, bound: float,
           max_iter: int = 10) -> SearchResult:
    """Bisection on λ (see the module docstring); ``trial(λ)`` applies the step from the *original* weights and
    evaluates it."""
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    lo, hi, lam = 0.0, math.inf, lam0
    trials: list[Trial] = []
    if lam0 <= 0:
        return SearchResult(False, None, trials)
    for step in range(max_iter):
        forget, retain, extra = trial(lam)
        if forget <= target and retain >= bound:
            trials.append(Trial(step, lam, forget, retain, lo, hi, "ok", extra))
            return SearchResult(True, lam, trials)
        if forget > target and retain < bound:
            trials.append(Trial(step, lam, forget, retain, lo, hi, "give up", extra))
            break
        if forget > target:
            lo = lam
            verdict = "increase"
            nxt = lam * 2 if math.isinf(hi) else (lo + hi) / 2
        else:
            hi = lam
            verdict = "decrease"
            nxt = (lo + hi) / 2
        trials.append(Trial(step, lam, forget, retain, lo, hi, verdict, extra))
        lam = nxt
    return SearchResult(False, None, trials)
