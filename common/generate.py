"""Generate answers with any registered family: a quick check that a checkpoint loads and talks.

    python -m common.generate --model llava --llava_path DIR --image a.jpg b.jpg --prompt "Describe the image."
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from common.args import ModelArguments, parse_args
from common.errors import cli_main, run_cli


@dataclass
class GenerateArguments:
    image: list[str] = field(default_factory=list, metadata={"help": "image paths (one answer per image)"})
    prompt: str = field(default="Please describe the image.")
    max_new_tokens: int = field(default=64)
    num_beams: int = field(default=1)
    batch_size: int = field(default=16)
    output_jsonl: Optional[str] = field(default=None, metadata={"help": "also write {image, prompt, text} lines"})


@cli_main
def main(argv: list[str] | None = None) -> int:
    margs, gargs = parse_args([ModelArguments, GenerateArguments], argv)
    from common.errors import LetheError
    from common.io import append_jsonl, load_image

    if not gargs.image:
        raise LetheError("--image needs at least one image path")
    images = [load_image(p) for p in gargs.image]  # fail on a bad image before loading the model
    vlm = margs.load()
    if not hasattr(vlm, "generate"):
        raise LetheError(f"--model {margs.model} does not generate text; use a vision-language family")
    texts = vlm.generate(images, [gargs.prompt] * len(images), max_new_tokens=gargs.max_new_tokens,
                         num_beams=gargs.num_beams, batch_size=gargs.batch_size)
    for path, text in zip(gargs.image, texts):
        print(f"{path}\t{text!r}")
    if gargs.output_jsonl:
        append_jsonl(gargs.output_jsonl, [{"image": p, "prompt": gargs.prompt, "text": t}
                                          for p, t in zip(gargs.image, texts)])
    return 0


if __name__ == "__main__":
    run_cli(main)
