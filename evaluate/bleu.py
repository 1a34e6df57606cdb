"""Word-level BLEU with the semantics of ``nltk.translate.bleu_score.corpus_bleu`` (no smoothing).

Modified n-gram precision clipped by the maximum count over the references, effective reference length = the
reference length closest to the hypothesis length (ties: the shorter), brevity penalty ``exp(1 - r/c)`` for
``c <= r`` (0 for an empty hypothesis), uniform weights, and NLTK's ``method0`` for an n-gram order without
matches (its precision becomes the smallest positive float, so the score is ~1e-77 rather than an exception).
Corpus BLEU pools the counts over all hypotheses before dividing; it is not the mean of sentence BLEUs.
"""
from __future__ import annotations

import math
import sys
from collections import Counter
from typing import Sequence

Tokens = Sequence[str]


def _ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped_counts(refs: Sequence[Tokens], hyp: Tokens, n: int) -> tuple[int, int]:
    counts = _ngrams(hyp, n)
    if not counts:
        return 0, 1
    max_ref: Counter = Counter()
    for ref in refs:
        for gram, c in _ngrams(ref, n).items():
            if gram in counts and c > max_ref[gram]:
                max_ref[gram] = c
    matched = sum(min(c, max_ref[g]) for g, c in counts.items())
    return matched, max(1, sum(counts.values()))


def _closest_ref_length(refs: Sequence[Tokens], hyp_len: int) -> int:
    return min((len(r) for r in refs), key=lambda rl: (abs(rl - hyp_len), rl))


def corpus_bleu(list_of_refs: Sequence[Sequence[Tokens]], hyps: Sequence[Tokens],
                max_orders: Sequence[int] = (1, 2, 4)) -> dict[int, float]:
    """BLEU-n for each n in ``max_orders`` (uniform weights over orders 1..n), computed in one pass."""
    if len(list_of_refs) != len(hyps):
        raise ValueError("corpus_bleu: as many reference lists as hypotheses are needed")
    top = max(max_orders)
    num, den = Counter(), Counter()
    hyp_len = ref_len = 0
    for refs, hyp in zip(list_of_refs, hyps):
        if not refs:
            raise ValueError("corpus_bleu: a hypothesis without references")
        for n in range(1, top + 1):
            m, d = _clipped_counts(refs, hyp, n)
            num[n] += m
            den[n] += d
        hyp_len += len(hyp)
        ref_len += _closest_ref_length(refs, len(hyp))
    if num[1] == 0:
        return {n: 0.0 for n in max_orders}
    if hyp_len > ref_len:
        bp = 1.0
    elif hyp_len == 0:
        bp = 0.0
    else:
        bp = math.exp(1 - ref_len / hyp_len)
    logs = {n: math.log(num[n] / den[n]) if num[n] else math.log(sys.float_info.min) for n in range(1, top + 1)}
    return {n: bp * math.exp(math.fsum((1.0 / n) * logs[k] for k in range(1, n + 1))) for n in max_orders}


def sentence_bleu(refs: Sequence[Tokens], hyp: Tokens, max_orders: Sequence[int] = (1, 2, 4)) -> dict[int, float]:
    return corpus_bleu([refs], [hyp], max_orders)
