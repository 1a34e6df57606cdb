"""MME: answer the benchmark's yes/no questions, write the official results files, and score them.

    python evaluate/eval_mme.py --score_only --mme_results_dir DIR --output_json OUT
    python evaluate/eval_mme.py --model llava --llava_path P --mme_data_dir MME_Benchmark_release \
        --answers_file A.jsonl --mme_results_dir DIR --output_json OUT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from typing import Any, Sequence

from evaluate.cli import (DEFAULT_VQA_SUFFIX, add_generation_args, cli_main, generate_answers, parse_args, require,
                          strip_suffixes, with_suffix)
from common.errors import LetheError
from common.io import atomic_write_json
from evaluate.util import print_table, read_answers
from evaluate.mme import read_benchmark, score_results_dir, write_results_dir

YES_NO_HINT = "Please answer yes or no."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mme_results_dir", required=True, help="official results dir (<subtask>.txt files)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--mme_data_dir", default=None, help="MME benchmark root (generation)")
    p.add_argument("--answers_file", default=None, help="resumable answers jsonl (generation)")
    p.add_argument("--prompt_suffix", default=DEFAULT_VQA_SUFFIX,
                   help="appended on a new line to each question when generating ('' for none)")
    p.add_argument("--drop_yes_no_hint", action="store_true",
                   help=f"remove '{YES_NO_HINT}' from the question before prompting (EFUF)")
    add_generation_args(p, max_new_tokens=128, dar=True)
    return p


def generate(args: argparse.Namespace) -> None:
    questions = read_benchmark(require(args.mme_data_dir, "--mme_data_dir"))
    answers_file = require(args.answers_file, "--answers_file")
    items = []
    for q in questions:
        text = strip_suffixes(q.question, [YES_NO_HINT]) if args.drop_yes_no_hint else q.question
        items.append({"id": q.id, "image_path": q.image_path, "prompt": with_suffix(text, args.prompt_suffix)})
    generate_answers(args, items, answers_file)
    answers = {k: str(r["text"]) for k, r in read_answers(answers_file).items()}
    extra = set(answers) - {q.id for q in questions}
    if extra:
        raise LetheError(f"{answers_file}: answers for unknown MME questions, e.g. {sorted(extra)[0]!r}")
    write_results_dir(questions, answers, args.mme_results_dir)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if not args.score_only:
        generate(args)
    result: dict[str, Any] = score_results_dir(args.mme_results_dir)
    atomic_write_json(args.output_json, result)
    rows = [[name, s["acc"], s["acc_plus"], s["score"]] for name, s in result["subtasks"].items()]
    rows += [["perception", None, None, result["perception"]], ["cognition", None, None, result["cognition"]]]
    print_table(rows, ["subtask", "acc", "acc+", "score"], title=f"MME: {args.mme_results_dir}", float_fmt="{:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
