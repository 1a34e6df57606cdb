"""STIC stage 2: description-infused instruction fine-tuning on TRL's own ``SFTTrainer``, continuing the stage-1
adapter.

    python stic/train_sft.py --model llava_next --model_path llava-hf/llava-v1.6-mistral-7b-hf \\
        --load_peft checkpoints/stic/stage1/RUN --data_path des_instr_data.json --image_folder /data/stage2_images

Data: LLaVA's instruction format (``[{"id", "image", "conversations": [{"from": "human", "value"}, {"from":
"gpt", "value"}, …]}]``), the output of ``stic/add_des_to_data.py``: the model's own description of the image infused
in the first human turn (``<image>\\nImage description:\\n{desc}\\n\\n{question}``). Every (question, answer) turn
of a conversation is one training sample whose prompt carries that description (the model layer's forward map
builds single-turn samples; in the original a later turn sees the description through the earlier turns), with the
loss on the answer only (Algorithm 2: plain SFT cross-entropy). Conversations without an image are left out and
counted (STIC's stage 2 is about images; the forward map batches image and text-only samples separately).

``--load_peft DIR`` continues the stage-1 adapter (its weights at step 0 are the stage-1 weights, bit for bit);
without it a new LoRA (r 128, α 256) on the language model is trained. Defaults are the paper's
``scripts/finetune_lora.sh``: lr 2e-5, cosine, warmup 3 %, 1 epoch, weight decay 0, global batch 32. The output dir
holds the adapter (evaluate with ``--lora_path DIR``) and ``lethe_config.json``; resuming is automatic.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from trl import SFTConfig, SFTTrainer

from common.errors import LetheError, cli_main, run_cli
from common.io import load_image, read_json
from common.training import one_line_logs, training_device
from stic.pref_data import strip_image_placeholder
from stic.stage import apply_global_batch, finish_config, global_batch, run_stage

DESCRIPTION_HEAD = "Image description:\n"


@dataclass
class SticSftConfig(SFTConfig):
    """STIC stage 2 on top of ``SFTConfig`` (every SFT / Trainer flag works). Defaults as the paper's scripts."""

    data_path: str = field(default="data/des_instr_data.json", metadata={
        "help": "description-infused instruction data (stic/add_des_to_data.py), LLaVA format"})
    image_folder: str = field(default="data/images", metadata={"help": "root of the data's image paths"})
    load_peft: Optional[str] = field(default=None, metadata={"help": "stage-1 adapter dir to continue"})
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    global_batch_size: Optional[int] = field(default=32, metadata={
        "help": "samples per optimizer step over all processes (the paper: 32); sets gradient_accumulation_steps"})
    restart: bool = field(default=False, metadata={"help": "ignore checkpoints in the output dir"})
    wandb_user: Optional[str] = field(default=None, metadata={"help": "wandb entity; without it wandb is offline"})
    wandb_project: str = "lethe-stic"
    # the paper's scripts/finetune_lora.sh
    learning_rate: float = 2e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    num_train_epochs: float = 1.0
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 16
    activation_checkpointing: Optional[bool] = False
    gradient_checkpointing: Optional[bool] = None
    bf16: Optional[bool] = None  # None: on GPUs that support it
    max_length: Optional[int] = None
    logging_steps: float = 1
    save_steps: float = 0.25
    save_total_limit: Optional[int] = 2
    remove_unused_columns: bool = False
    report_to: Optional[str] = "wandb"
    output_dir: Optional[str] = None

    def __post_init__(self):
        finish_config(self)
        self.dataset_kwargs = {"skip_prepare_dataset": True}  # the collator builds batches from the raw rows
        super().__post_init__()
        apply_global_batch(self)


def split_description(question: str) -> tuple[str, str]:
    """(``"Image description:\\n{desc}\\n\\n"`` or "", the rest) of an infused first human turn."""
    q = strip_image_placeholder(question)
    if q.startswith(DESCRIPTION_HEAD) and "\n\n" in q[len(DESCRIPTION_HEAD):]:
        end = q.index("\n\n", len(DESCRIPTION_HEAD)) + 2
        return q[:end], q[end:]
    return "", q


