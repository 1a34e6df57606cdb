"""Arguments: dataclasses parsed by ``transformers.HfArgumentParser``, plus ``--config x.yaml`` and EFUF's flags.

Values in the yaml file are defaults; flags on the command line override them. EFUF's flag style works for every
family: ``--model llava --llava_path P --llava_ckpt_load_path C --llava_ckpt_save_path S`` are the generic
``--model_path``/``--ckpt_load_path``/``--ckpt_save_path`` of the chosen model.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from common.errors import LetheError

# EFUF-style per-family flags: --{model}_{suffix} → --{generic}
FAMILY_FLAG_SUFFIXES = {"path": "model_path", "ckpt_load_path": "ckpt_load_path",
                        "ckpt_save_path": "ckpt_save_path", "lora_path": "lora_path"}


@dataclass
class ModelArguments:
    model: str = field(default="llava", metadata={"help": "model family (see common.models.FAMILIES)"})
    model_path: Optional[str] = field(default=None, metadata={"help": "HF id or dir; also --{model}_path"})
    ckpt_load_path: Optional[str] = field(default=None, metadata={
        "help": "method checkpoint to load (file or dir: newest); also --{model}_ckpt_load_path"})
    ckpt_save_path: Optional[str] = field(default=None, metadata={"help": "also --{model}_ckpt_save_path"})
    lora_path: Optional[str] = field(default=None, metadata={"help": "PEFT LoRA adapter dir to apply"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on capable GPUs, else fp32), float32, ..."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "default: flash_attention_2 on CUDA when installed, else sdpa"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow a checkpoint's own code (off)"})
    prompt_style: Optional[str] = field(default=None, metadata={
        "help": "official (default: the original project's conversation, tokenized as its code does) or hf (the "
                "processor's chat template, one tokenizer pass)", "choices": ["official", "hf"]})
    verbose: bool = field(default=False, metadata={
        "help": "show transformers' model-loading progress bars and info logs (default: quiet; warnings show)"})

    def load(self, **overrides: Any):
        """Load the model these arguments describe."""
        from common.models import load_model

        kw = dict(dtype=self.dtype, device=self.device, attn_implementation=self.attn_implementation,
                  trust_remote_code=self.trust_remote_code, verbose=self.verbose)
        if self.prompt_style is not None:
            kw["prompt_style"] = self.prompt_style
        if self.model == "clip":
            kw = dict(dtype=self.dtype if self.dtype != "auto" else "float32", device=self.device,
                      verbose=self.verbose)
        kw.update(overrides)
        return load_model(self.model, self.model_path, ckpt_load_path=self.ckpt_load_path,
                          lora_path=self.lora_path, **kw)


@dataclass
class RunArguments:
    run_name: Optional[str] = field(default=None, metadata={"help": "name of the run (default: a timestamp)"})
    output_dir: str = field(default="results", metadata={"help": "runs are written to OUTPUT_DIR/RUN_NAME"})
    wandb_user: Optional[str] = field(default=None, metadata={
        "help": "wandb entity; without it wandb runs offline"})
    wandb_project: str = field(default="lethe")
    seed: int = field(default=0)

    def __post_init__(self):
        if self.wandb_user in ("none", ""):
            self.wandb_user = None
        if not self.run_name:
            import time

            self.run_name = time.strftime("%Y%m%d-%H%M%S")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / str(self.run_name)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LetheError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise LetheError(f"{p}{where}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LetheError(f"{p}: a config file must be a mapping of flag names to values")
    return data


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, config = [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            if i + 1 >= len(argv):
                raise LetheError("--config needs a yaml path")
            config, i = argv[i + 1], i + 2
            continue
        if a.startswith("--config="):
            config = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return config, rest


def flag_value(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def _family_names() -> dict[str, type]:
    from common.models import FAMILIES

    return FAMILIES


def _same_family(a: str, b: str) -> bool:
    """``a`` and ``b`` name the same family (``minigpt`` is EFUF's name for ``minigpt4``)."""
    fams = _family_names()
    return a == b or (a in fams and b in fams and fams[a] is fams[b])


def family_flag(key: str) -> tuple[str, str] | None:
    """``(family, suffix)`` when ``key`` is an EFUF per-family flag name (``owl_ckpt_load_path`` → owl, ...)."""
    key = key.replace("-", "_")
    for fam in sorted(_family_names(), key=len, reverse=True):  # llava_next before llava
        for suffix in FAMILY_FLAG_SUFFIXES:
            if key == f"{fam}_{suffix}":
                return fam, suffix
    return None


def _rewrite_family_key(key: str, model: str | None, own_fields: set[str]) -> str:
    if model is None or key in own_fields:
        return key
    hit = family_flag(key)
    if hit and _same_family(hit[0], model) and FAMILY_FLAG_SUFFIXES[hit[1]] in own_fields:
        return FAMILY_FLAG_SUFFIXES[hit[1]]
    return key


def _name_hint(key: str, options: Sequence[str], model: str | None,
               generic_fields: Sequence[str]) -> tuple[tuple[str, str, str | None] | None, str | None]:
    """For an unknown flag/key name: ``((family, suffix, this model's spelling), None)`` when it is a per-family
    name of another family than ``model``; else ``(None, the closest known name or None)``."""
    names = {o.lstrip("-").replace("-", "_") for o in options if o.startswith("--")} - {"help"}
    hit = family_flag(key)
    if hit and model and "model" in names and not _same_family(hit[0], model):
        fam, suffix = hit
        alt = f"{model}_{suffix}" if FAMILY_FLAG_SUFFIXES[suffix] in generic_fields else None
        return (fam, suffix, alt), None
    if model:
        names |= {f"{model}_{suffix}" for suffix, generic in FAMILY_FLAG_SUFFIXES.items() if generic in generic_fields}
    close = difflib.get_close_matches(key.replace("-", "_"), sorted(names), n=1, cutoff=0.6)
    return None, (close[0] if close else None)


def unknown_flag_message(arg: str, options: Sequence[str], model: str | None = None,
                         generic_fields: Sequence[str] = ()) -> str:
    """One line for an argument no parser option takes: a per-family flag of another family than ``--model``
    (``--owl_path`` with ``--model llava``), else the closest known flag (difflib), else a pointer to --help.

    ``options``: the parser's option strings; ``generic_fields``: the generic fields behind the per-family flags
    (``model_path``, ...), whose ``--{model}_*`` spellings are suggested too."""
    if not arg.startswith("-"):
        return f"unexpected argument {arg!r} (a value without a flag before it?)"
    flag = arg.split("=", 1)[0]
    other, close = _name_hint(flag.lstrip("-"), options, model, generic_fields)
    if other:
        fam, _, alt = other
        use = f"use --{alt} or --model {fam}" if alt else f"use --model {fam}"
        return f"{flag} belongs to model {fam} while --model is {model}; {use}"
    if close:
        return f"unknown flag {flag} (did you mean --{close}?)"
    return f"unknown flag {flag} (see --help for the flags)"


def unknown_key_message(config_path: str, key: str, options: Sequence[str], model: str | None = None,
                        generic_fields: Sequence[str] = ()) -> str:
    """The yaml counterpart of :func:`unknown_flag_message`, naming the config file."""
    other, close = _name_hint(key, options, model, generic_fields)
    if other:
        fam, _, alt = other
        use = f"use {alt} or model: {fam}" if alt else f"use model: {fam}"
        return f"{config_path}: key {key!r} belongs to model {fam} while the model is {model}; {use}"
    return f"{config_path}: unknown key {key!r}" + (f" (did you mean {close!r}?)" if close else "")


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make argparse's own errors of ``parser`` (and its subparsers) one line: ``error: argument --lr: invalid
    float value: 'x'`` (a bad value or choice, a missing required flag) on stderr without the usage block, then exit
    status 2 (``SystemExit``, as argparse does). ``--help`` still prints the usage."""
    import sys

    def error(message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                one_line_errors(sub)
    return parser


def strict_parse(parser: argparse.ArgumentParser, argv: Sequence[str], model: str | None = None,
                 generic_fields: Sequence[str] = ("model_path", "ckpt_load_path")) -> argparse.Namespace:
    """``parser.parse_args(argv)`` for plain argparse CLIs, with one-line errors and, for an unknown flag, the
    suggestions of :func:`unknown_flag_message`."""
    one_line_errors(parser)
    ns, rest = parser.parse_known_args(list(argv))
    if rest:
        options = [o for a in parser._actions for o in a.option_strings]
        raise LetheError(unknown_flag_message(rest[0], options, model, generic_fields))
    return ns


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse ``argv`` (default: sys.argv[1:]) into instances of ``dataclass_types``.

    ``--config x.yaml`` supplies defaults; EFUF per-family flags are mapped; an unknown model name, an unknown
    yaml key or flag (with the closest valid ones) or another family's flag than ``--model``'s raises
    ``LetheError`` (one line); argparse's own errors (a bad value) print one ``error:`` line and exit with status 2.
    """
    import sys

    from transformers import HfArgumentParser

    from common.models import FAMILIES

    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = split_config(argv)
    cfg = load_yaml(config_path) if config_path else {}
    own_fields = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    model = flag_value(argv, "model") or cfg.get("model")
    if model is None and "model" in own_fields:
        model = next(f.default for t in dataclass_types for f in dataclasses.fields(t) if f.name == "model")
    if "model" in own_fields and model not in FAMILIES:
        raise LetheError(f"unknown model {model!r}; valid: {', '.join(FAMILIES)}")
    if "model" not in own_fields:
        model = None
    generic = sorted(set(FAMILY_FLAG_SUFFIXES.values()) & own_fields)

    # a field in two dataclasses (TRL's configs have ``trust_remote_code`` too) is one flag that sets both
    parser = HfArgumentParser(list(dataclass_types), conflict_handler="resolve")
    one_line_errors(parser)
    options = [o for a in parser._actions for o in a.option_strings]
    defaults: dict[str, Any] = {}
    for key, value in cfg.items():
        key2 = _rewrite_family_key(str(key).replace("-", "_"), model, own_fields)
        if key2 not in own_fields:
            raise LetheError(unknown_key_message(config_path, str(key), options, model, generic))
        defaults[key2] = value
    rewritten = []
    for a in argv:
        m = re.match(r"^--([A-Za-z0-9_-]+)(=.*)?$", a)
        if m:
            key = _rewrite_family_key(m.group(1).replace("-", "_"), model, own_fields)
            if key != m.group(1).replace("-", "_"):  # a per-family flag mapped to its generic field
                a = "--" + key + (m.group(2) or "")
        rewritten.append(a)

    parser.set_defaults(**defaults)
    namespace, rest = parser.parse_known_args(args=rewritten)
    if rest:
        raise LetheError(unknown_flag_message(rest[0], options, model, generic))
    values = vars(namespace)
    return tuple(t(**{f.name: values[f.name] for f in dataclasses.fields(t) if f.init and f.name in values})
                 for t in dataclass_types)


def save_config(run_dir: str | os.PathLike, *objs: Any, name: str = "config.yaml") -> Path:
    """Write the resolved arguments of a run beside its outputs (atomically)."""
    import yaml

    from common.io import atomic_write_text

    merged: dict[str, Any] = {}
    for o in objs:
        merged.update({k: v for k, v in dataclasses.asdict(o).items() if _yaml_safe(v)})
    path = Path(run_dir) / name
    atomic_write_text(path, yaml.safe_dump(merged, sort_keys=True))
    return path


def _yaml_safe(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict))


