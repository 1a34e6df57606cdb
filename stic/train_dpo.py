"""STIC stage 1: regularized DPO on self-generated preferences, on TRL's own ``DPOTrainer``.

    python stic/train_dpo.py --model llava_next --model_path llava-hf/llava-v1.6-mistral-7b-hf \\
        --data_path pref_data.json --image_folder /data/coco/train2014 --output_dir checkpoints/stic_stage1
    accelerate launch --config_file configs/accelerate/ddp.yaml stic/train_dpo.py --config configs/stic/stage1.yaml …

The loss is the paper's (Algorithm 1): ``-log σ(β·[(log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l))])``
plus a weighted NLL of the preferred answer, i.e. TRL's ``loss_type=["sigmoid", "sft"]`` with
``loss_weights=[1, w]``. TRL's "sft" term is a token mean over the batch's preferred answers, STIC's code adds
``α·Σ_t NLL`` per pair with α = 1/1024; the two agree when w = α·L̄ (L̄: mean preferred-answer length in tokens),
which ``--sft_weight auto`` (the default) computes from the data and prints. Reference = the same model with the
LoRA adapter disabled (TRL's PEFT path: no second copy of the weights). LoRA (r 128, α 256, dropout 0.05) on the
language model's linear layers only — the vision tower, the projector and the LM head are untouched.

Batches are built by the model layer's forward map (``stic/pref_data.py``), so the chat format and tokenization
are the family's own (``--prompt_style``), the same as generation and evaluation use; any family with a processor
works (``llava``, ``llava_next``, ``hf``), with no model-name branch here.

Defaults are the paper's scripts (``scripts/dpo_finetune.sh``): lr 1e-7, cosine, warmup 3 %, 1 epoch, weight decay
0, global batch 8 (``--global_batch_size``: the gradient accumulation is derived from it, the per-device batch
and the number of processes), β 0.1. The output dir holds the adapter (``adapter_model.safetensors``; evaluate
with ``--lora_path DIR``, continue in stage 2 with ``--load_peft DIR``) and ``lethe_config.json``. Resuming from the
newest complete ``checkpoint-N`` is automatic (``--restart`` starts over).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

from dataclasses import dataclass, field
from typing import Any, Optional

from trl import DPOConfig, DPOTrainer

from common.errors import LetheError, cli_main, run_cli
from common.training import one_line_logs, training_device
from stic.pref_data import PreferenceCollator, load_pref_data, mean_answer_tokens, to_dataset
from stic.stage import apply_global_batch, finish_config, global_batch, run_stage

STIC_ALPHA = 1 / 1024  # stic/dpo_trainer.py: - policy_chosen_logps / 1024 (summed log-prob of y_w)


@dataclass
class SticDpoConfig(DPOConfig):
    """STIC stage 1 on top of ``DPOConfig`` (every DPO / Trainer flag works). Defaults as the paper's scripts."""

    data_path: str = field(default="data/pref_data.json", metadata={
        "help": "preference data: generate_pref.py's jsonl or its JSON list"})
    image_folder: str = field(default="data/images", metadata={"help": "folder the records' image names are in"})
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    sft_weight: str = field(default="auto", metadata={
        "help": "weight of the NLL term on the preferred answer (TRL's loss_weights[1]); auto = L̄/1024, STIC's "
                "α = 1/1024 on the summed NLL expressed on TRL's token mean (L̄: mean preferred length in tokens)"})
    global_batch_size: Optional[int] = field(default=8, metadata={
        "help": "pairs per optimizer step over all processes (the paper: 8); sets gradient_accumulation_steps"})
    check_images: bool = field(default=True, metadata={"help": "decode-check every image before the model loads"})
    restart: bool = field(default=False, metadata={"help": "ignore checkpoints in the output dir"})
    wandb_user: Optional[str] = field(default=None, metadata={"help": "wandb entity; without it wandb is offline"})
    wandb_project: str = "lethe-stic"
    # the paper's scripts/dpo_finetune.sh
    beta: float = 0.1
    learning_rate: float = 1e-7
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    num_train_epochs: float = 1.0
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 1
    activation_checkpointing: Optional[bool] = False  # the paper's stage 1 runs without (TRL's default: on)
    gradient_checkpointing: Optional[bool] = None  # transformers' deprecated name of the above
    bf16: Optional[bool] = None  # None: on GPUs that support it
    max_length: Optional[int] = None  # never cut image tokens (TRL's advice for VLMs)
    logging_steps: float = 1
    save_steps: float = 5000
    save_total_limit: Optional[int] = 2
    remove_unused_columns: bool = False
    report_to: Optional[str] = "wandb"
    output_dir: Optional[str] = None

    def __post_init__(self):
        finish_config(self)
        if self.sft_weight != "auto":
            try:
                w = float(self.sft_weight)
            except ValueError:
                raise LetheError(f"--sft_weight: expected a number or 'auto', got {self.sft_weight!r}") from None
            if not w >= 0:
                raise LetheError(f"--sft_weight: must be >= 0, got {w}")
        self.loss_type = ["sigmoid", "sft"]
        super().__post_init__()
        apply_global_batch(self)


def build_trainer(margs, cfg: SticDpoConfig) -> tuple[DPOTrainer, Any]:
    records = load_pref_data(cfg.data_path, cfg.image_folder, cfg.check_images)  # before any model loads
    vlm = margs.load(device=training_device(cfg))
    if getattr(vlm, "processor", None) is None:
        raise LetheError(f"--model {margs.model}: STIC trains families with a Hugging Face processor "
                         "(llava, llava_next, hf)")
    if cfg.sft_weight == "auto":
        mean_len = mean_answer_tokens(vlm, records)
        w = STIC_ALPHA * mean_len
        how = f"auto: {mean_len:.1f} tokens (mean preferred answer) / 1024"
    else:
        w, how = float(cfg.sft_weight), "given"
    cfg.loss_weights = [1.0, w]
    vlm.model.requires_grad_(False)
    trainer = DPOTrainer(model=vlm.model, args=cfg, train_dataset=to_dataset(records),
                         data_collator=PreferenceCollator(vlm), processing_class=vlm.processor,
                         peft_config=vlm.llm_lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
    vlm.model = trainer.model  # the PeftModel: the model layer's forward map now runs the adapted model
    vlm.scope = "lora"
    one_line_logs(trainer)
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if trainer.is_world_process_zero():
        print(f"STIC stage 1: {len(records)} preference pairs; β {cfg.beta}, sft weight {w:.4g} ({how}); "
              f"LoRA r {cfg.lora_r} α {cfg.lora_alpha} on the language model: {n_train:,} trainable params; "
              f"global batch {global_batch(cfg)}", flush=True)
    return trainer, vlm


@cli_main
def main(argv: list[str] | None = None) -> int:
    return run_stage(argv, SticDpoConfig, build_trainer, "stage1", "stic_dpo",
                     lambda cfg: {"data_path": cfg.data_path, "image_folder": cfg.image_folder},
                     lambda out: f"saved the stage-1 adapter in {out}; evaluate with --lora_path {out}, "
                                 f"continue with stic/train_sft.py --load_peft {out}")


if __name__ == "__main__":
    run_cli(main)
