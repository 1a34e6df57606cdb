"""The toy world: a deterministic synthetic image world in COCO format, with the official layouts of POPE, MME,
GQA, ScienceQA and Q-Bench (``python -m common.toy generate --out dataset/toy --seed 0``)."""
from common.toy.world import CATEGORIES, Category, WorldConfig, generate, render_scene, sample_scene

__all__ = ["CATEGORIES", "Category", "WorldConfig", "generate", "render_scene", "sample_scene"]
