"""STIC stage 1: self-constructed preference data, one jsonl line per image.

    python stic/generate_pref.py --model llava_next --llava_next_path llava-hf/llava-v1.6-mistral-7b-hf \
        --image_dir dataset/coco/train2014 --save_dir pref_data_mscoco.jsonl [--max_images 6000 --seed 0]
    # the original's flags work too: --model-path P --image-dir D --save-dir F

For each image (sorted; the first ``--max_images``):

- **chosen**: the model's answer to the step-by-step description prompt (``--preferred_prompt``) on the clean
  image, stored under a plain prompt x (one of 8);
- **rejected**: with probability 1/2 the answer to a hallucination-inducing prompt (one of 8) on the clean image,
  else the answer to x on a corrupted image (1/2 low resolution, 1/2 colour jitter) — really corrupted, unlike the
  original, which recorded ``image_corruption: true`` but fed the clean image.

Every choice (x, strategy, hallucination prompt, corruption and its jitter parameters) depends only on
(``--seed``, image name). Sampling: T=0.2, no top-p, 1024 new tokens (``--temperature``, ``--top_p``,
``--max_new_tokens``); torch is seeded per batch, so a run is reproducible. Record::

    {"image": name relative to --image_dir, "image_corruption": bool, "corruption": "low_resolution" |
     "color_jitter" | null, "hallu_prompt": str ("" if none), "strategy": "hallucination_prompt" | "corrupted_image",
     "chosen": [{"role": "user", "content": x}, {"role": "assistant", "content": y_g}],
     "rejected": [{"role": "user", "content": x}, {"role": "assistant", "content": y_b}]}

Resumable: one fsync'ed line per finished image; a re-run skips the images already in the file and cuts a torn last
line, so a killed run, re-run, ends with one record per image. A bad image stops the run with one ``error:`` line
naming it; the records already written stay.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

from common.args import ModelArguments, parse_args
from common.errors import LetheError, cli_main, run_cli
from common.io import load_image
from stic.corrupt import CORRUPTIONS, corrupt
from stic.prompts import DETAILED_PROMPT, HALLUCINATION_PROMPTS, PLAIN_PROMPTS
from stic.selfgen import SamplingArguments, generate, generate_missing, image_rng, list_images, output_path

DEFAULT_SAVE = "pref_data_mscoco.jsonl"
STRATEGIES = ("hallucination_prompt", "corrupted_image")


@dataclass
class PrefArguments:
    image_dir: Optional[str] = field(default=None, metadata={"help": "folder of unlabeled images (also --image-dir)"})
    save_dir: str = field(default=DEFAULT_SAVE, metadata={
        "help": f"output jsonl (also --save-dir); an existing folder gets {DEFAULT_SAVE} inside"})
    preferred_prompt: str = field(default=DETAILED_PROMPT, metadata={
        "help": "the prompt whose answer on the clean image is the preferred one (default: STIC's step-by-step "
                "description prompt); for a model that does not follow it, the description prompt it was tuned on"})


@dataclass
class ImagePlan:
    """The random choices for one image."""
    name: str
    prompt: str  # the plain prompt x the pair is stored under
    strategy: str
    hallu_prompt: str  # "" unless strategy == "hallucination_prompt"
    corruption: Optional[str]  # None unless strategy == "corrupted_image"
    rng: random.Random  # the image's stream, positioned after the choices (the jitter parameters come next)


def plan_image(seed: int, name: str) -> ImagePlan:
    """The choices for image ``name``: a function of (seed, name) only."""
    rng = image_rng(seed, name, "pref")
    prompt = rng.choice(PLAIN_PROMPTS)
    if rng.random() < 0.5:
        return ImagePlan(name, prompt, "hallucination_prompt", rng.choice(HALLUCINATION_PROMPTS), None, rng)
    return ImagePlan(name, prompt, "corrupted_image", "", rng.choice(CORRUPTIONS), rng)


def make_records(vlm: Any, image_dir: Path, names: Sequence[str], args: SamplingArguments,
                 preferred_prompt: str = DETAILED_PROMPT) -> list[dict]:
    """Generate the preference records of one batch of images (one ``generate`` call: chosen, then rejected)."""
    plans = [plan_image(args.seed, n) for n in names]
    clean = [load_image(image_dir / n) for n in names]  # a bad file raises naming its path
    rejected_images, rejected_prompts = [], []
    for plan, img in zip(plans, clean):
        if plan.strategy == "hallucination_prompt":
            rejected_images.append(img)
            rejected_prompts.append(plan.hallu_prompt)
        else:
            rejected_images.append(corrupt(img, plan.corruption, plan.rng))
            rejected_prompts.append(plan.prompt)
    texts = generate(vlm, clean + rejected_images, [preferred_prompt] * len(names) + rejected_prompts, args)
    chosen, rejected = texts[:len(names)], texts[len(names):]
    return [{"image": plan.name, "image_corruption": plan.strategy == "corrupted_image",
             "corruption": plan.corruption, "hallu_prompt": plan.hallu_prompt, "strategy": plan.strategy,
             "chosen": [{"role": "user", "content": plan.prompt}, {"role": "assistant", "content": y_g}],
             "rejected": [{"role": "user", "content": plan.prompt}, {"role": "assistant", "content": y_b}]}
            for plan, y_g, y_b in zip(plans, chosen, rejected)]


def parse(argv: Sequence[str] | None = None) -> tuple[ModelArguments, PrefArguments, SamplingArguments]:
    margs, pargs, sargs = parse_args([ModelArguments, PrefArguments, SamplingArguments], argv)
    if not pargs.image_dir:
        raise LetheError("--image_dir (or --image-dir) is required")
    if not pargs.preferred_prompt.strip():
        raise LetheError("--preferred_prompt is empty")
    sargs.check()
    return margs, pargs, sargs


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    margs, pargs, sargs = parse(argv)
    names = list_images(pargs.image_dir, sargs.max_images)
    save = output_path(pargs.save_dir, DEFAULT_SAVE)
    records = partial(make_records, preferred_prompt=pargs.preferred_prompt)
    return generate_missing(margs, names, save, pargs.image_dir, sargs, records, "preference", "generated")


if __name__ == "__main__":
    run_cli(main)
