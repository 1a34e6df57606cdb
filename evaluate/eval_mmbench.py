"""MMBench (dev TSV): generate option letters and score vanilla and circular accuracy.

    python evaluate/eval_mmbench.py --score_only --tsv mmbench_dev.tsv --answers_file A.jsonl --output_json OUT
    python evaluate/eval_mmbench.py --model llava --llava_path P --tsv T.tsv --answers_file A.jsonl \
        --output_json OUT [--all_rounds]
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

from evaluate.cli import DEFAULT_MC_SUFFIX, add_generation_args, cli_main, generate_answers, parse_args, with_suffix
from common.errors import LetheError
from common.io import atomic_write_json
from evaluate.util import print_table
from evaluate.mmbench import build_prompt, decode_image, read_answers, read_tsv, score_mmbench


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tsv", required=True, help="MMBench TSV (base64 images)")
    p.add_argument("--answers_file", required=True, help="answers jsonl (written when generating)")
    p.add_argument("--output_json", required=True)
    p.add_argument("--all_rounds", action="store_true", help="also ask every rotation of the options (LLaVA)")
    p.add_argument("--image_cache_dir", default=None,
                   help="where decoded TSV images are written (default: <answers_file>.images/)")
    p.add_argument("--prompt_suffix", default=DEFAULT_MC_SUFFIX)
    add_generation_args(p, max_new_tokens=64, dar=True)
    return p


def _record(item: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {"item_id": item["id"], "question_id": item["index"], "round_id": item["round_id"],
            "prompt": item["prompt"], "text": text}


def generate(args: argparse.Namespace) -> None:
    rows = read_tsv(args.tsv)
    cache = Path(args.image_cache_dir or f"{args.answers_file}.images")
    cache.mkdir(parents=True, exist_ok=True)
    items = []
    for row in rows:
        img = cache / f"{row['index']}.png"
        if not img.is_file():
            try:
                decode_image(row["image"]).save(img)
            except Exception as e:  # noqa: BLE001 - any decoding failure is reported by row
                raise LetheError(f"{args.tsv}: index {row['index']}: cannot decode the base64 image "
                                     f"({e.__class__.__name__})") from None
        for r in range(len(row["options"]) if args.all_rounds else 1):
            items.append({"id": f"{row['index']}:{r}", "index": row["index"], "round_id": r, "image_path": str(img),
                          "prompt": with_suffix(build_prompt(row, r), args.prompt_suffix)})
    generate_answers(args, items, args.answers_file, id_key="item_id", make_record=_record)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if not args.score_only:
        generate(args)
    result = score_mmbench(read_tsv(args.tsv), read_answers(args.answers_file))
    atomic_write_json(args.output_json, result)
    rows = [["overall", result["accuracy"], result["circular_accuracy"]]]
    rows += [[k, v["accuracy"], v["circular_accuracy"]] for k, v in result["per_category"].items()]
    print_table(rows, ["category", "accuracy", "circular"], title=f"MMBench: {args.answers_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
