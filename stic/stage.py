"""What STIC's two training stages share: config checks (the global batch, bf16, wandb), the output dir, the
provenance written beside every checkpoint, and the run itself (resume, train, save)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback

from common.errors import LetheError
from common.training import resume_checkpoint, setup_wandb


def finish_config(cfg) -> None:
    """Before ``super().__post_init__()``: wandb entity, bf16 on GPUs that support it, no pinned memory without a
    GPU, whether the output dir was given."""
    cfg.output_dir_given = cfg.output_dir is not None
    if cfg.wandb_user in ("none", ""):
        cfg.wandb_user = None
    if cfg.bf16 is None:
        cfg.bf16 = bool(not cfg.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if cfg.use_cpu or not torch.cuda.is_available():
        cfg.dataloader_pin_memory = False  # nothing to pin for (and no warning saying so)


def apply_global_batch(cfg) -> None:
    """After ``super().__post_init__()``: ``gradient_accumulation_steps`` from ``--global_batch_size``."""
    if cfg.global_batch_size:
        per_step = cfg.per_device_train_batch_size * cfg.world_size
        if cfg.global_batch_size % per_step:
            raise LetheError(f"--global_batch_size {cfg.global_batch_size} is not a multiple of "
                             f"per_device_train_batch_size × processes = {per_step}")
        cfg.gradient_accumulation_steps = cfg.global_batch_size // per_step


def global_batch(cfg) -> int:
    return cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.world_size


class Provenance(TrainerCallback):
    """``lethe_config.json`` in every checkpoint the Trainer writes (and the run's output dir)."""

    def __init__(self, provenance: dict[str, Any]):
        self.provenance = provenance

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from common.checkpoint import write_provenance
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if ckpt.is_dir():
                write_provenance(ckpt, self.provenance, global_step=state.global_step)


def stic_provenance(method: str, cfg, margs, vlm, data: dict[str, Any]) -> dict[str, Any]:
    from common.checkpoint import run_provenance

    return run_provenance(method, {
        "training": cfg.to_dict(), "model": margs, "data": data, "world_size": cfg.world_size,
        "trainable": {"lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout},
                      "params": sum(p.numel() for p in vlm.model.parameters() if p.requires_grad)}})


def default_output_dir(cfg, margs, stage: str) -> None:
    if not cfg.output_dir_given:  # checkpoints/stic/{stage}/{run_name}
        cfg.run_name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
        cfg.output_dir = str(Path(margs.ckpt_save_path or "checkpoints/stic") / stage / cfg.run_name)


def run_stage(argv, config_cls, build_trainer: Callable, stage: str, method: str, data: Callable[[Any], dict],
              done: Callable[[str], str]) -> int:
    """Parse, build the trainer, write the provenance, resume from the last complete checkpoint, train, save."""
    from common.args import ModelArguments, parse_args, save_config
    from common.checkpoint import write_provenance

    margs, cfg = parse_args([ModelArguments, config_cls], argv)
    default_output_dir(cfg, margs, stage)
    setup_wandb(cfg)
    trainer, vlm = build_trainer(margs, cfg)
    provenance = stic_provenance(method, cfg, margs, vlm, data(cfg))
    trainer.add_callback(Provenance(provenance))
    resume = resume_checkpoint(trainer, cfg.output_dir, cfg.restart)
    if trainer.is_world_process_zero():
        save_config(cfg.output_dir, margs, name="model_config.yaml")
        write_provenance(cfg.output_dir, provenance)
        print(f"world size {cfg.world_size}; output {cfg.output_dir}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)
    if trainer.is_world_process_zero():
        write_provenance(cfg.output_dir, provenance, global_step=trainer.state.global_step)
        print(done(cfg.output_dir), flush=True)
    return 0
