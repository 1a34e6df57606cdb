"""Method checkpoints: only the trainable tensors, as safetensors, written atomically.

Loading reads ``.safetensors`` or the original projects' ``.pth``/``.bin`` (``torch.load(weights_only=True)``),
remaps legacy keys through the family adapter, and reports what was loaded, dropped and unexpected instead of a
silent ``strict=False``. A tensor whose shape does not match fails with its name.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from common.errors import LetheError
from common.io import atomic_path

log = logging.getLogger(__name__)
CKPT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")
PEFT_PREFIX = "base_model.model."


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # legacy keys the family maps to nothing (rotary buffers)
    unexpected: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        s = f"{self.path}: loaded {len(self.loaded)} tensors"
        if self.dropped:
            s += f", dropped {len(self.dropped)} legacy buffers"
        if self.unexpected:
            s += f", {len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:3])})"
        return s


def _module(obj) -> nn.Module:
    return obj if isinstance(obj, nn.Module) else obj.model


def save_trainable(obj, path: str | Path, extra_metadata: dict | None = None) -> Path:
    """Save the parameters with ``requires_grad`` of ``obj`` (a module or a model adapter) atomically.

    ``path`` ending in ``.safetensors`` is the file; anything else is a directory that gets
    ``trainable.safetensors``. Metadata records family, scope and LoRA settings for reloading.
    """
    from safetensors.torch import save_file

    module = _module(obj)
    state = {n: p.detach().contiguous().cpu() for n, p in module.named_parameters() if p.requires_grad}
    if not state:
        raise LetheError("no trainable parameters to save (call set_trainable first)")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "trainable.safetensors"
    meta = {"format": "lethe-trainable-v1", "family": str(getattr(obj, "family", "")),
            "scope": str(getattr(obj, "scope", "") or "")}
    if getattr(obj, "lora_config", None):
        meta["lora"] = json.dumps(obj.lora_config)
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def resolve_checkpoint_file(path: str | Path) -> Path:
    """A file, or the newest checkpoint file in a directory (sorted by name: step_000100 after step_000050)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in CKPT_SUFFIXES and p.is_file())
        if not files:
            raise LetheError(f"{path}: no checkpoint file ({', '.join(CKPT_SUFFIXES)}) in this directory")
        return files[-1]
    raise LetheError(f"{path}: checkpoint not found")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a checkpoint file → (state dict, metadata). ``.pth``/``.bin`` via ``torch.load(weights_only=True)``."""
    f = resolve_checkpoint_file(path)
    if f.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(f), framework="pt") as sf:
                return {k: sf.get_tensor(k) for k in sf.keys()}, dict(sf.metadata() or {})
        except Exception as e:  # safetensors raises its own error types on corrupt headers
            raise LetheError(f"{f}: not a readable safetensors file ({e})") from None
    try:
        obj: Any = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LetheError(f"{f}: cannot read checkpoint with weights_only=True ({str(e).splitlines()[0]})") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise LetheError(f"{f}: not a state dict of tensors")
    return obj, {}


def load_state_into(module: nn.Module, state: dict[str, torch.Tensor], path: str,
                    remap: Callable[[str], str | None] | None = None, strict: bool = True,
                    metadata: dict[str, str] | None = None) -> LoadReport:
    """Load a partial state dict into ``module``; unexpected keys fail when ``strict``, shapes always."""
    report = LoadReport(path=str(path), metadata=metadata or {})
    target = module.state_dict()
    is_peft = any(k.startswith(PEFT_PREFIX) for k in target)
    to_load: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = remap(key) if remap else key
        if new is None:
            report.dropped.append(key)
            continue
        if not is_peft and new.startswith(PEFT_PREFIX):
            new = new[len(PEFT_PREFIX):]
        elif is_peft and new not in target and PEFT_PREFIX + new in target:
            new = PEFT_PREFIX + new
        if new not in target:
            report.unexpected.append(key)
            continue
        if tuple(target[new].shape) != tuple(tensor.shape):
            raise LetheError(f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                             f"the model expects {tuple(target[new].shape)}")
        to_load[new] = tensor.to(target[new].dtype)
    if report.unexpected and strict:
        raise LetheError(f"{path}: {len(report.unexpected)} tensors match nothing in the model "
                         f"(e.g. {', '.join(report.unexpected[:3])}); refusing a partial load")
    if not to_load:
        raise LetheError(f"{path}: no tensor of this checkpoint matches the model")
    module.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    return report


def load_method_checkpoint(obj, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a method checkpoint onto a model adapter (re-applying LoRA first when the checkpoint has it)."""
    f = resolve_checkpoint_file(path)
    state, meta = read_state_dict(f)
    if "lora" in meta and hasattr(obj, "_apply_lora") and not hasattr(obj.model, "peft_config"):
        cfg = json.loads(meta["lora"])
        obj._apply_lora(cfg["r"], cfg["alpha"], cfg.get("dropout", 0.0))
        obj.model.eval()
    report = load_state_into(_module(obj), state, str(f), remap=getattr(obj, "remap_legacy_key", None),
                             strict=strict, metadata=meta)
    log.info(report.summary())
    return report
