"""Shared fixtures: tiny checkpoints are built once per session through the real CLI."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(family, seed=0)`` → path of a tiny checkpoint written by ``python -m common.tiny``."""
    from common.tiny import main

    root = tmp_path_factory.mktemp("tiny")
    cache: dict[tuple[str, int], str] = {}

    def get(family: str, seed: int = 0) -> str:
        key = (family, seed)
        if key not in cache:
            out = root / f"{family}-{seed}"
            assert main(["--family", family, "--out", str(out), "--seed", str(seed)]) == 0
            cache[key] = str(out)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def official_dir(tmp_path_factory):
    """``official_dir(family)`` → Path of a tiny checkpoint in the original project's layout (``--layout official``)."""
    from pathlib import Path

    from common.tiny import main

    root = tmp_path_factory.mktemp("official_layouts")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            assert main(["--family", family, "--out", str(root / family), "--layout", "official"]) == 0
            cache[family] = root / family
        return cache[family]

    return get


@pytest.fixture(scope="session")
def images():
    """Four deterministic RGB images of different sizes and contents."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(40, 30), (32, 32), (30, 50), (64, 48)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for (w, h) in sizes]


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    """A small toy world (all official layouts) written by the real generator."""
    from common.toy.world import WorldConfig, generate

    root = tmp_path_factory.mktemp("toyworld")
    generate(root, WorldConfig(seed=0, n_train=120, n_val=24, pope_images=12, mme_per_subtask=4, gqa_images=12,
                               sqa_train=8, sqa_val=4, sqa_test=8, qbench=8), log=lambda *_: None)
    return root
