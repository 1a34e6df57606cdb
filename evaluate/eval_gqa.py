"""GQA (testdev-balanced): generate short answers and score exact-match accuracy.

    python evaluate/eval_gqa.py --score_only --questions_json testdev_balanced_questions.json \
        --answers_file A.jsonl --output_json OUT
    python evaluate/eval_gqa.py --model llava --llava_path P --questions_json Q.json --image_dir IMGS \
        --answers_file A.jsonl --output_json OUT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from pathlib import Path
from typing import Sequence

from evaluate.cli import (DEFAULT_VQA_SUFFIX, add_generation_args, cli_main, generate_answers, parse_args, require,
                          with_suffix)
from evaluate.gqa import read_predictions, read_questions, score_gqa
from common.errors import LetheError
from common.io import atomic_write_json
from evaluate.util import print_table
from evaluate.runner import find_image


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions_json", required=True, help="testdev_balanced_questions.json")
    p.add_argument("--answers_file", required=True, help="answers jsonl (or an official predictions .json)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--allow_missing", action="store_true", help="score only the answered questions")
    p.add_argument("--image_dir", default=None, help="GQA images, <imageId>.jpg (generation)")
    p.add_argument("--limit", type=int, default=None, help="generate for the first N questions only")
    p.add_argument("--prompt_suffix", default=DEFAULT_VQA_SUFFIX)
    add_generation_args(p, max_new_tokens=128, dar=True)
    return p


def _image_for(image_dir: Path, image_id: str) -> str:
    img = find_image(image_dir, image_id)
    if img is None:
        raise LetheError(f"{image_dir}: no image {image_id}.*")
    return str(img)


def generate(args: argparse.Namespace) -> None:
    questions = read_questions(args.questions_json)
    image_dir = Path(require(args.image_dir, "--image_dir"))
    selected = list(questions.items())[: args.limit] if args.limit else list(questions.items())
    items = [{"id": qid, "image_path": _image_for(image_dir, str(q["imageId"])),
              "prompt": with_suffix(str(q["question"]), args.prompt_suffix)} for qid, q in selected]
    generate_answers(args, items, args.answers_file)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if not args.score_only:
        generate(args)
    result = score_gqa(read_questions(args.questions_json), read_predictions(args.answers_file),
                       allow_missing=args.allow_missing)
    atomic_write_json(args.output_json, result)
    rows = [[k, result[k]] for k in ("accuracy", "binary", "open", "correct", "total", "missing")]
    print_table(rows, ["metric", "value"], title=f"GQA: {args.answers_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
