"""Side-by-side report of evaluation runs: a markdown table of every metrics json found in each run directory,
and a bar chart (PNG) of the hallucination metrics. Every metric has an explicit name in the table, the chart and
the summary json (``metric_name``): ``chair_s``, ``chair_i``, ``chair_recall``, ``pope_f1``, ``pope_accuracy``,
``mme_perception`` … never a bare ``f1`` or ``CHAIRs``. A partial result (POPE scored with ``--allow_partial``) is
never shown as complete: its missing answers appear as rows, in a warning under the table (and on stderr), in the
chart's legend and in the summary json.

    python evaluate/report.py runs/base runs/efuf --output_md report.md --output_png report.png
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from evaluate.cli import cli_main, parse_args
from common.errors import LetheError
from common.io import atomic_write_json, atomic_write_text
from evaluate.util import format_table


def _chair(d: dict) -> dict[str, float]:
    return {k: d[k] for k in ("CHAIRs", "CHAIRi", "Recall", "Len", "BLEU-1", "BLEU-2", "BLEU-4") if k in d}


def _pope(d: dict) -> dict[str, float]:
    out = {"mean_f1": d["mean_f1"], "mean_accuracy": d["mean"]["accuracy"], "mean_yes_ratio": d["mean"]["yes_ratio"]}
    from evaluate.pope import pope_categories, pope_missing

    for cat, m in pope_categories(d).items():
        out[f"{cat}_f1"] = m["f1"]
    missing = pope_missing(d)
    if missing:  # scored with --allow_partial: the numbers cover only the answered questions
        out["missing_answers"] = sum(missing.values())
        out["num_questions"] = d.get("num_questions")
    return out


def _partial_note(kind: str, d: dict) -> str | None:
    """One line saying what a partial result lacks (None for a complete one)."""
    if kind != "POPE":
        return None
    from evaluate.pope import missing_text, pope_missing

    missing = pope_missing(d)
    if not missing:
        return None
    return (f"PARTIAL {kind} ({d.get('num_questions', '?')} questions, {sum(missing.values())} without an answer: "
            f"{missing_text(missing)}); scored with --allow_partial, not comparable to a complete run")


def _mme(d: dict) -> dict[str, float]:
    return {"perception": d["perception"], "cognition": d["cognition"],
            **{f"{k}_score": v["score"] for k, v in d["subtasks"].items()}}


# kind -> (recognises a metrics dict, flattens it); checked in order
KINDS: list[tuple[str, Callable[[dict], bool], Callable[[dict], dict[str, float]]]] = [
    ("CHAIR", lambda d: "CHAIRs" in d, _chair),
    ("POPE", lambda d: "mean_f1" in d and "mean" in d, _pope),
    ("MME", lambda d: "perception" in d and "subtasks" in d, _mme),
    ("MMBench", lambda d: "circular_accuracy" in d, lambda d: {"accuracy": d["accuracy"],
                                                                "circular_accuracy": d["circular_accuracy"]}),
    ("ScienceQA", lambda d: "img_accuracy" in d, lambda d: {"accuracy": d["accuracy"],
                                                            "img_accuracy": d["img_accuracy"]}),
    ("Q-Bench", lambda d: "per_concern" in d, lambda d: {"accuracy": d["accuracy"]}),
    ("GQA", lambda d: "binary" in d and "open" in d, lambda d: {k: d[k] for k in ("accuracy", "binary", "open")}),
]
# (kind, metric) pairs drawn in the hallucination chart; lower is better for CHAIR, higher for POPE
HALLUCINATION = [("CHAIR", "CHAIRs"), ("CHAIR", "CHAIRi"), ("POPE", "mean_f1"), ("POPE", "mean_accuracy")]
# explicit names where "<kind>_<metric>" would not be clear; the others are that rule (metric_name)
EXPLICIT_NAMES = {("CHAIR", "CHAIRs"): "chair_s", ("CHAIR", "CHAIRi"): "chair_i",
                  ("POPE", "mean_f1"): "pope_f1", ("POPE", "mean_accuracy"): "pope_accuracy",
                  ("POPE", "mean_yes_ratio"): "pope_yes_ratio"}
# the headline numbers of the summary json, in this order
SUMMARY = [("CHAIR", "CHAIRs"), ("CHAIR", "CHAIRi"), ("CHAIR", "Recall"), ("CHAIR", "Len"), ("POPE", "mean_f1"),
           ("POPE", "mean_accuracy"), ("POPE", "mean_yes_ratio"), ("MME", "perception"), ("MME", "cognition")]


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def metric_name(kind: str, metric: str) -> str:
    """The explicit name of ``metric`` of a result of ``kind`` (a kind key ``POPE:sub/pope`` — the second POPE
    result of a run — adds its file: ``pope_f1 (sub/pope)``): ``chair_s``, ``chair_i``, ``chair_recall``,
    ``chair_len``, ``chair_bleu_1``, ``pope_f1``, ``pope_accuracy``, ``pope_random_f1``, ``mme_perception`` …"""
    base, _, where = kind.partition(":")
    name = EXPLICIT_NAMES.get((base, metric)) or f"{_slug(base)}_{_slug(metric)}"
    return f"{name} ({where})" if where else name


def collect(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """kind (or kind:file stem when a kind occurs twice) -> flat metrics, for every metrics json in ``run_dir``."""
    return collect_with_notes(run_dir)[0]


def collect_with_notes(run_dir: str | Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """``collect`` and, per kind key whose result is partial, a note saying what it lacks."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LetheError(f"{run}: run directory not found")
    found: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for path in sorted(run.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        for kind, match, flatten in KINDS:
            if match(data):
                key = kind if kind not in found else f"{kind}:{path.relative_to(run).with_suffix('')}"
                found[key] = flatten(data)
                note = _partial_note(kind, data)
                if note:
                    notes[key] = f"{note} [{path.relative_to(run)}]"
                break
    return found, notes


def build_table(runs: Sequence[str], collected: Sequence[dict[str, dict[str, float]]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    keys: list[tuple[str, str]] = []
    for c in collected:
        for kind, metrics in c.items():
            for m in metrics:
                if (kind, m) not in keys:
                    keys.append((kind, m))
    for kind, m in keys:
        rows.append([metric_name(kind, m)] + [c.get(kind, {}).get(m) for c in collected])
    return rows


def markdown(runs: Sequence[str], rows: Sequence[Sequence[Any]],
             notes: Sequence[dict[str, str]] | None = None) -> str:
    """The table; then, for every partial result (``notes``: per run, kind -> what it lacks), a line saying so."""
    def cell(v: Any) -> str:
        return "–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    names = [Path(r).name or str(r) for r in runs]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += ["| " + " | ".join([str(r[0])] + [cell(v) for v in r[1:]]) + " |" for r in rows]
    partial = note_lines(runs, notes or [])
    if partial:
        lines += [""] + [f"**Warning:** {line}  " for line in partial]
    return "\n".join(lines) + "\n"


def note_lines(runs: Sequence[str], notes: Sequence[dict[str, str]]) -> list[str]:
    return [f"{Path(r).name or r}: {note}" for r, n in zip(runs, notes) for note in n.values()]


def bar_chart(runs: Sequence[str], collected: Sequence[dict[str, dict[str, float]]], path: str | Path,
              notes: Sequence[dict[str, str]] | None = None) -> bool:
    """Grouped bars, one group per hallucination metric, one bar per run (a run with a partial result is labelled
    so), each bar labelled with its value. False if there is nothing to draw."""
    fig = chart_figure(runs, collected, notes)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def chart_figure(runs: Sequence[str], collected: Sequence[dict[str, dict[str, float]]],
                 notes: Sequence[dict[str, str]] | None = None):
    """The matplotlib figure of ``bar_chart`` (None if there is nothing to draw): a title, the metrics by their
    explicit names, the value on every bar ("n/a" where a run lacks the metric)."""
    metrics = [(k, m) for k, m in HALLUCINATION if any(m in c.get(k, {}) for c in collected)]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(Path(r).name or str(r)) + (f" (PARTIAL {', '.join(k for k in n)})" if n else "")
             for r, n in zip(runs, notes or [{}] * len(runs))]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics) * max(1, len(runs)) / 2, 3.6))
    for i, (name, c) in enumerate(zip(names, collected)):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(metrics))]
        values = [c.get(k, {}).get(m) for k, m in metrics]
        bars = ax.bar(xs, [0.0 if v is None else v for v in values], width, label=name)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3f}" for v in values], padding=2, fontsize=7)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([metric_name(k, m) for k, m in metrics])
    ax.set_ylim(0, 1.12)  # room for the labels of bars near 1
    ax.set_ylabel("fraction (CHAIR: lower is better; POPE: higher)")
    ax.set_title("Hallucination: " + " vs ".join(Path(r).name or str(r) for r in runs), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--output_md", default=None, help="write the markdown table here")
    p.add_argument("--output_png", default=None,
                   help="bar chart of hallucination metrics (default: beside --output_md, else ./report.png)")
    p.add_argument("--output_json", default=None, help="also write the collected metrics as json")
    p.add_argument("--summary_json", default=None, help="write {run name: {chair_s, chair_i, chair_recall, "
                   "chair_len, pope_f1, pope_accuracy, pope_yes_ratio}} (pope_*: means over the POPE categories) for "
                   "a before/after comparison")
    return p


def summary(runs: Sequence[str], collected: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{run name: the headline hallucination numbers by explicit name}: ``chair_s``, ``chair_i``, ``chair_recall``,
    ``chair_len``, ``pope_f1``, ``pope_accuracy``, ``pope_yes_ratio`` (POPE: means over its categories),
    ``mme_perception``, ``mme_cognition``, those a run has. A partial POPE result (scored with --allow_partial) adds ``pope_complete: false`` and
    ``pope_missing_answers``."""
    out = {}
    for run, c in zip(runs, collected):
        flat = {metric_name(k, m): c[k][m] for k, m in SUMMARY if m in c.get(k, {})}
        if "POPE" in c:
            if c["POPE"].get("missing_answers"):
                flat["pope_complete"] = False
                flat["pope_missing_answers"] = c["POPE"]["missing_answers"]
        out[Path(run).name or str(run)] = flat
    return out


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    pairs = [collect_with_notes(r) for r in args.run_dirs]
    collected, notes = [c for c, _ in pairs], [n for _, n in pairs]
    if not any(collected):
        raise LetheError("no metrics json files found in " + ", ".join(args.run_dirs))
    rows = build_table(args.run_dirs, collected)
    md = markdown(args.run_dirs, rows, notes)
    print(format_table(rows, ["metric", *[Path(r).name or r for r in args.run_dirs]]))
    for line in note_lines(args.run_dirs, notes):
        print(f"warning: {line}", file=sys.stderr)
    if args.output_md:
        atomic_write_text(args.output_md, md)
    png = args.output_png or (str(Path(args.output_md).with_suffix(".png")) if args.output_md else "report.png")
    if bar_chart(args.run_dirs, collected, png, notes):
        print(f"chart: {png}")
    if args.output_json:
        atomic_write_json(args.output_json, {str(r): c for r, c in zip(args.run_dirs, collected)})
    if args.summary_json:
        atomic_write_json(args.summary_json, summary(args.run_dirs, collected))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
