"""What every training CLI of the project shares: one log line per step, resuming from the last *complete*
checkpoint, the device each process loads onto, and wandb's environment.

Used by EFUF (``finetune/train.py``, a ``transformers.Trainer``), CLIP unlearning (``multidelete/unlearn.py``) and
STIC (``stic/train_dpo.py``, ``stic/train_sft.py``: TRL's trainers, which are ``Trainer`` subclasses).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

# the weight files a checkpoint of ours may hold: a method's trainable tensors, or a PEFT adapter (TRL trainers)
TRAINABLE_FILE = "trainable.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"
WEIGHT_FILES = (TRAINABLE_FILE, ADAPTER_FILE)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def log_line(step: int, logs: dict[str, Any]) -> str | None:
    """The one line printed for a Trainer log: ``step N loss X  k v …`` for a training step (X: a method's exact
    loss when it logs one as ``efuf_loss``, else the Trainer's), a summary line at the end of training,
    ``eval step N k v …`` otherwise."""
    if "loss" in logs or "efuf_loss" in logs:
        parts = [f"step {step} loss {float(logs.get('efuf_loss', logs.get('loss'))):.8f}"]
        for k, v in logs.items():
            if k in ("loss", "efuf_loss", "total_flos", "step"):
                continue
            if k.startswith("w_") and f"nll_{k[2:]}" not in logs:  # the weight of a component this run lacks
                continue
            parts.append(f"{'lr' if k == 'learning_rate' else k} {_fmt(v)}")
        return "  ".join(parts)
    if "train_runtime" in logs:
        line = f"trained {step} steps in {logs['train_runtime']:.1f} s"
        if "train_steps_per_second" in logs:
            line += f" ({logs['train_steps_per_second']:.3g} steps/s)"
        if "train_loss" in logs:
            line += f"; mean loss {logs['train_loss']:.6g}"
        return line
    rest = [f"{k} {_fmt(v)}" for k, v in logs.items() if k not in ("total_flos", "step")]
    return f"eval step {step}  " + "  ".join(rest) if rest else None


class LogLines(TrainerCallback):
    """Prints ``log_line`` on the main process (in place of the Trainer's ``PrinterCallback`` dicts)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            line = log_line(state.global_step, logs)
            if line:
                print(line, flush=True)


class LogProgress(ProgressCallback):
    """The Trainer's progress bar, with ``log_line`` written above it instead of the log dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            line = log_line(state.global_step, logs)
            if line and self.training_bar is not None:
                self.training_bar.write(line)
                sys.stdout.flush()
            elif line:
                print(line, flush=True)


def checkpoint_problem(ckpt: str | Path, weight_files: tuple[str, ...] = WEIGHT_FILES) -> str | None:
    """Why ``checkpoint-N/`` is not a complete checkpoint, or None if it is.

    The Trainer writes a checkpoint's files in this order: the weights (``trainable.safetensors`` and
    ``lethe_config.json``, atomically, for EFUF; ``adapter_model.safetensors`` for a PEFT adapter), optimizer,
    scheduler, scaler and RNG states, and ``trainer_state.json`` last; a process killed on the way (or a rotation
    killed while deleting an old checkpoint) leaves a folder without some of them. Complete = ``trainer_state.json``
    parses and has ``global_step``, one of ``weight_files`` is there and every one there has a whole safetensors
    header and data, and every top-level torch file (``*.pt``, ``*.pth``: zip archives, e.g. the optimizer state)
    is whole. Cheap: no tensor is read.
    """
    import json
    import zipfile

    from safetensors import safe_open
    from transformers.trainer import TRAINER_STATE_NAME

    ckpt = Path(ckpt)
    try:
        state = json.loads((ckpt / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE_NAME}"
    except (OSError, ValueError):
        return f"{TRAINER_STATE_NAME} is not whole JSON"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE_NAME} has no global_step"
    present = [ckpt / name for name in weight_files if (ckpt / name).is_file()]
    if not present:
        return f"no {' or '.join(weight_files)}"
    for f in present:
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception:  # safetensors raises its own error types on a truncated or corrupt file
            return f"{f.name} is truncated or corrupt"
    try:
        for p in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth")]):
            with zipfile.ZipFile(p):
                pass
    except (OSError, zipfile.BadZipFile):
        return f"{p.name} is truncated or corrupt"
    return None


def last_complete_checkpoint(output_dir: str | Path, move_aside: bool = True,
                             warn=lambda msg: print(msg, file=sys.stderr, flush=True),
                             weight_files: tuple[str, ...] = WEIGHT_FILES) -> str | None:
    """The ``checkpoint-N`` of ``output_dir`` with the highest N that is complete (``checkpoint_problem``).

    Each incomplete one is reported in one line and, with ``move_aside`` (the process that saves), renamed to
    ``incomplete-checkpoint-N`` (``.1``, ``.2`` … if taken): out of the way of resuming and of the Trainer's
    ``save_total_limit`` rotation (which counts every ``checkpoint-*`` folder), but not deleted.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    root = Path(output_dir)
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := pattern.match(p.name)) and p.is_dir()),
                   reverse=True)
    best = None
    for _, ckpt in found:
        problem = checkpoint_problem(ckpt, weight_files)
        if problem is None:
            best = best or str(ckpt)
            continue
        where = ""
        if move_aside:
            dest = root / f"incomplete-{ckpt.name}"
            k = 0
            while dest.exists():
                k += 1
                dest = root / f"incomplete-{ckpt.name}.{k}"
            try:
                ckpt.rename(dest)
                where = f"; moved to {dest}"
            except FileNotFoundError:  # another process moved it first
                where = ""
        warn(f"warning: {ckpt} is an incomplete checkpoint ({problem}: a run was interrupted while writing it); "
             f"not resuming from it{where}")
    return best


