"""The benchmarks' RESULT lines as one markdown table (``benchmarks/run_all.sh``, ``benchmarks/gpu_check.sh``).

    python benchmarks/_table.py DIR [--gpu]      # DIR: the NAME.log files the scripts wrote

Without ``--gpu``: one row per log with the ratio (what it divides: CPU time, wall time or memory), whether the two
sides agreed, the thread count and the benchmark's own figures. With ``--gpu``: the GPU check's columns (tokens/s,
MFU, windows/s).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: what each benchmark's ratio divides (the original side's over ours)
MEASURE = {"dpo_memory": "added memory", "generate": "CPU time", "train_step": "steps/s (wall)"}
COMMON = ("bench", "ratio", "identical", "threads", "wall_ratio", "device", "arch")


def results(folder: Path, names=None) -> dict[str, dict]:
    """The last RESULT line of each ``NAME.log`` in ``folder`` (in ``names`` order when given)."""
    logs = [folder / f"{n}.log" for n in names] if names else sorted(folder.glob("*.log"))
    out: dict[str, dict] = {}
    for log in logs:
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("RESULT ")] if log.is_file() else []
        out[log.stem] = json.loads(lines[-1][len("RESULT "):]) if lines else {}
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def cpu_table(rows: dict[str, dict]) -> str:
    lines = ["| benchmark | ratio | of | agree | threads | its figures |", "|---|---:|---|---|---:|---|"]
    for name, r in rows.items():
        if not r:
            lines.append(f"| {name} | (no RESULT line) | | | | |")
            continue
        measure = MEASURE.get(r["bench"], "CPU time")
        if r["bench"] == "generate" and r.get("device", "cpu") != "cpu":
            measure = "wall time"
        extra = ", ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k not in COMMON)
        wall = f" ({r['wall_ratio']:.2f}x wall)" if "wall_ratio" in r else ""
        lines.append(f"| {r['bench']} | {r['ratio']:.2f}x{wall} | {measure} | {'yes' if r['identical'] else 'no'} | "
                     f"{r['threads']} | {extra} |")
    return "\n".join(lines)


def gpu_table(rows: dict[str, dict]) -> str:
    lines = ["| check | measured | MFU | vs original | device |", "|---|---|---|---:|---|"]
    for name, r in rows.items():
        if not r:
            lines.append(f"| {name} | (no RESULT line: see its log) | | | |")
            continue
        mfu = "-"
        if r["bench"] == "train_step":
            what = (f"{r['steps_per_s']:.3g} steps/s, {r.get('tokens_per_s', 0):,.0f} tokens/s; padding "
                    f"{100 * r['padding']:.1f} %" + (f" ({100 * r['padding_grouped']:.1f} % grouped)"
                                                      if "padding_grouped" in r else "")
                    + f"; host reads/step {_fmt(r.get('old_syncs_per_step', '-'))} -> {_fmt(r['syncs_per_step'])}")
            mfu = f"{100 * r['mfu']:.1f} %" if "mfu" in r else "-"
        elif r["bench"] == "generate":
            what = f"{r['tokens_per_s']:,.0f} new tokens/s, identical {100 * r['identical_fraction']:.0f} %"
        elif r["bench"] == "clip_score":
            what = (f"{r['windows_per_s']:,.0f} windows/s ({r.get('arch', '')}, {r['windows']} windows), "
                    f"preprocessing {100 * r['prep_share']:.1f} % of scoring, autocast {r['amp']}, classes changed "
                    f"vs the PIL path {100 * r['class_changes']:.2f} %")
        else:
            what = ", ".join(f"{k} {_fmt(v)}" for k, v in r.items() if k not in COMMON)
        lines.append(f"| {name} | {what} | {mfu} | {r['ratio']:.2f}x | {r.get('device', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    gpu = "--gpu" in args
    args = [a for a in args if a != "--gpu"]
    if len(args) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    folder = Path(args[0])
    if gpu:
        print(gpu_table(results(folder, ["train_step", "generate", "generate_static", "clip_score"])))
    else:
        print(cpu_table(results(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
