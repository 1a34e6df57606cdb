"""Q-Bench A1 (LLVisionQA dev): generate option letters and score accuracy per type and concern.

    python evaluate/eval_qbench.py --score_only --questions_json llvisionqa_dev.json --answers_file A.jsonl \
        --output_json OUT
    python evaluate/eval_qbench.py --model llava --llava_path P --questions_json Q.json --image_dir IMGS \
        --answers_file A.jsonl --output_json OUT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from typing import Sequence

from evaluate.cli import (DEFAULT_MC_SUFFIX, add_generation_args, cli_main, generate_answers, image_path,
                          parse_args, with_suffix)
from common.io import atomic_write_json
from evaluate.util import print_table, read_answers
from evaluate.options import format_options
from evaluate.qbench import read_questions, score_qbench


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions_json", required=True, help="llvisionqa_dev.json")
    p.add_argument("--answers_file", required=True, help="answers jsonl (written when generating)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--image_dir", default=None, help="images named by img_path (generation)")
    p.add_argument("--prompt_suffix", default=DEFAULT_MC_SUFFIX)
    add_generation_args(p, max_new_tokens=64, dar=True)
    return p


def generate(args: argparse.Namespace) -> None:
    items = [{"id": q["id"], "image_path": image_path(args.image_dir, q["img_path"]),
              "prompt": with_suffix(f"{q['question']}\n{format_options(q['candidates'])}", args.prompt_suffix)}
             for q in read_questions(args.questions_json)]
    generate_answers(args, items, args.answers_file)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if not args.score_only:
        generate(args)
    answers = {k: str(r["text"]) for k, r in read_answers(args.answers_file).items()}
    result = score_qbench(read_questions(args.questions_json), answers)
    atomic_write_json(args.output_json, result)
    rows = [["overall", result["accuracy"]]]
    rows += [[f"type: {k}", v] for k, v in result["per_type"].items()]
    rows += [[f"concern: {k}", v] for k, v in result["per_concern"].items()]
    print_table(rows, ["group", "accuracy"], title=f"Q-Bench A1: {args.answers_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
