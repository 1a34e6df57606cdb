"""SLUG's step-size search on one layer: θ_l ← θ_l − λ·g_f,l, λ found by bisection.

Rule (both bounds are flags): a trial *succeeds* when forget top-1 ≤ ``target`` **and** retain top-1 ≥ ``bound``;
the search stops at the first success. Otherwise

* retain below the bound → λ too large: ``hi = λ``; bisect;
* retain fine, forget still too high → λ too small: ``lo = λ``; λ doubles while no upper end is known, else
  bisects.

When no λ can meet both (forget still too high where retain breaks the bound) the bisection converges on the
largest step that keeps retain above the bound: the trial of lowest forget accuracy within the bound is the
layer's *best effort* (:attr:`SearchResult.best_effort`), used only when no layer succeeds.
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
    verdict: str  # "ok" | "increase" | "decrease"
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
    bound: float = -math.inf

    @property
    def best_effort(self) -> Trial | None:
        """The successful trial, else the trial of lowest forget accuracy (then highest retain) whose retain
        accuracy held the bound; None when every trial broke it."""
        ok = [t for t in self.trials if t.verdict == "ok"]
        if ok:
            return ok[-1]
        within = [t for t in self.trials if t.retain_top1 >= self.bound]
        return min(within, key=lambda t: (t.forget_top1, -t.retain_top1, t.lam)) if within else None


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
        return SearchResult(False, None, trials, bound)
    for step in range(max_iter):
        forget, retain, extra = trial(lam)
        if forget <= target and retain >= bound:
            trials.append(Trial(step, lam, forget, retain, lo, hi, "ok", extra))
            return SearchResult(True, lam, trials, bound)
        if retain < bound:
            hi = lam
            verdict = "decrease"
            nxt = (lo + hi) / 2
        else:
            lo = lam
            verdict = "increase"
            nxt = lam * 2 if math.isinf(hi) else (lo + hi) / 2
        trials.append(Trial(step, lam, forget, retain, lo, hi, verdict, extra))
        lam = nxt
    return SearchResult(False, None, trials, bound)
