"""Multiple-choice helpers shared by Q-Bench and MMBench: option rendering and answer -> option letter.

The matcher is VLMEvalKit's rule-based ``can_infer`` (its "exact matching" mode, no LLM judge): replace
``.()[],:;!*#{}`` by spaces and split on whitespace; if exactly one option letter occurs as a token, that is the
answer. Otherwise, if exactly one option's text (lower-cased) occurs in the lower-cased answer, and the answer is
at most twice as long as all option texts together, that option. Otherwise (or for a refusal) no option: wrong.
"""
from __future__ import annotations

import string
from typing import Mapping, Sequence

LETTERS = string.ascii_uppercase
_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")
_PUNCT = str.maketrans({c: " " for c in ".()[],:;!*#{}"})


def letter_choices(options: Sequence[str]) -> dict[str, str]:
    return {LETTERS[i]: str(o) for i, o in enumerate(options)}


def format_options(options: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def infer_option(answer: str, choices: Mapping[str, str]) -> str | None:
    """The option letter an answer picks, or None."""
    answer = str(answer)
    if any(r in answer for r in _REFUSALS):
        return None
    tokens = set(answer.translate(_PUNCT).split())
    hits = [c for c in choices if c in tokens]
    if len(hits) == 1:
        return hits[0]
    low = answer.lower()
    if len(low) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    cands = [k for k, v in choices.items() if str(v).lower() in low]
    return cands[0] if len(cands) == 1 else None
