"""Arguments: dataclasses parsed by ``transformers.HfArgumentParser``, plus ``--config x.yaml`` and EFUF's flags.

Values in the yaml file are defaults; flags on the command line override them. EFUF's flag style works for every
family: ``--model llava --llava_path P --llava_ckpt_load_path C --llava_ckpt_save_path S`` are the generic
``--model_path``/``--ckpt_load_path``/``--ckpt_save_path`` of the chosen model.
"""
from __future__ import annotations

import dataclasses
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

    def load(self, **overrides: Any):
        """Load the model these arguments describe."""
        from common.models import load_model

        kw = dict(dtype=self.dtype, device=self.device, attn_implementation=self.attn_implementation,
                  trust_remote_code=self.trust_remote_code)
        if self.prompt_style is not None:
            kw["prompt_style"] = self.prompt_style
        if self.model == "clip":
            kw = dict(dtype=self.dtype if self.dtype != "auto" else "float32", device=self.device)
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


def _rewrite_family_key(key: str, model: str | None, own_fields: set[str]) -> str:
    if model is None or key in own_fields:
        return key
    for suffix, generic in FAMILY_FLAG_SUFFIXES.items():
        if key == f"{model}_{suffix}" and generic in own_fields:
            return generic
    return key


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse ``argv`` (default: sys.argv[1:]) into instances of ``dataclass_types``.

    ``--config x.yaml`` supplies defaults; EFUF per-family flags are mapped; an unknown model name or an
    unknown yaml key raises ``LetheError`` with the valid choices.
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

    defaults: dict[str, Any] = {}
    for key, value in cfg.items():
        key2 = _rewrite_family_key(str(key).replace("-", "_"), model, own_fields)
        if key2 not in own_fields:
            raise LetheError(f"{config_path}: unknown key {key!r}")
        defaults[key2] = value
    rewritten = []
    for a in argv:
        m = re.match(r"^--([A-Za-z0-9_]+)(=.*)?$", a)
        if m:
            a = "--" + _rewrite_family_key(m.group(1), model, own_fields) + (m.group(2) or "")
        rewritten.append(a)

    parser = HfArgumentParser(list(dataclass_types))
    parser.set_defaults(**defaults)
    return tuple(parser.parse_args_into_dataclasses(args=rewritten))


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