def training_device(cfg: Any) -> str:
    """Where each process loads the model: its own device under DDP (never every rank onto cuda:0); the CPU when
    FSDP / DeepSpeed will shard it, or when no accelerator is used."""
    from accelerate import PartialState

    if cfg.use_cpu or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" \
            or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" or cfg.deepspeed or cfg.fsdp:
        return "cpu"
    return str(PartialState().device)


def setup_wandb(cfg: Any) -> None:
    """wandb's environment, only when the run reports to it (with ``--report_to none`` nothing touches wandb)."""
    if "wandb" not in (cfg.report_to or []) and "all" not in (cfg.report_to or []):
        return
    if cfg.wandb_user:
        os.environ.setdefault("WANDB_ENTITY", cfg.wandb_user)
    else:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_PROJECT", cfg.wandb_project)


def one_line_logs(trainer) -> None:
    """Replace the Trainer's printed log dicts with ``log_line`` (above the progress bar when there is one)."""
    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(LogLines())
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LogProgress())


def resume_checkpoint(trainer, output_dir: str | Path, restart: bool = False,
                      weight_files: tuple[str, ...] = WEIGHT_FILES) -> str | None:
    """The checkpoint to resume from (None: start over): the newest complete one unless ``restart``; one process
    moves incomplete ones aside and says so."""
    if restart or not Path(output_dir).is_dir():
        return None
    saver = trainer.args.should_save
    resume = last_complete_checkpoint(output_dir, move_aside=saver,
                                      warn=(lambda m: print(m, file=sys.stderr, flush=True)) if saver
                                      else (lambda m: None), weight_files=weight_files)
    if resume and trainer.is_world_process_zero():
        print(f"resuming from {resume}")
    return resume


class TrainableCheckpoints:
    """``Trainer`` mixin: a checkpoint holds only the trained tensors of ``self.vlm`` (a model-layer wrapper with
    ``model``, ``family``, ``scope`` and optionally ``lora_config``) as ``trainable.safetensors``, plus the run's
    ``lethe_config.json`` (``self.provenance``); resuming loads them back. Every eval script loads the file with
    ``--{model}_ckpt_load_path``."""

    vlm: Any
    provenance: dict[str, Any]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        import json

        from safetensors.torch import save_file

        from common.checkpoint import write_provenance
        from common.io import atomic_path

        if not self.args.should_save:  # save_model calls this on every process: one writes
            return
        out = Path(output_dir or self.args.output_dir)
        names = [n for n, p in self.vlm.model.named_parameters() if p.requires_grad]
        if state_dict is None:
            params = dict(self.vlm.model.named_parameters())
            state_dict = {n: params[n] for n in names}
        else:
            state_dict = {n: state_dict[n] for n in names if n in state_dict}
        tensors = {n: t.detach().contiguous().cpu() for n, t in state_dict.items()}
        meta = {"format": "lethe-trainable-v1", "family": self.vlm.family, "scope": str(self.vlm.scope)}
        if getattr(self.vlm, "lora_config", None):
            meta["lora"] = json.dumps(self.vlm.lora_config)
        with atomic_path(out / TRAINABLE_FILE, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        write_provenance(out, self.provenance, global_step=self.state.global_step)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        f = Path(resume_from_checkpoint) / TRAINABLE_FILE
        if not f.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from common.checkpoint import announce_load, load_state_into, read_state_dict

        state, meta = read_state_dict(f)
        announce_load(load_state_into(self.vlm.model, state, str(f), metadata=meta))
