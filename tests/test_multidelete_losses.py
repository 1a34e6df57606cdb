"""MultiDelete / fork losses against values computed by hand (explicit loops over a 4-pair batch)."""
from __future__ import annotations

import math

import pytest
import torch

from common.errors import LetheError
from multidelete import losses as L


def unit(*angles_deg):
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles_deg])


# a 4-pair batch in 2-D: the unlearned model's and the original's embeddings
FI, FT = unit(0, 90, 180, 270), unit(10, 80, 200, 260)
FI0, FT0 = unit(0, 90, 180, 270), unit(0, 90, 180, 270)


def cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def mse(a, b):
    """Mean squared error of two equally shaped nested lists."""
    flat_a = [x for row in a for x in row] if isinstance(a[0], list) else list(a)
    flat_b = [x for row in b for x in row] if isinstance(b[0], list) else list(b)
    return sum((x - y) ** 2 for x, y in zip(flat_a, flat_b)) / len(flat_a)


def rows(t):
    return t.tolist()


def test_modality_decoupling_by_hand():
    perm = torch.tensor([1, 0, 3, 2])
    fi, ft, fi0, ft0 = rows(FI), rows(FT), rows(FI0), rows(FT0)
    s = [[cos(fi[i], ft[j]) for j in range(4)] for i in range(4)]
    target = [[cos(fi0[i], ft0[perm[j]]) for j in range(4)] for i in range(4)]
    expected = 2 * mse(s, target)  # the i2t and t2i views of one matrix
    got = L.modality_decoupling(FI, FT, FI0, FT0, perm)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # true pairs under the original are cosine 1, the targets of a derangement are not: the loss is not zero
    assert expected > 0.1


def test_retention_terms_by_hand():
    fi, ft, fi0, ft0 = rows(FI), rows(FT), rows(FI0), rows(FT0)

    def mid(a, b):
        m = [(x + y) / 2 for x, y in zip(a, b)]
        n = math.sqrt(sum(x * x for x in m))
        return [x / n for x in m]

    mm = [mid(a, b) for a, b in zip(fi, ft)]
    mm0 = [mid(a, b) for a, b in zip(fi0, ft0)]
    assert L.multimodal_retention(FI, FT, FI0, FT0).item() == pytest.approx(mse(mm, mm0), rel=1e-6)
    assert L.unimodal_retention(FI, FT, FI0, FT0).item() == pytest.approx(mse(fi, fi0) + mse(ft, ft0), rel=1e-6)
    s = [[cos(fi[i], ft[j]) for j in range(4)] for i in range(4)]
    s0 = [[cos(fi0[i], ft0[j]) for j in range(4)] for i in range(4)]
    zeros = [[0.0] * 4 for _ in range(4)]
    assert L.forget_to_zero(FI, FT).item() == pytest.approx(2 * mse(s, zeros), rel=1e-6)
    assert L.similarity_retention(FI, FT, FI0, FT0).item() == pytest.approx(2 * mse(s, s0), rel=1e-6)
    # the original model against itself: every retention term is exactly zero
    for f in (L.multimodal_retention, L.unimodal_retention, L.similarity_retention):
        assert f(FI0, FT0, FI0, FT0).item() == 0.0


def test_contrastive_and_bounded_ascent_by_hand():
    scale = torch.tensor(10.0)
    fi, ft = rows(FI), rows(FT)
    logits = [[10.0 * cos(fi[i], ft[j]) for j in range(4)] for i in range(4)]

    def ce(row, k):
        return -row[k] + math.log(sum(math.exp(x) for x in row))

    i2t = sum(ce(logits[i], i) for i in range(4)) / 4
    t2i = sum(ce([logits[i][j] for i in range(4)], j) for j in range(4)) / 4
    got = L.contrastive(FI, FT, scale)
    assert got.item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)  # float32: ~1e-6 relative
    assert L.bounded_ascent(got, 4).item() == pytest.approx(max(0.0, math.log(4) - (i2t + t2i) / 2), rel=1e-6)
    assert L.bounded_ascent(torch.tensor(5.0), 4).item() == 0.0  # past chance: nothing left to ascend


def test_derangement_has_no_fixed_point_and_needs_two():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 8):
        for _ in range(20):
            p = L.derangement(n, g)
            assert sorted(p.tolist()) == list(range(n)) and not bool((p == torch.arange(n)).any())
    with pytest.raises(LetheError, match="at least 2 forget pairs"):
        L.derangement(1)
