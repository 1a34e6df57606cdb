"""SLUG's evaluation of a CLIP (original, SLUG-edited or any other method's checkpoint), and the table of runs.

    python slug/eval.py --clip_path P [--clip_ckpt_load_path RUN] --concept clock \\
        --forget_images D/classification/val/clock --retain_folder D/classification/val \\
        [--mia_members forget.tar --mia_holdout holdout.tar] [--run_info RUN/trace.json] --output_json report.json
    python slug/eval.py --table original=a.json slug=b.json ft=c.json --summary_json summary.json --output_md t.md

Scores: zero-shot top-1/top-5 on the concept's images among all class names (``forget``; chance = 1/#classes),
on an ImageNet-val-layout folder without the concept (``retain``), on CelebA-style identities (``celeba``, with
``--celeba_root``), and a membership-inference attack (``mia``: cross-validated logistic regression on the
per-pair cosine, forget-set pairs = members against held-out pairs of the same concept = non-members; accuracy 0.5 =
the forget set looks unseen). ``--run_info`` adds the run's own time (SLUG: gradients + search, from its
trace.json; a trainer's report.json: its ``wall_s``) to this evaluation's, as ``wall_s``, and its ``layer``.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from common.errors import LetheError, cli_main, run_cli
from common.io import atomic_write_json, read_json
from slug.zeroshot import EvalSetArguments


@dataclass
class ReportArguments:
    mia_members: Optional[str] = field(default=None, metadata={"help": "forget-set pairs (tar/parquet/folder/toy:)"})
    mia_holdout: Optional[str] = field(default=None, metadata={"help": "held-out pairs of the same concept"})
    run_info: Optional[str] = field(default=None, metadata={
        "help": "a SLUG trace.json or a trainer's report.json: its time and layer go into this report"})
    output_json: str = field(default="slug_report.json", metadata={"help": "where the report is written"})


def run_seconds(info: dict) -> float:
    """The time a run took before this evaluation: SLUG's gradients + search, or a trainer's wall_s."""
    if "search_seconds" in info:
        return float(info.get("grad_seconds") or 0.0) + float(info["search_seconds"])
    if "wall_s" in info:
        return float(info["wall_s"])
    raise LetheError("--run_info: neither a SLUG trace.json (search_seconds) nor a report with wall_s")


def mia_score(clip, members_spec: str, holdout_spec: str, batch_size: int) -> dict[str, float]:
    from common.retrieval import embed_split, membership_inference, pair_scores
    from slug.data import load_pairs

    scores = []
    for spec in (members_spec, holdout_spec):
        split = load_pairs(spec)
        img, txt = embed_split(clip, split, batch_size=batch_size)
        scores.append(pair_scores(img, txt, split.txt2img))
    return membership_inference(scores[0], scores[1])


def evaluate(clip, ev_args: EvalSetArguments, rep: ReportArguments) -> dict[str, Any]:
    from slug.zeroshot import Evaluator, build_sets

    t0 = time.perf_counter()
    sets = build_sets(ev_args)
    scores = Evaluator(clip, list(sets.values()), ev_args.templates, ev_args.eval_batch_size).evaluate()
    report: dict[str, Any] = {"concept": ev_args.concept, "chance_top1": 1.0 / len(sets["forget"].class_names),
                              "classes": len(sets["forget"].class_names),
                              **{k: {**v, "images": len(sets[k].images)} for k, v in scores.items()}}
    if rep.mia_members or rep.mia_holdout:
        if not (rep.mia_members and rep.mia_holdout):
            raise LetheError("the MIA needs both --mia_members and --mia_holdout")
        report["mia"] = mia_score(clip, rep.mia_members, rep.mia_holdout, ev_args.eval_batch_size)
    report["eval_seconds"] = time.perf_counter() - t0
    if rep.run_info:
        info = read_json(rep.run_info)
        report["wall_s"] = round(run_seconds(info) + report["eval_seconds"], 2)
        if info.get("layer"):
            report["layer"] = info["layer"]
    return report


def print_report(r: dict[str, Any]) -> None:
    print(f"{'set':<10}{'top1':>8}{'top5':>8}{'images':>8}")
    for k in ("forget", "retain", "celeba"):
        if k in r:
            print(f"{k:<10}{r[k]['top1']:>8.3f}{r[k]['top5']:>8.3f}{r[k]['images']:>8}")
    print(f"chance top-1 {r['chance_top1']:.3f}" + (f"   MIA accuracy {r['mia']['accuracy']:.3f}" if "mia" in r else ""))


def summarize(reports: list[tuple[str, dict]]) -> tuple[dict[str, Any], str]:
    """summary.json ``{"chance_top1", name: {"forget_top1", "retain_top1", ["mia", "wall_s", "layer"]}}`` and a
    markdown table."""
    summary: dict[str, Any] = {"chance_top1": reports[0][1]["chance_top1"]}
    lines = ["| run | forget top-1 (↓) | retain top-1 | MIA (→0.5) | wall s | layer |", "|---|---:|---:|---:|---:|---|"]
    for name, r in reports:
        row: dict[str, Any] = {"forget_top1": r["forget"]["top1"], "retain_top1": r["retain"]["top1"]
                               if "retain" in r else r["celeba"]["top1"]}
        if "mia" in r:
            row["mia"] = r["mia"]["accuracy"]
        for k in ("wall_s", "layer"):
            if k in r:
                row[k] = r[k]
        summary[name] = row
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {name} | {row['forget_top1']:.3f} | {row['retain_top1']:.3f} | {fmt(row.get('mia'), '.3f')} "
                     f"| {fmt(row.get('wall_s'), '.1f')} | {row.get('layer', '')} |")
    lines.append(f"\nchance top-1: {summary['chance_top1']:.3f}")
    return summary, "\n".join(lines) + "\n"


def table_main(argv: list[str]) -> int:
    import argparse

    from common.args import one_line_errors
    from common.io import atomic_write_text

    p = argparse.ArgumentParser(prog="slug/eval.py --table")
    one_line_errors(p)
    p.add_argument("--table", nargs="+", required=True, metavar="NAME=REPORT")
    p.add_argument("--summary_json", required=True)
    p.add_argument("--output_md")
    a = p.parse_args(argv)
    reports = []
    for item in a.table:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise LetheError(f"--table {item!r}: expected NAME=REPORT.json")
        if not Path(path).is_file():
            raise LetheError(f"--table {name}: {path} not found")
        reports.append((name, read_json(path)))
    summary, md = summarize(reports)
    atomic_write_json(a.summary_json, summary)
    if a.output_md:
        atomic_write_text(a.output_md, md)
    print(md, end="")
    print(f"wrote {a.summary_json}")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import ModelArguments, parse_clip_args

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--table" in argv:
        return table_main(argv)
    margs, ev_args, rep = parse_clip_args([ModelArguments, EvalSetArguments, ReportArguments], argv,
                                          "slug/eval.py scores a CLIP")
    clip = margs.load()
    report = evaluate(clip, ev_args, rep)
    report["checkpoint"] = margs.ckpt_load_path or margs.model_path
    atomic_write_json(rep.output_json, report)
    print_report(report)
    print(f"wrote {rep.output_json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
