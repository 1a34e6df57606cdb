"""EFUF: fine-grained unlearning of hallucinated objects, for every family in the registry.

    python finetune/train.py --model llava --llava_path P [--llava_ckpt_save_path S] [--run_name R] \
        [--pos_neg_data_path dataset/pos_neg.json] [--llava_data_path dataset/llava/llava_v1_5_mix665k.json]

A ``transformers.Trainer`` whose ``compute_loss`` is EFUF's signed objective (``finetune/loss.py``): each step is
one forward over negatives (gradient ascent), positives, gold instruction samples (and sentences when
``--sent_w > 0``). Everything the Trainer offers works: ``accelerate launch`` with the DDP / FSDP / DeepSpeed
configs in ``configs/accelerate/``, gradient accumulation, bf16 autocast with fp32 master weights for the trained
tensors, resume from the last checkpoint (automatic; ``--restart`` starts over), wandb (offline unless
``--wandb_user``; never imported with ``--report_to none``). Checkpoints hold only the trainable tensors
(``trainable.safetensors``); the eval scripts load them with ``--{model}_ckpt_load_path``.

Provenance: the run's output dir and every ``checkpoint-N/`` get ``lethe_config.json`` (written atomically): every
EFUF and Trainer field as resolved, the model arguments, the data paths, the command line, package versions and
the git commit of this checkout (with whether its tree was dirty; null when not a git checkout).

Output: one line per logging step, ``step N loss X  grad_norm G  lr L  nll_pos …  w_pos …  epoch E`` (X is the
exact EFUF loss, averaged over processes), beside the Trainer's progress bar; the Trainer's own log dicts are not
printed.

Faults: every data file is read and checked before the model loads (scores on the CLIP scale, images present).
Resuming takes the newest *complete* ``checkpoint-N`` (``checkpoint_problem``): one that a ``kill -9`` cut short
while the Trainer was writing it is named in a warning line and moved to ``incomplete-checkpoint-N``, so neither
resuming nor the ``save_total_limit`` rotation mistakes it for a checkpoint.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import Trainer, TrainingArguments

from common.errors import LetheError, cli_main, run_cli
from common import training
from common.training import TRAINABLE_FILE, one_line_logs, setup_wandb, training_device
from finetune.data import EfufDataset, check_images, load_gold, load_pos_neg, load_sentences, to_sample
from finetune.loss import COMPONENTS, EfufWeights, WeightSchedule, efuf_loss

# the EfufConfig fields that name data (recorded on their own in lethe_config.json)
DATA_FIELDS = ("pos_neg_data_path", "sentence_data_path", "image_dir_path", "llava_data_path", "vqa_image_dir")


@dataclass
class EfufConfig(TrainingArguments):
    """EFUF's settings on top of ``TrainingArguments`` (all Trainer flags work too). Defaults as the paper."""

    # data
    pos_neg_data_path: str = field(default="dataset/pos_neg.json")
    sentence_data_path: str = field(default="dataset/sentences.json")
    image_dir_path: str = field(default="dataset/images", metadata={"help": "images of pos_neg / sentences"})
    llava_data_path: Optional[str] = field(default="dataset/llava/llava_v1_5_mix665k.json", metadata={
        "help": "gold (retention) data in LLaVA instruction format; empty to disable"})
    vqa_image_dir: str = field(default="dataset/llava", metadata={"help": "image root of the gold data"})
    llava_data_size_k: float = field(default=10, metadata={"help": "use the first N thousand gold entries"})
    train_prompt: str = field(default="Please describe the image.")
    # thresholds (tuned to CLIP ViT-B/32's 100·cos scale: re-tune them for another CLIP)
    hal_clip_thres: float = field(default=23.0, metadata={"help": "score < this: hallucinated (negative)"})
    norm_clip_thres: float = field(default=32.0, metadata={"help": "score > this: real (positive)"})
    sentence_clip_thres: float = field(default=27.5)
    gold_clip_score: float = field(default=40.0)
    # weights and schedules
    pos_w_start: float = 1.0
    pos_w_end: float = 0.5
    pos_w_start_step_pos: float = 0.0
    pos_w_sched_type: str = field(default="linear", metadata={"help": "linear | exp | const (as the original)"})
    neg_w_start: float = 0.3
    neg_w_end: float = 0.0
    neg_w_start_step_pos: float = 0.4
    neg_w_sched_type: str = field(default="linear", metadata={"help": "linear | exp | const (as the original)"})
    gold_w: float = 0.3
    sent_w: float = 0.0
    # what is trained
    scope: str = field(default="projector", metadata={"help": "projector | lora | llm | full | vision_layers"})
    lora: bool = field(default=False, metadata={"help": "shortcut for --scope lora"})
    lora_r: int = 8
    lora_alpha: int = 16
    # run
    wandb_user: Optional[str] = field(default=None, metadata={"help": "wandb entity; without it wandb is offline"})
    wandb_project: str = "lethe-efuf"
    restart: bool = field(default=False, metadata={"help": "ignore checkpoints in the output dir"})
    encode_cache_mb: float = field(default=1024.0, metadata={
        "help": "per data-loading process: MB of encoded samples (image tensors, token ids, labels) kept for the "
                "samples a run draws again (positive / gold cycles, later epochs); 0: none"})
    # paper defaults for Trainer fields: one example = 1 negative + 1 positive + 1 gold sample (+ 1 sentence
    # sample when --sent_w > 0), i.e. EFUF's train_bs_{neg,pos,gold,sent} = 1
    per_device_train_batch_size: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.05
    num_train_epochs: float = 1.0
    lr_scheduler_type: str = "constant"
    max_grad_norm: float = 0.0
    logging_steps: float = 5
    save_steps: float = 0.25
    save_total_limit: Optional[int] = 2
    remove_unused_columns: bool = False
    ddp_find_unused_parameters: Optional[bool] = True
    report_to: Optional[str] = "wandb"
    output_dir: Optional[str] = None
    # batches are built in worker processes (kept across epochs, with their caches) while the model steps
    dataloader_num_workers: int = 2
    dataloader_persistent_workers: bool = True
    # the Trainer's NaN/inf check reads the loss back from the device at every step; a NaN shows in the log anyway
    logging_nan_inf_filter: bool = False

    def __post_init__(self):
        self.output_dir_given = self.output_dir is not None
        if self.lora:
            self.scope = "lora"
        if self.wandb_user in ("none", ""):
            self.wandb_user = None
        if self.dataloader_num_workers == 0:
            self.dataloader_persistent_workers = False  # the DataLoader refuses it without workers
        if self.train_sampling_strategy == "batch_rebalance":
            raise LetheError("--train_sampling_strategy batch_rebalance is not available for EFUF (a step's samples "
                             "are fixed by its examples); use group_by_length, random or sequential")
        self.weights()  # a bad schedule fails here, in one line, before any model loads
        super().__post_init__()

    def weights(self) -> EfufWeights:
        return EfufWeights(
            pos=WeightSchedule(self.pos_w_start, self.pos_w_end, self.pos_w_start_step_pos, self.pos_w_sched_type),
            neg=WeightSchedule(self.neg_w_start, self.neg_w_end, self.neg_w_start_step_pos, self.neg_w_sched_type),
            gold_w=self.gold_w, gold_score=self.gold_clip_score, sent_w=self.sent_w,
            max_score=self.hal_clip_thres + self.norm_clip_thres)


