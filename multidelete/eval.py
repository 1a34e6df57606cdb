"""Evaluate a CLIP checkpoint on an unlearning task, or tabulate runs.

    python multidelete/eval.py --clip_path P [--clip_ckpt_load_path RUN] --cfg-path configs/clip/retrieval_toy.yaml \\
        --output_json report.json
    python multidelete/eval.py --table original.json vlul/report.json ... --output_md t.md --output_png t.png \\
        --summary_json summary.json

Per split (Df, Dr — its first 5×|Df| images, as MultiDelete — test, and SALMUBench's holdout_association): one
batched embedding pass (cached beside the report, keyed by the weights and the split), image→text and text→image
recall@1/5/10 (fractions; LAVIS reports percent) and ``r5`` = their mean at 5, with ``chance_r5`` the same for a
random ranking. Forgetting: ``auroc`` = MultiDelete's Df-vs-Dr AUROC of the true pairs' cosines (Dr = 1; high =
forgotten pairs score below retained ones; Dr in chunks of |Df|, averaged) and ``mia`` = accuracy of a
cross-validated logistic-regression attack telling Df pairs (members) from test pairs (non-members) by cosine
(0.5 = Df looks like data never seen).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from common.errors import LetheError, cli_main, run_cli
from common.io import atomic_write_json, read_json
from common.retrieval import (chance_recall, df_dr_auroc, embed_split, membership_inference, pair_scores,
                              recall_at_k)
from multidelete.tasks import TaskArguments, TaskData

SUMMARY_KEYS = ("df_r5", "dr_r5", "test_r5", "auroc", "mia", "wall_s")


def split_chance_r5(split) -> float:
    per_image = max(1, round(split.n_pairs / max(1, split.n_images)))
    return (chance_recall(split.n_pairs, 5, per_image) + chance_recall(split.n_images, 5)) / 2


def evaluate_model(clip, data: TaskData, task: TaskArguments, batch_size: int = 128, seed: int = 0,
                   cache_dir: str | Path | None = None) -> dict[str, Any]:
    splits = data.eval_splits(task.max_dr_eval)
    report: dict[str, Any] = {"task": task.task, "splits": {}}
    scores = {}
    for name, split in splits.items():
        cache = Path(cache_dir) / f"embed_{name}.safetensors" if cache_dir else None
        fi, ft = embed_split(clip, split, batch_size=batch_size, cache_path=cache)
        r = recall_at_k(fi, ft, split.img2txt, split.txt2img)
        r["r5"] = (r["txt_r5"] + r["img_r5"]) / 2
        r["chance_r5"] = split_chance_r5(split)
        r.update(images=split.n_images, pairs=split.n_pairs)
        report["splits"][name] = r
        scores[name] = pair_scores(fi, ft, split.txt2img)
    report["auroc"] = df_dr_auroc(scores["df"], scores["dr"], seed=seed)
    report["mia"] = membership_inference(scores["df"], scores["test"], seed=seed)["accuracy"]
    for name in ("df", "dr", "test"):
        report[f"{name}_r5"] = report["splits"][name]["r5"]
    report["chance_r5"] = report["splits"]["df"]["chance_r5"]
    return report


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    atomic_write_json(path, report)


def print_report(report: dict[str, Any]) -> None:
    print(f"{'split':<22}{'txt_r1':>8}{'txt_r5':>8}{'img_r1':>8}{'img_r5':>8}{'r5':>8}{'chance':>8}")
    for name, r in report["splits"].items():
        print(f"{name:<22}{r['txt_r1']:>8.3f}{r['txt_r5']:>8.3f}{r['img_r1']:>8.3f}{r['img_r5']:>8.3f}"
              f"{r['r5']:>8.3f}{r['chance_r5']:>8.3f}")
    print(f"Df-vs-Dr AUROC {report['auroc']:.3f}   MIA accuracy (Df vs test) {report['mia']:.3f}")


def tabulate(reports: Sequence[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """(markdown table, summary dict ``{"chance_r5", name: {df_r5, dr_r5, test_r5, auroc, mia, wall_s}}``)."""
    summary: dict[str, Any] = {"chance_r5": reports[0][1]["chance_r5"]}
    lines = ["| run | Df R@5 (↓) | Dr R@5 | test R@5 | AUROC (↑) | MIA (→0.5) | wall s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in reports:
        row = {k: r.get(k) for k in SUMMARY_KEYS}
        summary[name] = row
        cells = [f"{row[k]:.3f}" if isinstance(row[k], float) and k != "wall_s" else
                 (f"{row[k]:.1f}" if row[k] is not None else "–") for k in SUMMARY_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nchance R@5 on Df: {summary['chance_r5']:.3f}")
    return "\n".join(lines) + "\n", summary


def plot(summary: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_path

    names = [k for k in summary if k != "chance_r5"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(names), 3.2))
    width = 0.27
    for k, (key, label) in enumerate((("df_r5", "Df R@5"), ("dr_r5", "Dr R@5"), ("test_r5", "test R@5"))):
        ax.bar([i + (k - 1) * width for i in range(len(names))], [summary[n][key] or 0 for n in names], width,
               label=label)
    ax.axhline(summary["chance_r5"], color="grey", ls="--", lw=1, label="chance (Df)")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("recall@5")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def table_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="multidelete/eval.py --table")
    p.add_argument("--table", nargs="+", required=True, help="report.json files (NAME=PATH to name a row)")
    p.add_argument("--output_md", default=None)
    p.add_argument("--output_png", default=None)
    p.add_argument("--summary_json", default=None)
    a = p.parse_args(argv)
    reports = []
    for spec in a.table:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        r = read_json(path)
        if not isinstance(r, dict) or "splits" not in r:
            raise LetheError(f"{path}: not a multidelete report (no 'splits')")
        reports.append((name or r.get("method") or Path(path).parent.name, r))
    md, summary = tabulate(reports)
    print(md, end="")
    if a.output_md:
        from common.io import atomic_write_text

        atomic_write_text(a.output_md, md)
    if a.summary_json:
        atomic_write_json(a.summary_json, summary)
    if a.output_png:
        plot(summary, a.output_png)
    return 0


@dataclass
class EvalArguments:
    output_json: str = field(default="report.json")
    batch_size: int = field(default=128)
    seed: int = field(default=0)
    cache_dir: Optional[str] = field(default=None, metadata={"help": "cache the embeddings here"})


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import ModelArguments, parse_clip_args
    from multidelete.tasks import load_task
    from multidelete.unlearn import cfg_path_alias

    argv = cfg_path_alias(list(sys.argv[1:] if argv is None else argv))
    if "--table" in argv:
        return table_main(argv)
    types = [ModelArguments, TaskArguments, EvalArguments]
    margs, task, ev = parse_clip_args(types, argv, "multidelete/eval.py evaluates a CLIP")
    data = load_task(task, ev.seed)
    clip = margs.load()
    report = evaluate_model(clip, data, task, batch_size=ev.batch_size, seed=ev.seed, cache_dir=ev.cache_dir)
    report.update(method="original" if not margs.ckpt_load_path else Path(margs.ckpt_load_path).name,
                  checkpoint=margs.ckpt_load_path or margs.model_path)
    write_report(ev.output_json, report)
    print_report(report)
    print(f"wrote {ev.output_json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
