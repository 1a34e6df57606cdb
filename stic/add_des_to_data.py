"""STIC stage 2, step 2: infuse the self-generated image descriptions into LLaVA instruction data.

    python stic/add_des_to_data.py --data_path dataset/mixed_5k.json --des_path image_description.jsonl \
        --save_path dataset/des_instr_data.json [--allow_missing]

In each sample's first human turn, ``"<image>\\n"`` becomes ``"<image>\\nImage description:\\n{desc}\\n\\n"`` (or
``"Image description:\\n{desc}\\n\\n"`` is put in front when there is no ``"<image>\\n"``); answers are unchanged.
Descriptions are matched by image path (the original matched by line order, so one missing or extra line shifted
every later description onto the wrong image). Samples without an image are kept unchanged. A sample whose image has
no description is an error naming the image, unless ``--allow_missing`` (kept unchanged, counted). The descriptions
file is ``generate_des_stage2.py``'s jsonl (``{"image", "description", ...}``) or a JSON list of such objects; an
image described twice keeps its first description. The output is written atomically.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import copy
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from common.args import parse_args
from common.errors import LetheError, cli_main, run_cli
from common.io import atomic_write_json, iter_jsonl_numbered, read_json

IMAGE_TOKEN = "<image>\n"


@dataclass
class AddDescriptionArguments:
    data_path: Optional[str] = field(default=None, metadata={"help": "LLaVA instruction json (e.g. mixed_5k.json)"})
    des_path: str = field(default="image_description.jsonl", metadata={"help": "generate_des_stage2.py output"})
    save_path: Optional[str] = field(default=None, metadata={
        "help": "output json (default: des_instr_data.json beside --data_path)"})
    allow_missing: bool = field(default=False, metadata={
        "help": "keep samples whose image has no description unchanged (counted) instead of failing"})


def _key(image: str) -> str:
    return posixpath.normpath(str(image).replace("\\", "/"))


def load_descriptions(path: str | Path) -> tuple[dict[str, str], int]:
    """``{image: description}`` and the number of repeated images (the first description is kept)."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise LetheError(f"{path}: expected a JSON list of {{'image', 'description'}} objects")
        rows = [(f"entry {i}", r) for i, r in enumerate(data)]
    else:
        rows = [(f"line {n}", r) for n, r in iter_jsonl_numbered(path)]
    out: dict[str, str] = {}
    repeated = 0
    for where, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) \
                or not isinstance(row.get("description"), str):
            raise LetheError(f"{path}: {where}: a description needs string 'image' and 'description' fields")
        key = _key(row["image"])
        if key in out:
            repeated += 1
            continue
        out[key] = row["description"]
    return out, repeated


def infuse(value: str, description: str) -> str:
    """The human turn with the description after the image placeholder (or in front)."""
    block = f"Image description:\n{description}\n\n"
    if IMAGE_TOKEN in value:
        return value.replace(IMAGE_TOKEN, IMAGE_TOKEN + block, 1)
    return block + value


def add_descriptions(data: list, descriptions: dict[str, str], data_path: str | Path,
                     allow_missing: bool = False) -> tuple[list[dict], dict[str, int]]:
    """The samples with descriptions infused, and counts: ``samples``, ``described``, ``no_image``, ``missing``."""
    out: list[dict] = []
    counts = {"samples": len(data), "described": 0, "no_image": 0, "missing": 0}
    missing: list[str] = []
    for i, sample in enumerate(data):
        if not isinstance(sample, dict):
            raise LetheError(f"{data_path}: sample {i} is not an object")
        image = sample.get("image")
        if image is None:
            counts["no_image"] += 1
            out.append(sample)
            continue
        if not isinstance(image, str):
            raise LetheError(f"{data_path}: sample {i} (id {sample.get('id')!r}): 'image' must be one path, got "
                             f"{type(image).__name__}")
        desc = descriptions.get(_key(image))
        if desc is None:
            counts["missing"] += 1
            missing.append(image)
            out.append(sample)
            continue
        convs = sample.get("conversations")
        turn = next((t for t in convs if isinstance(t, dict) and t.get("from") == "human"), None) \
            if isinstance(convs, list) else None
        if turn is None or not isinstance(turn.get("value"), str):
            raise LetheError(f"{data_path}: sample {i} (id {sample.get('id')!r}) has no human turn in "
                             f"'conversations'")
        new = copy.deepcopy(sample)
        next(t for t in new["conversations"] if isinstance(t, dict) and t.get("from") == "human")["value"] = \
            infuse(turn["value"], desc)
        out.append(new)
        counts["described"] += 1
    if missing and not allow_missing:
        raise LetheError(f"{missing[0]}: no description for this image ({len(missing)} of the samples' images have "
                         f"none); generate them, or pass --allow_missing to keep those samples unchanged")
    return out, counts


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args([AddDescriptionArguments], argv)
    if not args.data_path:
        raise LetheError("--data_path is required")
    data: Any = read_json(args.data_path)
    if not isinstance(data, list):
        raise LetheError(f"{args.data_path}: expected a JSON list of samples, got {type(data).__name__}")
    descriptions, repeated = load_descriptions(args.des_path)
    out, counts = add_descriptions(data, descriptions, args.data_path, args.allow_missing)
    save = Path(args.save_path) if args.save_path else Path(args.data_path).with_name("des_instr_data.json")
    if save.resolve() == Path(args.data_path).resolve():
        raise LetheError(f"{save}: --save_path would overwrite --data_path")
    atomic_write_json(save, out)
    print(f"{save}: {counts['samples']} samples, {counts['described']} with a description, "
          f"{counts['no_image']} without an image (unchanged), {counts['missing']} with no description "
          f"(unchanged), {len(descriptions)} descriptions read" + (f", {repeated} repeated (first kept)"
                                                                   if repeated else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