def encode_example(encoder, example: dict[str, list]) -> list[tuple[int, float, dict]]:
    """One example's samples as (component id, score, encoding), in ``COMPONENTS`` order."""
    return [(COMPONENTS.index(name), it.score, encoder(to_sample(it), key=it))
            for name in COMPONENTS for it in example.get(name, [])]


class EfufExamples(torch.utils.data.Dataset):
    """EFUF's examples encoded where the DataLoader runs them (its worker processes): example i → every sample of
    its components as unpadded model inputs (``common.batching.SampleEncoder``: each sample's images decoded and
    its text tokenized once, kept in the encoder's cache while they fit), with component ids and scores."""

    def __init__(self, dataset: EfufDataset, encoder):
        self.dataset, self.encoder = dataset, encoder

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> list[tuple[int, float, dict]]:
        return encode_example(self.encoder, self.dataset[i])

    @property
    def lengths(self) -> list[int]:
        """A length per example for length-grouped sampling: its longest sample's text in characters (the image
        tokens are the same for every sample of a family with fixed-size images)."""
        return self.dataset.lengths


class EfufCollator:
    """Encoded examples → one padded batch (all components in one forward, in ``COMPONENTS`` order, as the
    original's step); host-side ``efuf_host``: component ids, scores, labels and their ``LabelIndex``."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[list[tuple[int, float, dict]]]) -> dict[str, Any]:
        from common.batching import HostInfo, LabelIndex, collate

        rows = sorted((r for ex in examples for r in ex), key=lambda r: r[0])  # stable: example order kept
        batch = collate([enc for _, _, enc in rows], self.pad_token_id)
        host = HostInfo(component=[c for c, _, _ in rows], score=torch.tensor([s for _, s, _ in rows]),
                        labels=batch.labels, index=LabelIndex.from_labels(batch.labels))
        return {**batch.inputs, "efuf_host": host}


class EfufTrainer(training.TrainableCheckpoints, Trainer):
    """EFUF as a loss: ``compute_loss`` combines per-sample target NLLs with signs, scores and schedules.

    The loss is a mean over the micro-batch's samples per component (never a sum over ``num_items_in_batch``
    tokens), so under gradient accumulation the Trainer must divide it by the accumulation steps: then k steps of
    batch b give the gradient of one batch of k·b.
    """

    loss_is_scaled_for_ga = False  # transformers >= 5.x that has the flag

    def __init__(self, *args, vlm, weights: EfufWeights, model_args: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        # older 5.x releases decide the division from this flag alone (and count label tokens for nothing)
        self.model_accepts_loss_kwargs = False
        self.vlm, self.efuf_weights, self.model_args = vlm, weights, model_args
        self._component_logs: dict[str, list[float]] = {}
        self._losses: list[torch.Tensor] = []
        self._provenance: dict[str, Any] | None = None
        one_line_logs(self)  # one readable line per log (log_line), not the Trainer's dicts as well

    @property
    def provenance(self) -> dict[str, Any]:
        """What this run's checkpoints come from (``lethe_config.json``); gathered once, when first needed."""
        if self._provenance is None:
            self._provenance = efuf_provenance(self.args, self.model_args, self.vlm)
        return self._provenance

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy == "group_by_length":
            from transformers.trainer_pt_utils import LengthGroupedSampler

            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=dataset.lengths)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """EFUF's loss of one batch, without reading anything back from the device: which rows take part and
        where their labels are is known on the host (``efuf_host``); the LM head runs on the labelled positions
        only; logged values stay on the device until a log reads them."""
        from common.batching import LabelIndex, host_side, sample_nll

        host = inputs.pop("efuf_host")
        t = self.state.global_step / max(1, self.state.max_steps)
        w = self.efuf_weights.at(t)
        component, score, index = host.component, host.score, host.index
        with host_side():
            rows = [i for i, c in enumerate(component) if w[COMPONENTS[c]] != 0]
            if len(rows) < len(component):  # a component whose weight is 0 now (neg after its decay) leaves
                rows = rows or [0]  # still one forward, so every process runs the same collective ops
                at = torch.tensor(rows)
                index = LabelIndex.from_labels(host.labels.index_select(0, at))
                component, score = [component[i] for i in rows], score.index_select(0, at)
                at = at.to(inputs["input_ids"].device, non_blocking=True)
                inputs = {k: v.index_select(0, at) if torch.is_tensor(v) and v.shape[:1] == (len(host.component),)
                          else v for k, v in inputs.items()}
        device = inputs["input_ids"].device
        nll, outputs = sample_nll(model, inputs, index.to(device))
        loss, logs = efuf_loss(nll, component, score.to(device, non_blocking=True), self.efuf_weights, t)
        for k, v in {**logs, **{f"w_{k}": v for k, v in w.items()}}.items():
            self._component_logs.setdefault(k, []).append(v)
        self._losses.append(loss.detach().float())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        for k, v in self._component_logs.items():
            mean = torch.stack(v).float().mean().item() if torch.is_tensor(v[0]) else sum(v) / len(v)
            logs[k] = round(mean, 6)
        self._component_logs.clear()
        if self._losses and "loss" in logs:
            # the exact EFUF loss since the last log, averaged over processes (Trainer's "loss" is rounded)
            local = torch.stack(self._losses).mean().reshape(1).to(self.args.device)
            exact = self.accelerator.gather(local).mean().item()
            logs["efuf_loss"] = exact  # printed as "step N loss X" (log_line)
        self._losses.clear()
        super().log(logs, *args, **kwargs)


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """Why ``checkpoint-N/`` of an EFUF run is not complete (``common.training.checkpoint_problem``), or None."""
    return training.checkpoint_problem(ckpt, (TRAINABLE_FILE,))


