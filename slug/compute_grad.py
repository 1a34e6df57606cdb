"""SLUG step 2: the forget and retain gradients of a CLIP, one pass over each set.

    python slug/compute_grad.py --clip_path ViT-B-32/laion400m_e32 --forget data/tar_files/Elon_Musk.tar \\
        --retain 'data/laion/laion400m/00000.tar' --output_dir results/slug/grads/Elon_Musk
    python slug/compute_grad.py --config configs/slug/toy.yaml      # every slug CLI reads the same yaml

Loss and sign convention: ``slug/grads.py``. Writes to ``--output_dir`` (atomically):

* ``forget_grads.safetensors``: g_f of every eligible tensor (``slug/layers.py``) of the chosen towers — the
  only full-size gradient the next step needs;
* ``stats.json``: per tensor ‖θ‖, ‖g_f‖, ‖g_r‖ and g_r·g_f (importance and alignment come from these), the sets,
  the mean losses and the run's provenance;
* ``retain_grads.safetensors`` only with ``--save_retain_grads`` (not needed by ``slug/unlearn.py``).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common.errors import LetheError, cli_main, run_cli

CONVENTION = "L_f = mean cos(f_I, f_T) over forget pairs; g_f = grad L_f; step theta - lambda * g_f, lambda > 0"


@dataclass
class GradArguments:
    forget: Optional[str] = field(default=None, metadata={
        "help": "forget set: a webdataset tar (or brace pattern), parquet, image folder, or toy:ROOT[:split]"})
    retain: Optional[str] = field(default=None, metadata={"help": "retain set (same kinds as --forget)"})
    max_retain: int = field(default=10000, metadata={"help": "use the first N retain pairs (one LAION shard)"})
    max_forget: int = field(default=0, metadata={"help": "use the first N forget pairs (0: all)"})
    grad_batch_size: int = field(default=32, metadata={"help": "pairs per gradient batch"})
    towers: str = field(default="vision,text", metadata={"help": "towers whose tensors are kept: vision,text"})
    grads_dir: str = field(default="results/slug/grads", metadata={"help": "where the gradients are written"})
    save_retain_grads: bool = field(default=False, metadata={"help": "also write retain_grads.safetensors"})

    def tower_list(self) -> list[str]:
        from slug.layers import TOWERS

        towers = [t.strip() for t in self.towers.split(",") if t.strip()]
        bad = [t for t in towers if t not in TOWERS]
        if bad or not towers:
            raise LetheError(f"--towers {self.towers!r}: valid towers are {', '.join(TOWERS)}")
        return towers


def load_set(spec: str | None, flag: str, limit: int = 0):
    from slug.data import load_pairs

    if not spec:
        raise LetheError(f"--{flag} is required (a tar, parquet, image folder or toy:ROOT[:split])")
    split = load_pairs(spec)
    if limit and split.n_images > limit:
        split = split.subset(range(limit), name=split.name)
    return split


def compute(clip, forget, retain, args: GradArguments, progress: bool = True) -> tuple[dict, dict, dict]:
    """(forget gradients, retain gradients, stats) of the eligible tensors of the chosen towers."""
    from slug.grads import mean_gradient
    from slug.layers import eligible, tensor_stats, tower_of

    towers = args.tower_list()
    params = dict(clip.model.named_parameters())
    names = [n for n, p in params.items() if eligible(n, p.shape) and tower_of(n) in towers]
    if not names:
        raise LetheError(f"the model has no eligible tensors in towers {towers}")
    t0 = time.perf_counter()
    g_f, loss_f = mean_gradient(clip, forget, "forget", names, args.grad_batch_size, progress)
    g_r, loss_r = mean_gradient(clip, retain, "retain", names, args.grad_batch_size, progress)
    tensors = {n: {"tower": tower_of(n), "shape": list(params[n].shape),
                   **tensor_stats(params[n], g_f[n], g_r[n])} for n in names}
    from common.retrieval.metrics import model_fingerprint

    stats = {"convention": CONVENTION, "model_fingerprint": model_fingerprint(clip), "forget": {"set": forget.name, "pairs": forget.n_images, "loss": loss_f},
             "retain": {"set": retain.name, "pairs": retain.n_images, "loss": loss_r},
             "grad_batch_size": args.grad_batch_size, "towers": towers, "seconds": time.perf_counter() - t0,
             "tensors": tensors}
    return g_f, g_r, stats


def write(out: Path, g_f: dict, g_r: dict, stats: dict, save_retain: bool) -> None:
    from safetensors.torch import save_file

    from common.io import atomic_path, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "slug-grads-v1", "convention": CONVENTION}
    with atomic_path(out / "forget_grads.safetensors", suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in g_f.items()}, str(tmp), metadata=meta)
    if save_retain:
        with atomic_path(out / "retain_grads.safetensors", suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in g_r.items()}, str(tmp), metadata=meta)
    atomic_write_json(out / "stats.json", stats)


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import ModelArguments, parse_clip_args
    from common.checkpoint import run_provenance

    margs, args = parse_clip_args([ModelArguments, GradArguments], argv,
                                  "SLUG's gradients need a CLIP; for a VLM's vision tower give the CLIP it was built "
                                  "from (slug/unlearn.py --vlm)")
    args.tower_list()
    forget = load_set(args.forget, "forget", args.max_forget)
    retain = load_set(args.retain, "retain", args.max_retain)
    print(f"forget set: {forget.n_images} pairs ({args.forget}); retain set: {retain.n_images} pairs "
          f"({args.retain})", flush=True)
    clip = margs.load()
    g_f, g_r, stats = compute(clip, forget, retain, args)
    stats["provenance"] = run_provenance("slug-grads", {"model": margs, "grads": args})
    out = Path(args.grads_dir)
    write(out, g_f, g_r, stats, args.save_retain_grads)
    print(f"forget loss (mean cos) {stats['forget']['loss']:.4f}, retain loss {stats['retain']['loss']:.4f}; "
          f"{len(g_f)} tensors in {stats['seconds']:.1f} s -> {out}/forget_grads.safetensors, stats.json")
    return 0


if __name__ == "__main__":
    run_cli(main)
