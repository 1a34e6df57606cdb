"""SLUG's layer choice: per-tensor importance and gradient alignment, and their Pareto front.

A *layer* is one weight tensor (as in the paper and its code). For each eligible tensor ``l`` with weights
``θ_l``, forget gradient ``g_f,l`` and retain gradient ``g_r,l``:

* importance ``‖g_f,l‖ / ‖θ_l‖`` (Frobenius norms): how far one step along ``g_f`` moves the layer, relative to
  its size;
* alignment ``|cos(vec g_r,l, vec g_f,l)|``: how much a step along ``g_f`` also moves the retain loss.

Good layers are important and little aligned; the candidates are the Pareto front of (alignment ↓, importance ↑),
computed separately for the vision and the text tower. Not eligible (never edited): 1-D tensors (biases, norms,
the class token, ``logit_scale``) and the embeddings (token, position and patch embeddings).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import torch

#: name parts of tensors that are never edited (besides every 1-D tensor)
EXCLUDED = ("bias", "logit_scale", "position", "embedding", "norm", "ln_", "conv1", "class_embedding")
#: parameter-name prefixes of the vision tower: open_clip, HF CLIPModel, and a VLM's CLIP tower
VISION_PREFIXES = ("visual.", "vision_model.", "visual_projection.", "vision_tower.")
TOWERS = ("vision", "text")


def tower_of(name: str) -> str:
    """``vision`` or ``text`` for a CLIP parameter name (open_clip or HF)."""
    return "vision" if name.startswith(VISION_PREFIXES) or ".vision_tower." in name else "text"


def eligible(name: str, shape: Iterable[int]) -> bool:
    """Whether SLUG may edit this tensor: a weight matrix (or conv kernel) that is not an embedding or a norm."""
    return len(tuple(shape)) >= 2 and not any(part in name for part in EXCLUDED)


def block_index(name: str) -> int | None:
    """The transformer block a tensor belongs to (``...resblocks.7...`` / ``...layers.7...``), else None."""
    m = re.search(r"(?:resblocks|layers)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class LayerStat:
    name: str
    tower: str
    importance: float
    alignment: float
    weight_norm: float
    grad_norm: float

    def as_dict(self) -> dict:
        return asdict(self)


def tensor_stats(theta: torch.Tensor, g_f: torch.Tensor, g_r: torch.Tensor) -> dict[str, float]:
    """The four numbers SLUG needs of one tensor, in float64: ‖θ‖, ‖g_f‖, ‖g_r‖ and g_r·g_f."""
    t, f, r = (x.detach().double().flatten() for x in (theta, g_f, g_r))
    return {"weight_norm": float(t.norm()), "forget_norm": float(f.norm()), "retain_norm": float(r.norm()),
            "dot": float(r @ f)}


def layer_stat(name: str, s: Mapping[str, float]) -> LayerStat:
    """Importance and alignment from :func:`tensor_stats` numbers (0 where a norm is 0)."""
    importance = s["forget_norm"] / s["weight_norm"] if s["weight_norm"] > 0 else 0.0
    denom = s["forget_norm"] * s["retain_norm"]
    alignment = abs(s["dot"]) / denom if denom > 0 else 0.0
    return LayerStat(name, tower_of(name), importance, min(alignment, 1.0), s["weight_norm"], s["forget_norm"])


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the non-dominated points of ``{name: (alignment, importance)}``.

    A point is dominated when another has *strictly* lower alignment *and strictly* higher importance (so equal
    points, or points equal in one coordinate, do not dominate each other). Returned by importance, highest first.
    """
    items = list(points.items())
    front = [n for n, (a, i) in items if not any(a2 < a and i2 > i for _, (a2, i2) in items)]
    return sorted(front, key=lambda n: (-points[n][1], points[n][0], n))


def front_by_tower(stats: Iterable[LayerStat], towers: Iterable[str] = TOWERS) -> dict[str, list[str]]:
    """The Pareto front of each tower (finite points only)."""
    out: dict[str, list[str]] = {}
    stats = list(stats)
    for tower in towers:
        pts = {s.name: (s.alignment, s.importance) for s in stats
               if s.tower == tower and math.isfinite(s.alignment) and math.isfinite(s.importance)}
        out[tower] = pareto_front(pts)
    return out
