"""POPE: generate yes/no answers (LLaVA question file) and score them against the POPE label files.

Answers are paired with labels by image and the object asked about ("Is there a/an X in the image?", also the
"imange" spelling of the first POPE releases), so either release of the label files gives the same numbers.
Every question needs an answer: a partial answers file is an error unless ``--allow_partial`` (then the output
json says what is missing, per category).

    python evaluate/eval_pope.py --score_only --answers_file A.jsonl --question_file Q.jsonl \
        --annotation_dir D --output_json OUT
    python evaluate/eval_pope.py --model llava --llava_path P --question_file Q.jsonl --image_dir IMGS \
        --annotation_dir D --answers_file A.jsonl --output_json OUT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
import sys
from typing import Any, Sequence

from evaluate.cli import (DEFAULT_VQA_SUFFIX, add_generation_args, cli_main, generate_answers, image_path,
                          parse_args, with_suffix)
from common.io import atomic_write_json, iter_jsonl_numbered
from evaluate.util import print_table
from evaluate.pope import (COUNT_KEYS, RATIO_KEYS, LabelTable, PopeQuestion, missing_text, pope_categories,
                           pope_missing, read_labels, read_pope_questions, read_questions, score_pope)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--question_file", required=True, help="LLaVA POPE question jsonl")
    p.add_argument("--annotation_dir", required=True, help="dir with coco_pope_{category}.json label files")
    p.add_argument("--answers_file", required=True, help="answers jsonl (written when generating)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--image_dir", default=None, help="images of the questions (generation)")
    p.add_argument("--prompt_suffix", default=DEFAULT_VQA_SUFFIX,
                   help="appended on a new line to each question when generating ('' for none)")
    p.add_argument("--instruction_suffixes", nargs="*", default=[DEFAULT_VQA_SUFFIX],
                   help="suffixes stripped from question texts before the object is parsed (text after the "
                        "question mark is ignored anyway)")
    p.add_argument("--allow_partial", action="store_true",
                   help="score an answers file that misses some questions; the output says how many per category "
                        "(without it such a file is an error)")
    add_generation_args(p, max_new_tokens=128, dar=True)
    return p


def generate(args: argparse.Namespace) -> None:
    questions = read_questions(args.question_file)
    items = [{"id": q["question_id"], "image_path": image_path(args.image_dir, q["image"]),
              "prompt": with_suffix(str(q["text"]), args.prompt_suffix)} for q in questions.values()]
    generate_answers(args, items, args.answers_file)


def read_inputs(args: argparse.Namespace) -> tuple[dict[str, PopeQuestion], dict[str, LabelTable]]:
    """The parsed question file and label files (read before generating, so a bad file fails fast)."""
    return (read_pope_questions(args.question_file, args.instruction_suffixes),
            read_labels(args.annotation_dir, args.instruction_suffixes))


def score(args: argparse.Namespace, inputs: tuple[dict[str, PopeQuestion], dict[str, LabelTable]] | None = None
          ) -> dict[str, Any]:
    questions, labels = inputs or read_inputs(args)
    return score_pope(iter_jsonl_numbered(args.answers_file), questions, labels, answers_name=args.answers_file,
                      questions_name=args.question_file, allow_partial=args.allow_partial)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    inputs = read_inputs(args)
    if not args.score_only:
        generate(args)
    result = score(args, inputs)
    atomic_write_json(args.output_json, result)
    rows = [[cat] + [m[k] for k in RATIO_KEYS + COUNT_KEYS] for cat, m in pope_categories(result).items()]
    rows.append(["mean"] + [result["mean"][k] for k in RATIO_KEYS + COUNT_KEYS])
    missing = pope_missing(result)
    title = f"POPE: {args.answers_file}"
    if missing:
        title += f" (PARTIAL: {sum(missing.values())} of {result['num_questions']} questions unanswered)"
    print_table(rows, ["category", *RATIO_KEYS, *COUNT_KEYS], title=title)
    if missing:
        print(f"warning: partial result: questions without an answer per category: {missing_text(missing)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
