"""Method checkpoints: only the trainable tensors, as safetensors, written atomically.

Loading reads ``.safetensors`` or the original projects' ``.pth``/``.bin`` (``torch.load(weights_only=True)``),
remaps legacy keys through the family adapter, and reports what was loaded, dropped and unexpected instead of a
silent ``strict=False`` (one line on stderr: how many tensors, from which file). A tensor whose shape does not
match fails with its name.

Provenance: ``run_provenance`` gathers what a checkpoint came from (the resolved config, package versions, the git
commit of this checkout and whether its tree was dirty); ``write_provenance`` writes it atomically as
``lethe_config.json`` beside a checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from common.errors import LetheError
from common.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)
CKPT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")
PEFT_PREFIX = "base_model.model."
PROVENANCE_FILE = "lethe_config.json"
PROVENANCE_FORMAT = "lethe-config-v1"
# the distributions whose versions decide what a run computes (pip names)
PROVENANCE_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "open_clip_torch", "tokenizers")
REPO_ROOT = Path(__file__).resolve().parents[1]


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

    def line(self) -> str:
        """One line for the user: how many tensors were loaded, from which file (and what was left out)."""
        extra = []
        if self.dropped:
            extra.append(f"dropped {len(self.dropped)} legacy buffers")
        if self.unexpected:
            extra.append(f"{len(self.unexpected)} unexpected, not loaded (e.g. {', '.join(self.unexpected[:3])})")
        return f"loaded {len(self.loaded)} tensors from {self.path}" + (f" ({'; '.join(extra)})" if extra else "")


def announce_load(report: LoadReport) -> None:
    """Print ``report.line()`` on stderr (stdout stays for a CLI's results), once: on the main process only."""
    if os.environ.get("RANK", "0") in ("0", ""):
        print(report.line(), file=sys.stderr, flush=True)


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
    announce_load(report)
    return report


# ------------------------------------------------------------------------------------------------ provenance
def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """{distribution: installed version, or None when not installed}, plus ``python`` and torch's build and CUDA."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if "torch" in sys.modules:  # the build matters too (e.g. 2.6.0+cu124): what torch says of itself
        import torch as _torch

        out["torch_build"] = str(_torch.__version__)
        out["cuda"] = _torch.version.cuda
    return out


def git_state(root: str | Path = REPO_ROOT) -> dict[str, Any] | None:
    """``{"commit": HEAD, "dirty": tracked files differ from it}`` of the git checkout whose top level is
    ``root``; None when ``root`` is not the top of a git checkout (an installed copy, a tarball) or git is absent.
    Untracked files do not make the tree dirty (as ``git describe --dirty``)."""
    root = Path(root).resolve()

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root:  # not a checkout, or only inside someone else's repository
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:  # a repository without commits
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _masked_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret-looking flags (``--hub_token X``, ``--api_key=X``) replaced."""
    import re

    secret = re.compile(r"^--?[\w.-]*(token|secret|password|api_key)$", re.IGNORECASE)
    out: list[str] = []
    hide = False
    for a in argv:
        if hide:
            out.append("<hidden>")
            hide = False
        elif "=" in a and secret.match(a.split("=", 1)[0]):
            out.append(a.split("=", 1)[0] + "=<hidden>")
        else:
            out.append(a)
            hide = bool(secret.match(a))
    return out


def _plain(obj: Any) -> Any:
    """A json-safe copy: dataclasses as dicts, anything else json does not know as its str."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def run_provenance(method: str, sections: dict[str, Any], root: str | Path = REPO_ROOT) -> dict[str, Any]:
    """What a run's checkpoints come from: ``sections`` (e.g. ``training``: the resolved ``TrainingArguments``
    ``to_dict()``, ``model``: the model arguments, ``data``: the data paths; dataclasses become dicts), the command
    line and working directory, the versions of ``PROVENANCE_PACKAGES`` and the git state of this checkout."""
    import time

    return {"format": PROVENANCE_FORMAT, "method": method,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": [sys.executable, *_masked_argv(sys.argv)], "cwd": os.getcwd(),
            **{k: _plain(v) for k, v in sections.items()},
            "versions": package_versions(), "git": git_state(root)}


def write_provenance(directory: str | Path, provenance: dict[str, Any], **extra: Any) -> Path:
    """Write ``provenance`` (plus ``extra`` keys, e.g. the global step of a checkpoint) atomically as
    ``directory/lethe_config.json``."""
    path = Path(directory) / PROVENANCE_FILE
    atomic_write_json(path, {**provenance, **_plain(extra)})
    return path
