"""The benchmarks run and their two sides agree (no timing asserts)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _result(capsys, bench: str) -> dict:
    """The benchmark's one machine-readable line: ``RESULT {"bench", "ratio", "identical", "threads", ...}``."""
    import json

    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1
    row = json.loads(lines[0][len("RESULT "):])
    assert row["bench"] == bench and row["ratio"] > 0 and row["threads"] >= 1
    return row


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_generate_outputs_agree(capsys):
    res = _load("bench_generate").main(["--n", "6", "--batch_size", "4", "--max_new_tokens", "6", "--runs", "1"])
    assert res["identical"] is True and res["naive_s"] > 0 and res["ours_s"] > 0
    row = _result(capsys, "generate")
    assert row["identical"] is True and row["threads"] == 1 and "wall_ratio" in row


# ------------------------------------------------------------------------------------------------------- CHAIR
def test_bench_chair_keeps_its_own_canonical_tables():
    """The canonical side must not take its tables from the product, or "identical" would prove nothing."""
    import ast

    tree = ast.parse((ROOT / "benchmarks" / "bench_chair.py").read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert imported == {("__future__", "annotations"), ("common.text.objects", "ObjectExtractor"),
                        ("common.text.singular", "singularize"), ("common.text.wordtok", "word_tokenize"),
                        ("evaluate.chair", "Caption"), ("evaluate.chair", "compute_chair"),
                        ("_bench", "Timings"), ("_bench", "fix_threads"), ("_bench", "result")}  # timing only


def test_bench_chair_catches_a_changed_merge_table(monkeypatch):
    import pytest

    from common.text import objects

    bench = _load("bench_chair")
    monkeypatch.setattr(objects, "COCO_DOUBLE_WORDS", objects.COCO_DOUBLE_WORDS[:-1])  # drop "train track"
    with pytest.raises(AssertionError):
        bench.main(["--captions", "300", "--seed", "3"])


def test_bench_chair_reports_one_result_line(capsys):
    _load("bench_chair").main(["--captions", "200", "--runs", "1"])
    assert _result(capsys, "chair")["identical"] is True


def test_bench_dpo_memory_runs_both_layouts_on_the_same_loss(capsys):
    """Both layouts compute the same first loss (the reference is the same function of the same weights)."""
    res = _load("bench_dpo_memory").main(["--hidden", "32", "--layers", "1", "--steps", "1", "--runs", "1",
                                          "--threads", "1"])
    first = res["first_loss"]
    assert abs(first["original"][0] - first["ours"][0]) < 1e-6
    assert all(res["median"][v]["peak_mb"] > 0 and res["median"][v]["cpu_s_per_step"] > 0
               for v in ("original", "ours"))
    assert _result(capsys, "dpo_memory")["identical"] is True


def test_bench_unlearn_both_sides_train_the_same_losses(capsys):
    res = _load("bench_unlearn").main(["--epochs", "2", "--runs", "1", "--n_train", "32"])
    assert res["losses_agree"] is True and res["steps"] >= 4
    assert all(v[0] > 0 for v in res["times"].values())
    assert _result(capsys, "unlearn")["identical"] is True


def test_bench_slug_scores_the_same_trials_both_ways(capsys):
    res = _load("bench_slug").main(["--trials", "4", "--runs", "1", "--per_class", "3"])
    assert res["identical"] is True and res["grad_mb"]["ours"] < res["grad_mb"]["original"]
    assert all(v[0] > 0 for v in res["times"].values())
    assert _result(capsys, "slug_search")["identical"] is True


def test_bench_stethoscope_gives_the_same_maps_both_ways(capsys):
    res = _load("bench_stethoscope").main(["--hidden", "64", "--layers", "2", "--answer_tokens", "4", "--runs", "1"])
    assert res["identical"] is True and res["tokens"] >= 4
    assert all(v[0] > 0 for v in res["times"].values())
    assert _result(capsys, "stethoscope")["identical"] is True