def load_instruction_samples(path: str | Path, image_folder: str | Path) -> tuple[list[dict[str, Any]], int]:
    """(one row per (question, answer) turn of every conversation with an image, conversations without one)."""
    path = Path(path)
    rows = read_json(path)
    if not isinstance(rows, list):
        raise LetheError(f"{path}: expected LLaVA's instruction format (a list of {{image, conversations}})")
    out, text_only = [], 0
    for n, r in enumerate(rows):
        where = f"{path} entry {n}"
        if not isinstance(r, dict) or not isinstance(r.get("conversations"), list):
            raise LetheError(f"{where}: no 'conversations' list")
        if not r.get("image"):
            text_only += 1
            continue
        image = Path(image_folder) / r["image"]
        if not image.is_file():
            raise LetheError(f"{where}: image {image} not found")
        conv = r["conversations"]
        if len(conv) < 2 or len(conv) % 2 or any(not isinstance(t, dict) or not isinstance(t.get("value"), str)
                                                  or t.get("from") != ("human", "gpt")[k % 2]
                                                  for k, t in enumerate(conv)):
            raise LetheError(f"{where}: 'conversations' must alternate human / gpt turns with text")
        description, first = split_description(conv[0]["value"])
        for k in range(0, len(conv), 2):
            question = first if k == 0 else strip_image_placeholder(conv[k]["value"])
            out.append({"image": str(image), "prompt": description + question, "answer": conv[k + 1]["value"],
                        "where": where})
    if not out:
        raise LetheError(f"{path}: no conversation with an image")
    return out, text_only


class InstructionCollator:
    """Rows → a supervised batch through the model layer's forward map (labels on the answer + EOS only)."""

    def __init__(self, vlm):
        self.vlm = vlm

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        from common.models import Sample

        samples, decoded = [], {}
        for r in rows:
            if r["image"] not in decoded:  # a conversation's turns share their image: decode it once per batch
                try:
                    decoded[r["image"]] = load_image(r["image"])
                except LetheError as e:
                    raise LetheError(f"{r['where']}: {e}") from None
            samples.append(Sample(decoded[r["image"]], r["prompt"], target=r["answer"]))
        batch = self.vlm.build_batch(samples)
        return {**batch.inputs, "labels": batch.labels}


def build_trainer(margs, cfg: SticSftConfig) -> tuple[SFTTrainer, Any]:
    from datasets import Dataset

    rows, text_only = load_instruction_samples(cfg.data_path, cfg.image_folder)  # before any model loads
    if cfg.load_peft and not (Path(cfg.load_peft) / "adapter_config.json").is_file():
        raise LetheError(f"--load_peft {cfg.load_peft}: no adapter_config.json there (a stage-1 output dir?)")
    vlm = margs.load(device=training_device(cfg))
    if getattr(vlm, "processor", None) is None:
        raise LetheError(f"--model {margs.model}: STIC trains families with a Hugging Face processor "
                         "(llava, llava_next, hf)")
    peft_config = None
    if cfg.load_peft:
        from peft import PeftModel

        vlm.model = PeftModel.from_pretrained(vlm.model, cfg.load_peft, is_trainable=True)
    else:
        peft_config = vlm.llm_lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    ds = Dataset.from_list(rows)
    trainer = SFTTrainer(model=vlm.model, args=cfg, train_dataset=ds, data_collator=InstructionCollator(vlm),
                         processing_class=vlm.processor, peft_config=peft_config)
    vlm.model = trainer.model
    vlm.scope = "lora"
    one_line_logs(trainer)
    if trainer.is_world_process_zero():
        n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        start = f"continuing the adapter {cfg.load_peft}" if cfg.load_peft else \
            f"a new LoRA r {cfg.lora_r} α {cfg.lora_alpha}"
        skipped = f"; {text_only} conversations without an image left out" if text_only else ""
        print(f"STIC stage 2: {len(rows)} turns from {cfg.data_path}{skipped}; {start}: {n_train:,} trainable "
              f"params; global batch {global_batch(cfg)}", flush=True)
    return trainer, vlm


@cli_main
def main(argv: list[str] | None = None) -> int:
    return run_stage(argv, SticSftConfig, build_trainer, "stage2", "stic_sft",
                     lambda cfg: {"data_path": cfg.data_path, "image_folder": cfg.image_folder,
                                  "load_peft": cfg.load_peft},
                     lambda out: f"saved the stage-2 adapter in {out}; evaluate with --lora_path {out}")


if __name__ == "__main__":
    run_cli(main)
