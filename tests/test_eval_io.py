"""Shared helpers (jsonl errors, atomic writes, the table printer), the report, and running CLIs as files."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from evaluate import eval_auto, eval_mme, eval_pope, report
from common.errors import LetheError
from common.io import atomic_write_json, iter_jsonl, load_done_ids, read_json, repair_jsonl_tail
from evaluate.util import format_table

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "eval"


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n{"a": 4}\n')
    with pytest.raises(LetheError) as e:
        list(iter_jsonl(p))
    assert str(e.value) == f"{p}:4: malformed JSON line"
    assert isinstance(e.value, ValueError)
    p.write_text('[1, 2]\n')
    with pytest.raises(LetheError, match="x.jsonl:1: expected a JSON object"):
        list(iter_jsonl(p))
    with pytest.raises(LetheError, match="file not found"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))
    (tmp_path / "bad.json").write_text('{"a":\n 1,,}')
    with pytest.raises(LetheError, match=r"bad.json:2: malformed JSON"):
        read_json(tmp_path / "bad.json")


def test_atomic_json_write_leaves_no_temp_files(tmp_path):
    out = tmp_path / "sub" / "m.json"
    atomic_write_json(out, {"b": 1.5, "a": "é"})
    assert json.loads(out.read_text()) == {"b": 1.5, "a": "é"}
    atomic_write_json(out, {"c": 2})
    assert json.loads(out.read_text()) == {"c": 2}
    assert [p.name for p in out.parent.iterdir()] == ["m.json"]


def test_repair_and_done_ids(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": 1}\n{"id": "2"}\n{"id": 3, "te')
    assert load_done_ids(p, "id") == {"1", "2"}  # the unfinished last line is not "done"
    assert repair_jsonl_tail(p) is True
    assert p.read_text() == '{"id": 1}\n{"id": "2"}\n'
    assert repair_jsonl_tail(p) is False
    with pytest.raises(LetheError, match=r"a.jsonl:1: no 'key' field"):
        load_done_ids(p, "key")


def test_format_table():
    text = format_table([["CHAIRs", 0.5], ["mentions", 13]], ["metric", "value"])
    assert text.splitlines() == ["metric     value", "--------  ------", "CHAIRs    0.5000", "mentions      13"]


def test_report_side_by_side_and_chart(tmp_path, capsys):
    for run, answers in (("base", FIX / "pope" / "answers.jsonl"), ("efuf", None)):
        d = tmp_path / run
        assert eval_auto.main(["--caption_eval_path", str(FIX / "captions.jsonl"), "--coco_annotation_dir",
                               str(FIX / "coco"), "--output_json", str(d / "chair.json")]
                              + (["--dedup_per_caption"] if run == "efuf" else [])) == 0
        assert eval_mme.main(["--score_only", "--mme_results_dir", str(FIX / "mme_results"), "--output_json",
                              str(d / "mme.json")]) == 0
        if answers:
            assert eval_pope.main(["--score_only", "--answers_file", str(answers), "--question_file",
                                   str(FIX / "pope" / "llava_pope_test.jsonl"), "--annotation_dir",
                                   str(FIX / "pope"), "--output_json", str(d / "pope.json")]) == 0
    md, png = tmp_path / "report.md", tmp_path / "report.png"
    assert report.main([str(tmp_path / "base"), str(tmp_path / "efuf"), "--output_md", str(md),
                        "--output_json", str(tmp_path / "report.json")]) == 0
    lines = md.read_text().splitlines()
    assert lines[0] == "| metric | base | efuf |"
    assert "| chair_i | 0.3077 | 0.3636 |" in lines      # 4/13 vs 4/11 (dedup)
    assert "| pope_f1 | 0.6500 | – |" in lines           # missing in the second run
    assert "| mme_perception | 175.0000 | 175.0000 |" in lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    collected = json.loads((tmp_path / "report.json").read_text())
    assert collected[str(tmp_path / "base")]["POPE"]["random_f1"] == pytest.approx(0.8)
    assert report.main([str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("script", ["eval_mme.py", "eval_auto.py", "eval_pope.py", "eval_gqa.py", "eval_sqa.py",
                                    "eval_qbench.py", "eval_mmbench.py", "eval_caption.py", "report.py"])
def test_scripts_run_as_files(script, monkeypatch, capsys):
    """``python evaluate/<script>`` works from the repo root: the bootstrap puts the root, not evaluate/, on
    sys.path (evaluate/io.py must not shadow the standard library)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [f"evaluate/{script}", "--help"])
    monkeypatch.setattr(sys, "path", [str(ROOT / "evaluate")] + [p for p in sys.path if p not in ("", str(ROOT))])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "evaluate" / script), run_name="__main__")
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert str(ROOT / "evaluate") not in sys.path and sys.path[0] == str(ROOT)


def test_mme_script_as_file_scores(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "m.json"
    monkeypatch.setattr(sys, "argv", ["evaluate/eval_mme.py", "--score_only", "--mme_results_dir",
                                      str(FIX / "mme_results"), "--output_json", str(out)])
    monkeypatch.setattr(sys, "path", [str(ROOT / "evaluate")] + [p for p in sys.path if p not in ("", str(ROOT))])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "evaluate" / "eval_mme.py"), run_name="__main__")
    assert e.value.code == 0
    assert json.loads(out.read_text())["perception"] == 175.0


