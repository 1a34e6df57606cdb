"""STIC stage 2, step 1: image descriptions by the stage-1 model, one jsonl line per image.

    python stic/generate_des_stage2.py --model llava_next --llava_next_path llava-hf/llava-v1.6-mistral-7b-hf \
        --lora_path checkpoints/stic_stage1 --image_dir dataset/image_data --save_dir image_description.jsonl \
        [--data_path dataset/mixed_5k.json]
    # the original's flags work too: --model-path P --adapter-path A --image-dir D --save-dir F

The images are those under ``--image_dir`` (recursively, sorted), or, with ``--data_path`` (LLaVA instruction data:
a list of ``{"id", "image", "conversations"}``), exactly the images it references (relative to ``--image_dir``, in
first-reference order). Each image is described *with the image* (the model sees it) under one of the 8 plain
prompts, a choice that depends only on (``--seed``, image name); sampling at T=0.2 as in stage 1. Record::

    {"image": name relative to --image_dir, "prompt": str, "description": str}

Resumable like ``generate_pref.py``: a re-run skips the images already in the file.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from common.args import ModelArguments, parse_args
from common.errors import LetheError, cli_main, run_cli
from common.io import load_image, read_json
from stic.prompts import PLAIN_PROMPTS
from stic.selfgen import SamplingArguments, generate, generate_missing, image_rng, list_images, output_path

DEFAULT_SAVE = "image_description.jsonl"


@dataclass
class DescribeArguments:
    image_dir: Optional[str] = field(default=None, metadata={"help": "image root (also --image-dir)"})
    save_dir: str = field(default=DEFAULT_SAVE, metadata={
        "help": f"output jsonl (also --save-dir); an existing folder gets {DEFAULT_SAVE} inside"})
    data_path: Optional[str] = field(default=None, metadata={
        "help": "LLaVA instruction json: describe exactly the images it references (relative to --image_dir)"})
    adapter_path: Optional[str] = field(default=None, metadata={
        "help": "the stage-1 LoRA adapter: the original's name for --lora_path (also --adapter-path)"})


def referenced_images(data_path: str | Path) -> list[str]:
    """The distinct image paths a LLaVA-format json references, in first-reference order (text-only samples have
    none; an ``image`` list contributes each of its paths)."""
    data = read_json(data_path)
    if not isinstance(data, list):
        raise LetheError(f"{data_path}: expected a JSON list of samples, got {type(data).__name__}")
    seen: dict[str, None] = {}
    for i, sample in enumerate(data):
        if not isinstance(sample, dict):
            raise LetheError(f"{data_path}: sample {i} is not an object")
        image = sample.get("image")
        for name in (image if isinstance(image, list) else [image]):
            if name is None:
                continue
            if not isinstance(name, str) or not name:
                raise LetheError(f"{data_path}: sample {i} (id {sample.get('id')!r}) has a bad image {name!r}")
            seen.setdefault(name, None)
    return list(seen)


def prompt_for(seed: int, name: str) -> str:
    return image_rng(seed, name, "describe").choice(PLAIN_PROMPTS)


def make_records(vlm: Any, image_dir: Path, names: Sequence[str], args: SamplingArguments) -> list[dict]:
    prompts = [prompt_for(args.seed, n) for n in names]
    images = [load_image(image_dir / n) for n in names]  # a bad file raises naming its path
    texts = generate(vlm, images, prompts, args)
    return [{"image": n, "prompt": p, "description": d} for n, p, d in zip(names, prompts, texts)]


def parse(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DescribeArguments, SamplingArguments]:
    margs, dargs, sargs = parse_args([ModelArguments, DescribeArguments, SamplingArguments], argv)
    if dargs.adapter_path:
        if margs.lora_path and margs.lora_path != dargs.adapter_path:
            raise LetheError("--adapter-path and --lora_path name different adapters; give one")
        margs.lora_path = dargs.adapter_path
    if not dargs.image_dir:
        raise LetheError("--image_dir (or --image-dir) is required")
    sargs.check()
    return margs, dargs, sargs


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    margs, dargs, sargs = parse(argv)
    if dargs.data_path:
        names = referenced_images(dargs.data_path)
        if sargs.max_images is not None:
            names = names[:sargs.max_images]
        missing = [n for n in names if not (Path(dargs.image_dir) / n).is_file()]
        if missing:  # found now, not hours into the run
            raise LetheError(f"{Path(dargs.image_dir) / missing[0]}: image not found ({len(missing)} of the "
                             f"{len(names)} images {dargs.data_path} references are missing under --image_dir)")
    else:
        names = list_images(dargs.image_dir, sargs.max_images)
    save = output_path(dargs.save_dir, DEFAULT_SAVE)
    return generate_missing(margs, names, save, dargs.image_dir, sargs, make_records, "describe", "described")


if __name__ == "__main__":
    run_cli(main)