def last_complete_checkpoint(output_dir: str | Path, move_aside: bool = True, **kw) -> str | None:
    """The newest complete ``checkpoint-N`` of an EFUF run (``common.training.last_complete_checkpoint``)."""
    return training.last_complete_checkpoint(output_dir, move_aside, weight_files=(TRAINABLE_FILE,), **kw)


def efuf_provenance(cfg: EfufConfig, margs: Any, vlm: Any = None) -> dict[str, Any]:
    """``lethe_config.json`` of an EFUF run: ``training`` (every EFUF and Trainer field, resolved), ``model`` (the
    model arguments), ``data`` (the data paths), ``trainable``, ``world_size``, versions and git state."""
    from common.checkpoint import run_provenance

    sections: dict[str, Any] = {
        "training": cfg.to_dict(),
        "model": margs if margs is not None else {"model": getattr(vlm, "family", None)},
        "data": {f: getattr(cfg, f) for f in DATA_FIELDS},
        "world_size": cfg.world_size,
    }
    if vlm is not None:
        sections["trainable"] = {"scope": str(vlm.scope), "lora": vlm.lora_config,
                                 "params": sum(p.numel() for p in vlm.model.parameters() if p.requires_grad)}
    return run_provenance("efuf", sections)


def load_data(cfg: EfufConfig) -> EfufDataset:
    """Read and check every data file the run uses (scores, positions, images) — before any model loads, so bad
    data fails in one line in seconds, not after minutes of loading or hours into training."""
    prompt = cfg.train_prompt
    pos, neg = load_pos_neg(cfg.pos_neg_data_path, cfg.image_dir_path, prompt, cfg.hal_clip_thres, cfg.norm_clip_thres)
    others: dict[str, list] = {"pos": pos}
    per_step = {"pos": 1 if cfg.pos_w_start > 0 or cfg.pos_w_end > 0 else 0}
    check_images(neg + (pos if per_step["pos"] else []), cfg.pos_neg_data_path)
    if cfg.gold_w > 0 and cfg.llava_data_path:
        others["gold"] = load_gold(cfg.llava_data_path, cfg.vqa_image_dir, int(cfg.llava_data_size_k * 1000),
                                   cfg.gold_clip_score)
        per_step["gold"] = 1
    if cfg.sent_w > 0:
        others["sent"] = load_sentences(cfg.sentence_data_path, cfg.image_dir_path, prompt, cfg.hal_clip_thres,
                                        cfg.sentence_clip_thres)
        per_step["sent"] = 1
        check_images(others["sent"], cfg.sentence_data_path)
    return EfufDataset(neg, others, per_step, cfg.seed)