def config_as_flags(argv: list[str], dataclass_types: Sequence[type]) -> list[str]:
    """``--config X.yaml`` → its keys that these dataclasses have, as flags before the command line's own (a
    training config also holds the task: evaluating with it needs only the task's keys)."""
    config, rest = split_config(argv)
    if not config:
        return argv
    fields = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    flags = []
    for k, v in load_yaml(config).items():
        key = str(k).replace("-", "_")
        if (key in fields or key.startswith("clip_")) and v is not None:  # clip_path: the family's model_path
            flags += [f"--{k}", *(map(str, v) if isinstance(v, (list, tuple)) else [str(v)])]
    return flags + rest


def parse_clip_args(dataclass_types: Sequence[type], argv: Sequence[str] | None, what: str) -> tuple:
    """The CLIP CLIs' parsing: ``--config`` keys of these dataclasses as flags (one yaml serves several CLIs),
    ``--model clip`` unless given, and any other family refused (``what`` says what the CLI needs)."""
    import sys


    argv = config_as_flags(list(sys.argv[1:] if argv is None else argv), dataclass_types)
    if not any(a == "--model" or a.startswith("--model=") for a in argv):
        argv = ["--model", "clip", *argv]
    parsed = parse_args(dataclass_types, argv)
    if parsed[0].model != "clip":
        raise LetheError(f"--model {parsed[0].model!r}: {what} (--model clip --clip_path P)")
    return parsed
