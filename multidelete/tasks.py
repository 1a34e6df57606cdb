"""Retrieval tasks for CLIP unlearning: which data is Df (forget), Dr (retain) and the held-out test split.

- ``toy_retrieval``: the toy world (``--data_path dataset/toy``): train split → Df = every image showing one of
  ``--forget_concepts`` (all its caption pairs), Dr = the other train images; test = the val images without the
  concepts, and ``test_forget`` = the val images with them (does the forgetting generalise to unseen images?).
  With ``--df_size`` instead: Df = sampled train images, test = the val split.
- ``coco_retrieval`` / ``flickr30k_retrieval``: a Karpathy json (``--data_path dataset_coco.json``,
  ``--image_root``): Df = ``--df_size`` train images sampled with ``--seed`` (or the images of ``--df_list``),
  Dr = the other train images; test = the Karpathy test split.
- ``salmu_retrieval``: SALMUBench (``--data_path``: the Hugging Face layout or folder + jsonl): Df = the ``forget``
  split (its first ``--df_size`` images in file order, as the fork's ``df_ids[:df_size]``, or ``--df_list``),
  Dr = ``retain_synth``; test = ``holdout_identity``; ``holdout_association`` is reported as a further split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from common.errors import LetheError
from common.retrieval import (RetrievalSplit, forget_by_concepts, forget_by_keys, load_karpathy, load_salmubench,
                              load_toy_retrieval, sample_forget)

TASKS = ("toy_retrieval", "coco_retrieval", "flickr30k_retrieval", "salmu_retrieval")


@dataclass
class TaskArguments:
    task: str = field(default="toy_retrieval", metadata={"help": f"one of {', '.join(TASKS)}"})
    data_path: Optional[str] = field(default=None, metadata={
        "help": "toy: the toy dataset root; coco/flickr30k: the Karpathy json; salmu: the SALMUBench dir"})
    image_root: Optional[str] = field(default=None, metadata={"help": "image folder (Karpathy; SALMU jsonl)"})
    df_size: Optional[int] = field(default=None, metadata={"help": "number of images to forget"})
    df_list: Optional[str] = field(default=None, metadata={"help": "a file of image keys to forget, one per line"})
    forget_concepts: Optional[str] = field(default=None, metadata={
        "help": "toy: comma-separated categories whose images are forgotten"})
    max_dr_eval: Optional[int] = field(default=None, metadata={
        "help": "evaluate on at most this many Dr images (default: 5×|Df|, as MultiDelete)"})


@dataclass
class TaskData:
    df: RetrievalSplit
    dr: RetrievalSplit
    test: RetrievalSplit
    extra: dict[str, RetrievalSplit] = field(default_factory=dict)

    def eval_splits(self, max_dr: Optional[int] = None) -> dict[str, RetrievalSplit]:
        """df, dr (its first ``max_dr`` images; default 5×|Df|), test and any further split."""
        n = max_dr if max_dr is not None else 5 * len(self.df)
        dr = self.dr if n >= len(self.dr) else self.dr.subset(range(n), name=f"{self.dr.name}[:{n}]")
        return {"df": self.df, "dr": dr, "test": self.test, **self.extra}


def _require(value, flag: str, task: str):
    if not value:
        raise LetheError(f"--{flag} is required for --task {task}")
    return value


def load_task(args: TaskArguments, seed: int = 0) -> TaskData:
    if args.task not in TASKS:
        raise LetheError(f"unknown --task {args.task!r}; valid: {', '.join(TASKS)}")
    if args.task == "toy_retrieval":
        root = args.data_path or "dataset/toy"
        train, test = load_toy_retrieval(root, "train"), load_toy_retrieval(root, "val")
        if args.df_list:
            df, dr = forget_by_keys(train, args.df_list)
        elif args.forget_concepts:
            concepts = [c.strip() for c in args.forget_concepts.split(",") if c.strip()]
            df, dr = forget_by_concepts(train, concepts)
            # utility is measured on what was not to be forgotten; the concept's unseen images show whether the
            # forgetting generalises
            test_forget, test = forget_by_concepts(test, concepts)
            return TaskData(df, dr, test, {"test_forget": test_forget})
        else:
            df, dr = sample_forget(train, _require(args.df_size, "df_size", args.task), seed)
        return TaskData(df, dr, test)
    path = _require(args.data_path, "data_path", args.task)
    if args.task in ("coco_retrieval", "flickr30k_retrieval"):
        root = _require(args.image_root, "image_root", args.task)
        train, test = load_karpathy(path, root, "train"), load_karpathy(path, root, "test")
        if args.df_list:
            df, dr = forget_by_keys(train, args.df_list)
        else:
            df, dr = sample_forget(train, _require(args.df_size, "df_size", args.task), seed)
        return TaskData(df, dr, test)
    forget = load_salmubench(path, "forget", image_root=args.image_root)
    if args.df_list:
        df, _ = forget_by_keys(forget, args.df_list)
    elif args.df_size is not None:
        if not 1 <= args.df_size <= len(forget):
            raise LetheError(f"--df_size {args.df_size} outside 1..{len(forget)} (the images of {path}'s forget split)")
        df = forget.subset(range(args.df_size), name="forget")
    else:
        df = forget
    dr = load_salmubench(path, "retain_synth", image_root=args.image_root)
    test = load_salmubench(path, "holdout_identity", image_root=args.image_root)
    extra = {"holdout_association": load_salmubench(path, "holdout_association", image_root=args.image_root)}
    return TaskData(df, dr, test, extra)
