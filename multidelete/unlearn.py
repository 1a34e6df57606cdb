"""CLIP unlearning on retrieval tasks: MultiDelete (``vlul``), the SALMU fork's ``erase`` and ``delete``, ``ft``,
``neggrad`` — each a loss (``multidelete/losses.py``) on a ``transformers.Trainer``.

    python multidelete/unlearn.py --unlearn_method vlul --backbone clip --task toy_retrieval \\
        --cfg-path configs/clip/retrieval_toy.yaml [--clip_path P] [--output_dir D]
    python -m torch.distributed.run --nproc_per_node=2 multidelete/unlearn.py ...   # also accelerate launch

The fork's command line works as written (``--cfg-path`` is ``--config``; ``--backbone clip`` picks the ``clip``
family, ``--clip_path`` the checkpoint: an open_clip dir or name, or a HF CLIP dir / id).

Batches: ``vlul`` / ``erase`` / ``delete`` see, per example, one Df pair and one Dr pair (the original's halved
``batch_size_train``: ``--per_device_train_batch_size 16`` is its 32), Dr drawn from seeded permutations that
cycle, so an epoch is one pass over the Df pairs; ``ft`` sees Dr pairs, ``neggrad`` Df pairs. The similarity
matrices are over the *global* batch: features are gathered from every process (with gradients), so 2 processes
with per-device batch B/2 train exactly as 1 process with batch B. The original model (the teacher of ``vlul``,
``erase``, ``delete``) is a frozen copy, never updated, whose features of a pair are computed once and kept
(``--cache_teacher``, on by default); the logit scale is trained only by the contrastive
methods. At the end the run is evaluated (``multidelete/eval.py``: recall@k on Df, Dr and test, Df-vs-Dr AUROC,
membership inference) and ``report.json`` written beside ``trainable.safetensors`` (the unlearned weights, which
every eval script loads with ``--clip_ckpt_load_path``).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import Trainer, TrainingArguments

from common import training
from common.errors import LetheError, cli_main, run_cli
from common.training import TRAINABLE_FILE, one_line_logs, setup_wandb, training_device
from multidelete import losses as L
from multidelete.tasks import TaskArguments, TaskData, load_task

PAIRED = ("vlul", "erase", "delete")  # one Df and one Dr pair per example


@dataclass
class UnlearnConfig(TrainingArguments):
    """Unlearning settings on top of ``TrainingArguments``; defaults as the SALMU fork (lr 1e-7, wd 0.001, 10
    epochs, cosine with warmup) — see ``configs/clip/*.yaml``."""

    unlearn_method: str = field(default="vlul", metadata={"help": f"one of {', '.join(L.METHODS)}"})
    backbone: str = field(default="clip", metadata={"help": "clip (open_clip or HF CLIPModel checkpoints)"})
    alpha: float = field(default=1.0, metadata={"help": "vlul: weight of modality decoupling (on Df)"})
    beta: float = field(default=1.0, metadata={"help": "vlul: weight of multimodal knowledge retention (on Dr)"})
    gamma: float = field(default=1.0, metadata={"help": "vlul: weight of unimodal knowledge retention (on Dr)"})
    eval_batch: int = field(default=128, metadata={"help": "batch size of the final evaluation's embedding pass"})
    cache_teacher: bool = field(default=True, metadata={
        "help": "keep the frozen teacher's features of each pair after its first use (CPU memory: 2 × dim floats a "
                "pair) instead of recomputing them every epoch"})
    skip_eval: bool = field(default=False, metadata={"help": "do not evaluate at the end"})
    restart: bool = field(default=False, metadata={"help": "start over instead of resuming the last checkpoint"})
    wandb_user: Optional[str] = field(default=None, metadata={"help": "wandb entity; without it wandb is offline"})
    wandb_project: str = field(default="lethe")
    learning_rate: float = 1e-7
    weight_decay: float = 0.001
    num_train_epochs: float = 10.0
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    per_device_train_batch_size: int = 16
    logging_steps: float = 10
    save_strategy: str = "epoch"
    save_total_limit: Optional[int] = 2
    remove_unused_columns: bool = False

    def __post_init__(self):
        if self.unlearn_method not in L.METHODS:
            raise LetheError(f"unknown --unlearn_method {self.unlearn_method!r}; valid: {', '.join(L.METHODS)}")
        if self.backbone != "clip":
            raise LetheError(f"--backbone {self.backbone!r}: only clip is supported (open_clip or HF CLIPModel)")
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise LetheError(f"--{name} must be >= 0")
        super().__post_init__()


class UnlearnPairs(torch.utils.data.Dataset):
    """Example i: Df pair i (``vlul``/``erase``/``delete``/``neggrad``) and/or a Dr pair (seeded cycling draws);
    ``ft``: Dr pair i. A pair is (image source, caption)."""

    def __init__(self, data: TaskData, method: str, seed: int, include_df: bool = False):
        self.method = method
        self.df = [(data.df.images[i], data.df.texts[j]) for i, j in data.df.pairs()]
        self.dr = [(data.dr.images[i], data.dr.texts[j]) for i, j in data.dr.pairs()]
        if include_df:  # ``ft`` on the whole train split: training the original model (multidelete/train.py)
            self.dr = self.df + self.dr
        if method != "ft" and not self.df:
            raise LetheError("the forget set Df is empty")
        if method in (*PAIRED, "ft") and not self.dr:
            raise LetheError("the retain set Dr is empty")
        self.seed = seed
        self._perms: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.dr) if self.method == "ft" else len(self.df)

    def _dr_index(self, i: int) -> int:
        """The i-th draw from Dr: a fresh seeded permutation each time Dr is used up."""
        cycle, k = divmod(i, len(self.dr))
        if cycle not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
            self._perms[cycle] = torch.randperm(len(self.dr), generator=g).tolist()
        return self._perms[cycle][k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """``{"df": (image, caption), "df_idx": pair index, "dr": ..., "dr_idx": ...}`` (the parts the method uses)."""
        if self.method == "ft":
            return {"dr": self.dr[i], "dr_idx": i}
        item = {"df": self.df[i], "df_idx": i}
        if self.method in PAIRED:
            j = self._dr_index(i)
            item.update(dr=self.dr[j], dr_idx=j)
        return item


class PairCollator:
    """Images through the checkpoint's own transform, captions through its tokenizer (verbatim text)."""

    def __init__(self, clip):
        self.clip = clip

    def _load(self, src):
        return src.load() if hasattr(src, "load") else src

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in ("df", "dr"):
            if part in items[0]:
                out[f"{part}_pixel_values"] = self.clip.preprocess([self._load(it[part][0]) for it in items])
                out[f"{part}_tokens"] = self.clip.tokenize([it[part][1] for it in items])
                out[f"{part}_idx"] = torch.tensor([it[f"{part}_idx"] for it in items], dtype=torch.long)
        return out


def gather(x: torch.Tensor) -> torch.Tensor:
    """All processes' rows, in rank order, differentiable (each process's gradient flows back to its own rows)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


class UnlearnTrainer(training.TrainableCheckpoints, Trainer):
    """``compute_loss`` is the method's objective on gathered, L2-normalised features; the teacher is frozen."""

    def __init__(self, *args, clip, teacher, cfg: UnlearnConfig, model_args: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.vlm, self.teacher, self.method = clip, teacher, cfg.unlearn_method
        self.cache_teacher = cfg.cache_teacher
        self._teacher_cache: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.weights = (cfg.alpha, cfg.beta, cfg.gamma)
        self.model_args = model_args
        self._parts: dict[str, list[float]] = {}
        self._provenance: dict[str, Any] | None = None
        one_line_logs(self)

    @property
    def provenance(self) -> dict[str, Any]:
        if self._provenance is None:
            from common.checkpoint import run_provenance

            self._provenance = run_provenance("multidelete", {
                "training": self.args.to_dict(), "model": self.model_args, "world_size": self.args.world_size})
        return self._provenance

    def _features(self, module, pixels, tokens, gather_all: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (image, text) features through ``module``'s forward (so DDP sees the call); with
        ``gather_all``, every process's rows."""
        if self.vlm.backend == "open_clip":
            out = module(image=pixels, text=tokens)
            fi, ft = (out["image_features"], out["text_features"]) if isinstance(out, dict) else out[:2]
        else:
            out = module(pixel_values=pixels, **tokens)
            fi, ft = out.image_embeds, out.text_embeds
        fi, ft = torch.nn.functional.normalize(fi.float(), dim=-1), torch.nn.functional.normalize(ft.float(), dim=-1)
        return (gather(fi), gather(ft)) if gather_all else (fi, ft)

    def _teacher(self, inputs: dict[str, Any], part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen teacher's features of a batch part (gathered): computed once per pair and kept (on the CPU)
        when ``--cache_teacher``, since they never change; every later epoch reads them back."""
        idx = inputs[f"{part}_idx"].tolist()
        cache = self._teacher_cache.setdefault(part, {}) if self.cache_teacher else {}
        if not all(i in cache for i in idx):
            with torch.no_grad():
                fi, ft = self._features(self.teacher, inputs[f"{part}_pixel_values"], inputs[f"{part}_tokens"],
                                        gather_all=False)
            if not self.cache_teacher:
                return gather(fi), gather(ft)
            cache.update({i: (a.cpu(), b.cpu()) for i, a, b in zip(idx, fi, ft)})
        dev = self.args.device
        fi = torch.stack([cache[i][0] for i in idx]).to(dev)
        ft = torch.stack([cache[i][1] for i in idx]).to(dev)
        return gather(fi), gather(ft)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        m = self.method
        parts: dict[str, torch.Tensor] = {}
        if m == "ft":
            fi, ft = self._features(model, inputs["dr_pixel_values"], inputs["dr_tokens"])
            loss = parts["contrastive_dr"] = L.contrastive(fi, ft, self.vlm.logit_scale)
        elif m == "neggrad":
            fi, ft = self._features(model, inputs["df_pixel_values"], inputs["df_tokens"])
            parts["contrastive_df"] = L.contrastive(fi, ft, self.vlm.logit_scale)
            loss = L.bounded_ascent(parts["contrastive_df"], len(fi))
        else:
            fi, ft = self._features(model, inputs["df_pixel_values"], inputs["df_tokens"])
            ri, rt = self._features(model, inputs["dr_pixel_values"], inputs["dr_tokens"])
            ri0, rt0 = self._teacher(inputs, "dr")
            if m == "vlul":
                fi0, ft0 = self._teacher(inputs, "df")
                if len(fi) >= 2:
                    g = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self.state.global_step)
                    perm = L.derangement(len(fi), g).to(fi.device)
                    parts["md"] = L.modality_decoupling(fi, ft, fi0, ft0, perm)
                else:  # a last batch of one Df pair has no mismatched pair to decouple towards
                    parts["md"] = fi.sum() * 0.0
                parts["multi"] = L.multimodal_retention(ri, rt, ri0, rt0)
                parts["uni"] = L.unimodal_retention(ri, rt, ri0, rt0)
                a, b, c = self.weights
                loss = a * parts["md"] + b * parts["multi"] + c * parts["uni"]
            else:  # delete, erase
                parts["forget"] = L.forget_to_zero(fi, ft)
                parts["retain"] = L.similarity_retention(ri, rt, ri0, rt0)
                loss = parts["forget"] + parts["retain"]
                if m == "erase":
                    parts["consistency"] = L.unimodal_retention(ri, rt, ri0, rt0)
                    loss = loss + parts["consistency"]
        for k, v in parts.items():
            self._parts.setdefault(k, []).append(float(v.detach()))
        return loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        for k, v in self._parts.items():
            logs[k] = round(sum(v) / len(v), 6)
        self._parts.clear()
        super().log(logs, *args, **kwargs)


def build(margs, task: TaskArguments, cfg: UnlearnConfig, original: bool = False):
    """(trainer, clip, task data); ``original``: contrastive training on the whole train split (Df and Dr)."""
    data = load_task(task, cfg.seed)  # first: bad data fails before any model loads
    dataset = UnlearnPairs(data, cfg.unlearn_method, cfg.seed, include_df=original)
    clip = margs.load(device=training_device(cfg))
    clip.set_trainable("full")
    for p in clip.model.parameters():
        p.data = p.data.float()
    if cfg.unlearn_method not in ("ft", "neggrad"):  # only the contrastive losses use the temperature
        clip.model.logit_scale.requires_grad_(False)
    teacher = None
    if cfg.unlearn_method in PAIRED:
        teacher = copy.deepcopy(clip.model).eval().requires_grad_(False)
    print(f"{'training the original model' if original else f'unlearning ({cfg.unlearn_method})'}: Df {data.df.n_images} images / {data.df.n_pairs} pairs, "
          f"Dr {data.dr.n_images} / {data.dr.n_pairs}, test {data.test.n_images} / {data.test.n_pairs}; "
          f"{len(dataset)} examples an epoch", flush=True)
    trainer = UnlearnTrainer(model=clip.model, args=cfg, train_dataset=dataset, data_collator=PairCollator(clip),
                             clip=clip, teacher=teacher, cfg=cfg, model_args=margs)
    return trainer, clip, data


def cfg_path_alias(argv: list[str]) -> list[str]:
    """The fork's ``--cfg-path X`` (and ``--cfg_path``) is ``--config X``."""
    out = []
    for a in argv:
        for old in ("--cfg-path", "--cfg_path"):
            if a == old:
                a = "--config"
            elif a.startswith(old + "="):
                a = "--config=" + a.split("=", 1)[1]
        out.append(a)
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    return run(argv)


def run(argv: list[str] | None = None, original: bool = False) -> int:
    """The CLI of ``unlearn.py``; with ``original`` that of ``train.py`` (method ``ft`` on all the train pairs)."""
    from common.args import ModelArguments, parse_args, save_config

    argv = cfg_path_alias(list(sys.argv[1:] if argv is None else argv))
    if original:
        argv = [*argv, "--unlearn_method", "ft"]
    if not any(a == "--model" or a.startswith("--model=") for a in argv):
        argv = ["--model", "clip", *argv]
    margs, task, cfg = parse_args([ModelArguments, TaskArguments, UnlearnConfig], argv)
    if margs.model != "clip":
        raise LetheError(f"--model {margs.model!r}: CLIP unlearning needs the clip family")
    if not margs.model_path:
        raise LetheError("--clip_path is required (an open_clip dir / name or a HF CLIP dir / id)")
    if cfg.output_dir in (None, "trainer_output") or not any(a.startswith("--output_dir") for a in argv):
        method = "original" if original else f"unlearn-{cfg.unlearn_method}"
        cfg.output_dir = str(Path("output") / method / "clip" / task.task / str(task.df_size or task.forget_concepts
                                                                                   or "df"))
    setup_wandb(cfg)
    trainer, clip, data = build(margs, task, cfg, original)
    resume = training.resume_checkpoint(trainer, cfg.output_dir, cfg.restart, weight_files=(TRAINABLE_FILE,))
    if trainer.is_world_process_zero():
        from common.checkpoint import write_provenance

        save_config(cfg.output_dir, margs, task, name="model_config.yaml")
        write_provenance(cfg.output_dir, trainer.provenance)
        print(f"world size {cfg.world_size}; output {cfg.output_dir}", flush=True)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)
    wall = time.time() - start
    if trainer.is_world_process_zero():
        print(f"saved {Path(cfg.output_dir) / TRAINABLE_FILE} ({wall:.1f} s of training)", flush=True)
        if not cfg.skip_eval:
            from multidelete.eval import evaluate_model, print_report, write_report

            clip.model.eval()
            report = evaluate_model(clip, data, task, batch_size=cfg.eval_batch, seed=cfg.seed)
            report.update(method="original" if original else cfg.unlearn_method, wall_s=round(wall, 2),
                          checkpoint=str(cfg.output_dir))
            write_report(Path(cfg.output_dir) / "report.json", report)
            print_report(report)
    return 0


if __name__ == "__main__":
    run_cli(main)