def test_report_marks_a_partial_result(tmp_path, capsys, monkeypatch):
    """A POPE result scored with --allow_partial is labelled partial in the table, under it, on stderr, in the
    chart legend and in the summary json; a complete one is not."""
    pope = FIX / "pope"
    lines = (pope / "answers.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "half.jsonl").write_text("".join(lines[:3]))
    for run, answers, extra in (("full", pope / "answers.jsonl", []), ("half", tmp_path / "half.jsonl",
                                                                      ["--allow_partial"])):
        assert eval_pope.main(["--score_only", "--answers_file", str(answers), "--question_file",
                               str(pope / "llava_pope_test.jsonl"), "--annotation_dir", str(pope), "--output_json",
                               str(tmp_path / run / "pope.json"), *extra]) == 0
    capsys.readouterr()
    md = tmp_path / "report.md"
    assert report.main([str(tmp_path / "full"), str(tmp_path / "half"), "--output_md", str(md), "--summary_json",
                        str(tmp_path / "s.json")]) == 0
    text = md.read_text()
    assert "| pope_missing_answers | – | 5 |" in text and "| pope_num_questions | – | 8 |" in text
    warning = [ln for ln in text.splitlines() if ln.startswith("**Warning:**")]
    assert len(warning) == 1 and "half: PARTIAL POPE (8 questions, 5 without an answer: popular 2, random 3)" \
        in warning[0]
    err = capsys.readouterr().err
    assert err.count("warning: half: PARTIAL POPE") == 1 and "full:" not in err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["half"]["pope_complete"] is False and s["half"]["pope_missing_answers"] == 5
    assert "pope_complete" not in s["full"]
    import matplotlib.axes

    names, real_legend = [], matplotlib.axes.Axes.legend

    def legend(self, *a, **k):
        names.extend(h.get_label() for h in self.containers)
        return real_legend(self, *a, **k)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", legend)
    runs = [str(tmp_path / r) for r in ("full", "half")]
    pairs = [report.collect_with_notes(r) for r in runs]
    assert report.bar_chart(runs, [c for c, _ in pairs], tmp_path / "c.png", [n for _, n in pairs])
    assert names == ["full", "half (PARTIAL POPE)"]


def test_report_names_every_metric_explicitly_and_labels_the_chart(tmp_path, capsys):
    """summary json and table: chair_s, chair_i, chair_recall, pope_f1, pope_accuracy … (never a bare f1 or CHAIRs),
    per run ({"before": …, "after": …}); the chart has a title and the value on every bar."""
    for run, dedup in (("before", []), ("after", ["--dedup_per_caption"])):
        assert eval_auto.main(["--caption_eval_path", str(FIX / "captions.jsonl"), "--coco_annotation_dir",
                               str(FIX / "coco"), "--output_json", str(tmp_path / run / "chair.json"), *dedup]) == 0
    assert eval_pope.main(["--score_only", "--answers_file", str(FIX / "pope" / "answers.jsonl"), "--question_file",
                           str(FIX / "pope" / "llava_pope_test.jsonl"), "--annotation_dir", str(FIX / "pope"),
                           "--output_json", str(tmp_path / "before" / "pope.json")]) == 0
    runs = [str(tmp_path / "before"), str(tmp_path / "after")]
    md, s = tmp_path / "summary.md", tmp_path / "summary.json"
    assert report.main([*runs, "--output_md", str(md), "--summary_json", str(s)]) == 0
    summary = json.loads(s.read_text())
    assert set(summary) == {"before", "after"}
    assert list(summary["before"]) == ["chair_s", "chair_i", "chair_recall", "chair_len", "pope_f1", "pope_accuracy",
                                       "pope_yes_ratio"]
    assert list(summary["after"]) == ["chair_s", "chair_i", "chair_recall", "chair_len"]  # no POPE in this run
    assert summary["before"]["chair_i"] == pytest.approx(4 / 13)
    assert summary["after"]["chair_i"] == pytest.approx(4 / 11)  # dedup
    assert summary["before"]["pope_f1"] == pytest.approx(0.65)
    labels = [line.split("|")[1].strip() for line in md.read_text().splitlines()[2:] if line.startswith("| ")]
    assert {"chair_s", "chair_i", "chair_recall", "pope_f1", "pope_accuracy", "pope_random_f1"} <= set(labels)
    assert not {"f1", "CHAIRs", "CHAIRi"} & set(labels) and not any(" " in label for label in labels)

    pairs = [report.collect_with_notes(r) for r in runs]
    fig = report.chart_figure(runs, [c for c, _ in pairs], [n for _, n in pairs])
    ax = fig.axes[0]
    assert ax.get_title() == "Hallucination: before vs after"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["chair_s", "chair_i", "pope_f1", "pope_accuracy"]
    values = [t.get_text() for t in ax.texts]  # bar_label: one per bar, run by run
    assert values == ["0.667", "0.308", "0.650", "0.625", "0.667", "0.364", "n/a", "n/a"]