def pad_token_id(vlm) -> int:
    tok = vlm.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def efuf_examples(vlm, dataset: EfufDataset, cache_mb: float = 0.0) -> EfufExamples:
    from common.batching import SampleEncoder

    return EfufExamples(dataset, SampleEncoder(vlm, cache_mb))


def build_trainer(margs, cfg: EfufConfig) -> tuple[EfufTrainer, Any]:
    dataset = load_data(cfg)  # first: a bad data file never waits for a model load
    vlm = margs.load(device=training_device(cfg))
    vlm.set_trainable(cfg.scope, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
    for p in vlm.model.parameters():  # fp32 master weights for what is trained; frozen weights keep their dtype
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    print(f"EFUF data: {len(dataset.neg)} negatives (an epoch), {len(dataset.others.get('pos', []))} positives, "
          f"{len(dataset.others.get('gold', []))} gold, {len(dataset.others.get('sent', []))} sentences; "
          f"trainable: {sum(p.numel() for p in vlm.model.parameters() if p.requires_grad):,} params ({cfg.scope})")
    trainer = EfufTrainer(model=vlm.model, args=cfg, train_dataset=efuf_examples(vlm, dataset, cfg.encode_cache_mb),
                          data_collator=EfufCollator(pad_token_id(vlm)), vlm=vlm, weights=cfg.weights(),
                          model_args=margs)
    return trainer, vlm


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import ModelArguments, parse_args, save_config

    margs, cfg = parse_args([ModelArguments, EfufConfig], argv)
    if not cfg.output_dir_given:  # EFUF's layout: {ckpt_save_path}/{run_name}, default checkpoints/{model}
        cfg.run_name = cfg.run_name or time.strftime("%Y%m%d-%H%M%S")
        cfg.output_dir = str(Path(margs.ckpt_save_path or f"checkpoints/{margs.model}") / cfg.run_name)
    given = argv if argv is not None else sys.argv[1:]
    if not cfg.bf16 and not cfg.fp16 and not any(a.startswith("--bf16") for a in given) \
            and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        cfg.bf16 = True  # bf16 autocast by default on GPUs that have it; the trained tensors stay fp32
    setup_wandb(cfg)
    trainer, vlm = build_trainer(margs, cfg)
    resume = training.resume_checkpoint(trainer, cfg.output_dir, cfg.restart, weight_files=(TRAINABLE_FILE,))
    if trainer.is_world_process_zero():
        from common.checkpoint import write_provenance

        save_config(cfg.output_dir, margs, name="model_config.yaml")
        write_provenance(cfg.output_dir, trainer.provenance)  # now: a run that dies early still says what it was
        print(f"world size {cfg.world_size}; output {cfg.output_dir}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)
    if trainer.is_world_process_zero():
        print(f"saved {Path(cfg.output_dir) / TRAINABLE_FILE}; evaluate with "
              f"--{margs.model}_ckpt_load_path {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
