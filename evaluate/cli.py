"""What every ``eval_*.py`` CLI shares: ``--config x.yaml`` defaults, EFUF-style model flags
(``--model NAME --NAME_path P --NAME_ckpt_load_path C``), generation flags, the lazy model load, and the
``main(argv) -> exit code`` wrapper that turns input errors into one ``error: ...`` line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from common.args import flag_value, load_yaml, split_config, strict_parse
from common.errors import LetheError, cli_main  # noqa: F401 (cli_main: the eval CLIs' wrapper)
from evaluate.runner import DAR_PROMPT, DAR_TEMPLATE, run_generation

DEFAULT_VQA_SUFFIX = "Answer the question using a single word or phrase."
DEFAULT_MC_SUFFIX = "Answer with the option's letter from the given choices directly."


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int, batch_size: int = 8,
                        num_beams: int = 1, dar: bool = False, length_penalty: float | None = None) -> None:
    g = parser.add_argument_group("generation (skipped with --score_only)")
    g.add_argument("--score_only", action="store_true", help="only score an existing answers file")
    g.add_argument("--model", default=None, help="model family for common.models.load_model (e.g. llava)")
    g.add_argument("--model_path", default=None, help="HF id or dir of the model; also --NAME_path")
    g.add_argument("--ckpt_load_path", default=None, help="method checkpoint to load; also --NAME_ckpt_load_path")
    g.add_argument("--lora_path", default=None,
                   help="PEFT LoRA adapter dir to apply (e.g. a STIC stage-1/2 output); also --NAME_lora_path")
    g.add_argument("--batch_size", type=int, default=batch_size)
    g.add_argument("--max_new_tokens", type=int, default=max_new_tokens)
    g.add_argument("--num_beams", type=int, default=num_beams)
    g.add_argument("--do_sample", action="store_true")
    g.add_argument("--length_penalty", type=float, default=length_penalty,
                   help="beam search length penalty, used when --num_beams > 1 (EFUF's captions: beam 5, 0)")
    g.add_argument("--static_cache", action="store_true",
                   help="a preallocated KV cache; on a GPU transformers compiles the decoding step for it (the first "
                        "batch pays the compilation; worth it for long runs)")
    g.add_argument("--verbose", action="store_true", help="show the model-loading progress bars")
    g.add_argument("--prompt_style", choices=("official", "hf"), default=None,
                   help="official (default): the original project's conversation and tokenization; hf: the "
                        "processor's chat template (use what the model was trained / fine-tuned with)")
    if dar:
        g.add_argument("--dar", action="store_true",
                       help="STIC describe-and-respond: describe the image first, then answer with the description")
        g.add_argument("--dar_prompt", default=DAR_PROMPT)
        g.add_argument("--dar_template", default=DAR_TEMPLATE,
                       help="answer prompt; {description} and {question} are filled in")
        g.add_argument("--dar_max_new_tokens", type=int, default=512)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse with ``--config`` defaults and the per-family aliases of ``--model NAME``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = split_config(argv)
    cfg = {str(k).replace("-", "_"): v for k, v in (load_yaml(config_path) if config_path else {}).items()}
    model = flag_value(argv, "model") or cfg.get("model")
    known = {a.dest for a in parser._actions}
    if model and "model_path" in known:
        parser.add_argument(f"--{model}_path", dest="model_path", help=argparse.SUPPRESS)
        parser.add_argument(f"--{model}_ckpt_load_path", dest="ckpt_load_path", help=argparse.SUPPRESS)
        parser.add_argument(f"--{model}_lora_path", dest="lora_path", help=argparse.SUPPRESS)
        for suffix, dest in (("path", "model_path"), ("ckpt_load_path", "ckpt_load_path"),
                             ("lora_path", "lora_path")):
            if f"{model}_{suffix}" in cfg:
                cfg[dest] = cfg.pop(f"{model}_{suffix}")
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise LetheError(f"{config_path}: unknown key(s) {', '.join(unknown)}")
    parser.set_defaults(**cfg)
    return strict_parse(parser, argv, model)  # a mistyped / another family's flag: one line with suggestions


def load_vlm(args: argparse.Namespace):
    """``common.models.load_model(name, path, ckpt_load_path=C, lora_path=A)``, imported only when generating."""
    if not args.model:
        raise LetheError("--model NAME (and --NAME_path) is needed to generate; or pass --score_only")
    from common.models import load_model

    kw: dict[str, Any] = {"verbose": bool(getattr(args, "verbose", False))}
    if getattr(args, "prompt_style", None):
        kw["prompt_style"] = args.prompt_style
    return load_model(args.model, args.model_path, ckpt_load_path=args.ckpt_load_path,
                      lora_path=getattr(args, "lora_path", None), **kw)


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                              num_beams=args.num_beams, do_sample=args.do_sample)
    extra: dict[str, Any] = {}
    if getattr(args, "length_penalty", None) is not None and args.num_beams > 1:  # greedy ignores it
        extra["length_penalty"] = args.length_penalty
    if getattr(args, "static_cache", False):
        extra["static_cache"] = True
    if extra:
        kw["generate_kwargs"] = extra
    if getattr(args, "dar", False):
        kw.update(dar_prompt=args.dar_prompt, dar_template=args.dar_template,
                  dar_max_new_tokens=args.dar_max_new_tokens)
    return kw


def with_suffix(text: str, suffix: str) -> str:
    """``text`` + newline + ``suffix`` unless it already ends with ``suffix`` (or ``suffix`` is empty)."""
    if not suffix or text.rstrip().endswith(suffix):
        return text
    return f"{text}\n{suffix}"


def strip_suffixes(text: str, suffixes: Sequence[str]) -> str:
    """Remove trailing instruction suffixes (and the whitespace before them), repeatedly."""
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for s in suffixes:
            if s and text.endswith(s):
                text = text[: -len(s)].rstrip()
                changed = True
    return text


def require(path: str | None, flag: str) -> str:
    if not path:
        raise LetheError(f"{flag} is required")
    return path


def generate_answers(args: argparse.Namespace, items: Sequence[dict[str, Any]], output_path: str, **kw: Any):
    """Load the model named by the flags (lazily) and run the resumable runner over ``items``."""
    vlm = load_vlm(args)
    return run_generation(vlm, items, output_path, **generation_kwargs(args), **kw)


def image_path(image_dir: str | None, name: str) -> str:
    if not image_dir:
        raise LetheError("--image_dir is required to generate")
    return str(Path(image_dir) / name)
