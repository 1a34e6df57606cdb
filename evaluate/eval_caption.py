"""Caption generation for CHAIR, EFUF protocol: the first N (default 1600) images of a COCO image folder, in
sorted order, that are not listed in the training-objects file (lines ``image ### ...``).

    python evaluate/eval_caption.py --model llava --llava_path P --image_dir COCO/train2014 \
        --objects_file objects.txt --caption_eval_path captions.jsonl
    python evaluate/eval_auto.py --caption_eval_path captions.jsonl --coco_annotation_dir ANN --output_json c.json

Output lines: ``{"image_id": int, "image": str, "caption": str}``; re-running resumes where it stopped.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import argparse
from pathlib import Path
from typing import Any, Mapping, Sequence

from evaluate.chair import image_id_from_name
from evaluate.cli import add_generation_args, cli_main, generate_answers, parse_args
from common.errors import LetheError
from common.io import PathLike, atomic_write_json, read_json
from evaluate.util import print_table
from evaluate.runner import IMAGE_SUFFIXES

EFUF_EVAL_PROMPT = "Please describe the image in great detail. Your response should have at least 100 words."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image_dir", required=True, help="COCO-format image folder")
    p.add_argument("--caption_eval_path", "--output_file", dest="output_file", required=True,
                   help="captions jsonl (appended; resumable)")
    p.add_argument("--objects_file", default=None,
                   help="images used in training, excluded: EFUF's objects.txt ('image ### ...' lines) or the jsonl "
                        "of insight/object.py ('image' field)")
    p.add_argument("--num_images", type=int, default=1600)
    p.add_argument("--start", type=int, default=0, help="skip the first S eligible images")
    p.add_argument("--prompt", default=EFUF_EVAL_PROMPT)
    p.add_argument("--coco_instances", default=None,
                   help="instances json to look image ids up by file name (default: parse them from the name)")
    p.add_argument("--output_json", default=None, help="also write a small run summary here")
    add_generation_args(p, max_new_tokens=200, num_beams=5, batch_size=8, length_penalty=0.0)  # EFUF's decoding
    return p


def excluded_images(objects_file: PathLike | None) -> set[str]:
    if not objects_file:
        return set()
    path = Path(objects_file)
    if not path.is_file():
        raise LetheError(f"{path}: objects file not found")
    if path.suffix == ".jsonl":
        from common.io import iter_jsonl_numbered

        out = set()
        for lineno, row in iter_jsonl_numbered(path):
            if "image" not in row:
                raise LetheError(f"{path}:{lineno}: no 'image' field")
            out.add(str(row["image"]))
        return out
    return {line.split("###")[0].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def select_images(image_dir: PathLike, excluded: set[str], num: int, start: int = 0) -> list[str]:
    folder = Path(image_dir)
    if not folder.is_dir():
        raise LetheError(f"{folder}: image folder not found")
    names = sorted(n for n in (p.name for p in folder.iterdir()) if Path(n).suffix.lower() in IMAGE_SUFFIXES)
    eligible = [n for n in names if n not in excluded]
    return eligible[start:start + num]


def id_lookup(instances: PathLike | None) -> Mapping[str, int] | None:
    if not instances:
        return None
    data = read_json(instances)
    return {img["file_name"]: int(img["id"]) for img in data.get("images", [])}


def _record(item: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {"image_id": item["image_id"], "image": item["id"], "caption": text}


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    names = select_images(args.image_dir, excluded_images(args.objects_file), args.num_images, args.start)
    if not names:
        raise LetheError(f"{args.image_dir}: no eligible images")
    lookup = id_lookup(args.coco_instances)
    items = []
    for name in names:
        imid = lookup.get(name) if lookup is not None else image_id_from_name(name)
        if imid is None:
            raise LetheError(f"{name}: cannot determine its COCO image id (try --coco_instances)")
        items.append({"id": name, "image_id": imid, "image_path": str(Path(args.image_dir) / name),
                      "prompt": args.prompt})
    stats = generate_answers(args, items, args.output_file, id_key="image", make_record=_record)
    summary = {"output_file": args.output_file, "images": len(items), "generated": stats.generated,
               "already_done": stats.already_done, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens,
               "num_beams": args.num_beams}
    if args.output_json:
        atomic_write_json(args.output_json, summary)
    print_table([[k, summary[k]] for k in ("images", "generated", "already_done", "output_file")],
                ["", "value"], title="caption generation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
