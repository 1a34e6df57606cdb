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


# ------------------------------------------------------------------------------------------------------- CLIP score
def test_bench_clip_score_reports_agreement_and_preprocessing_share(capsys):
    """The RESULT line carries the tensor path's agreement with the PIL path and the share of our time spent
    preprocessing (bench_clip_score.py's own checks are in tests/test_insight.py)."""
    res = _load("bench_clip_score").main(["--images", "8", "--width", "80", "--height", "60", "--patch_size", "10",
                                          "--repeat", "1"])
    row = _result(capsys, "clip_score")
    assert row["identical"] is True and row["preprocess"] == "tensor" and row["amp"] == "off"
    assert row["max_abs_diff"] <= row["tolerance"] and row["max_abs_diff_pil_tensor"] <= row["tolerance"]
    assert 0 < row["prep_share"] < 1 and 0 <= row["class_changes"] < 0.05 and row["windows"] > 0
    assert row["class_changes"] == res["class_changes"] and "wall_ratio" in row


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


def test_bench_train_step_old_and_new_steps_train_the_same_losses(capsys):
    res = _load("bench_train_step").main(["--steps", "3", "--batch_size", "2", "--runs", "1", "--workers", "1",
                                         "--image_size", "64x48", "--group_by_length"])
    row = _result(capsys, "train_step")
    assert row["identical"] is True and row["loss_rel_diff"] <= 1e-4
    assert row["syncs_per_step"] == 0 and row["old_syncs_per_step"] > 0  # host reads: none left in the step
    assert 0 < row["padding"] < 1 and row["padding"] == row["old_padding"]  # same batches, same padding
    assert 0 <= row["padding_grouped"] < 1
    assert len(res["old"]["losses"]) == len(res["new"]["losses"]) == 3


def test_the_7b_architecture_is_llava_1_5_7b(tmp_path):
    """--arch llava-1.5-7b builds LLaVA-1.5-7B's shape (on the meta device here: no memory, nothing downloaded)."""
    import sys

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bench import build_llava

    vlm = build_llava("llava-1.5-7b", "meta", tmp_path)
    assert sum(p.numel() for p in vlm.model.parameters()) == 7_063_427_072  # llava-hf/llava-1.5-7b-hf
    im = Image.fromarray(np.zeros((480, 640, 3), dtype=np.uint8))
    inputs = vlm.processor(images=[im], text=[vlm.chat_prompt("Describe.")], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 336, 336)
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == 576


def test_gpu_check_dry_run_prints_its_table(tmp_path):
    """benchmarks/gpu_check.sh --smoke: the GPU script's every step on the CPU with tiny models, and its table."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OUT_DIR": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "table.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| check")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["train_step", "generate", "generate_static", "clip_score"]
    assert "no RESULT" not in table and "host reads/step" in rows[0] and "windows/s" in rows[3]
    assert {p.name for p in tmp_path.glob("*.log")} == {"train_step.log", "generate.log", "generate_static.log",
                                                         "clip_score.log"}


def test_the_cpu_table_reads_each_logs_last_result_line(tmp_path):
    """benchmarks/run_all.sh's table: one row per log from its last RESULT line; a log without one says so."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _table import cpu_table, results

    (tmp_path / "generate.log").write_text("noise\nRESULT " + json.dumps(
        {"bench": "generate", "ratio": 1.0, "identical": False, "threads": 1}) + "\nRESULT " + json.dumps(
        {"bench": "generate", "ratio": 14.2, "identical": True, "threads": 1, "wall_ratio": 14.1, "n": 64}) + "\n")
    (tmp_path / "chair.log").write_text("Traceback ...\n")
    rows = cpu_table(results(tmp_path)).splitlines()
    assert rows[2] == "| chair | (no RESULT line) | | | | |"
    assert rows[3] == "| generate | 14.20x (14.10x wall) | CPU time | yes | 1 | n 64 |"
