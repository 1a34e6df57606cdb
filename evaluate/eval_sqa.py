"""ScienceQA (test split): generate option letters and score overall and IMG accuracy.

    python evaluate/eval_sqa.py --score_only --base_dir D --result_file R.jsonl --output_json OUT
    python evaluate/eval_sqa.py --model llava --llava_path P --base_dir D --image_dir D/images/test \
        --result_file R.jsonl --output_json OUT
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

from evaluate.cli import DEFAULT_MC_SUFFIX, add_generation_args, cli_main, generate_answers, parse_args, with_suffix
from common.io import atomic_write_json
from evaluate.util import print_table
from evaluate.sqa import build_prompt, read_predictions, read_problems, score_sqa


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base_dir", required=True, help="dir with problems.json and pid_splits.json")
    p.add_argument("--result_file", required=True, help="answers jsonl (written when generating)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--image_dir", default=None,
                   help="images as <image_dir>/<pid>/<image> (default: <base_dir>/images/<split>)")
    p.add_argument("--image_only", action="store_true", help="generate for image problems only (SQA-IMG)")
    p.add_argument("--prompt_suffix", default=DEFAULT_MC_SUFFIX)
    add_generation_args(p, max_new_tokens=128, dar=True)
    return p


def _record(item: Mapping[str, Any], text: str) -> dict[str, Any]:
    prompt = ("<image>\n" if item["has_image"] else "") + item["prompt"]
    return {"question_id": item["id"], "prompt": prompt, "text": text}


def generate(args: argparse.Namespace) -> None:
    problems, ids = read_problems(args.base_dir, args.split)
    image_dir = Path(args.image_dir) if args.image_dir else Path(args.base_dir) / "images" / args.split
    items = []
    for pid in ids:
        prob = problems[pid]
        has_image = bool(prob.get("image"))
        if args.image_only and not has_image:
            continue
        items.append({"id": pid, "image_path": str(image_dir / pid / prob["image"]) if has_image else None,
                      "has_image": has_image, "prompt": with_suffix(build_prompt(prob), args.prompt_suffix)})
    generate_answers(args, items, args.result_file, make_record=_record)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if not args.score_only:
        generate(args)
    problems, ids = read_problems(args.base_dir, args.split)
    result = score_sqa(problems, ids, read_predictions(args.result_file))
    atomic_write_json(args.output_json, result)
    rows = [[k, result[k]] for k in ("accuracy", "img_accuracy", "correct", "total", "img_correct", "img_total")]
    print_table(rows, ["metric", "value"], title=f"ScienceQA ({args.split}): {args.result_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
