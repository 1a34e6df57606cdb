"""The benchmarks run and their two sides agree (no timing asserts)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_generate_outputs_agree():
    res = _load("bench_generate").main(["--n", "6", "--batch_size", "4", "--max_new_tokens", "6"])
    assert res["identical"] is True and res["naive_s"] > 0 and res["ours_s"] > 0
