"""What STIC's two generation scripts share: the image list, per-image seeding, sampling flags, and the resumable
batch loop (one fsync'ed jsonl line per finished image; a re-run skips finished images and cuts a torn last line).
"""
from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from common.errors import LetheError
from common.io import append_jsonl, load_done_ids, repair_jsonl_tail
from evaluate.runner import IMAGE_SUFFIXES, accepts_keyword


@dataclass
class SamplingArguments:
    """STIC's decoding (the original scripts' defaults): sampling at T=0.2, no top-p, up to 1024 new tokens."""
    temperature: float = field(default=0.2, metadata={"help": "sampling temperature; 0 means greedy decoding"})
    top_p: Optional[float] = field(default=None, metadata={"help": "nucleus sampling; default: none (top_p=None)"})
    max_new_tokens: int = field(default=1024)
    batch_size: int = field(default=8, metadata={"help": "images per generation batch (one jsonl write each)"})
    seed: int = field(default=0, metadata={
        "help": "seeds the per-image choices (with the image name) and torch's sampling (per batch)"})
    max_images: Optional[int] = field(default=None, metadata={"help": "only the first N images (sorted order)"})

    def check(self) -> None:
        if self.batch_size < 1:
            raise LetheError("--batch_size must be >= 1")
        if self.max_new_tokens < 1:
            raise LetheError("--max_new_tokens must be >= 1")
        if self.temperature < 0:
            raise LetheError("--temperature must be >= 0 (0: greedy)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise LetheError("--top_p must be in (0, 1]")
        if self.max_images is not None and self.max_images < 0:
            raise LetheError("--max_images must be >= 0")


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed that depends only on ``seed`` and ``parts`` (stable across runs and Python processes)."""
    key = "\x00".join([str(seed), *map(str, parts)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def image_rng(seed: int, name: str, salt: str = "") -> random.Random:
    """The random stream of one image: its choices depend on (seed, image name) only, never on the order the images
    are processed in, so a resumed run makes the same choices."""
    return random.Random(derive_seed(seed, salt, name))


def list_images(image_dir: str | Path, max_images: int | None = None) -> list[str]:
    """Image files under ``image_dir`` (recursively, hidden entries skipped) as sorted paths relative to it."""
    root = Path(image_dir)
    if not root.is_dir():
        raise LetheError(f"{root}: image folder not found")
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not names:
        raise LetheError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return names if max_images is None else names[:max_images]


def output_path(save: str | Path, default_name: str) -> Path:
    """``save`` is the output jsonl; an existing folder gets ``default_name`` inside it (the original's
    ``--save-dir`` took either)."""
    p = Path(save)
    return p / default_name if p.is_dir() else p


def pending(names: Sequence[str], save_path: Path, key: str = "image") -> list[str]:
    """The names not yet in ``save_path``, in order; a torn last line (a killed writer) is cut first."""
    repair_jsonl_tail(save_path)
    done = load_done_ids(save_path, key)
    return [n for n in names if n not in done]


def generate(vlm: Any, images: list, prompts: list[str], args: SamplingArguments) -> list[str]:
    """One ``vlm.generate`` call with STIC's decoding, in model batches of ``args.batch_size`` when the model takes a
    batch size (a ``top_p`` of None is passed as 1.0, i.e. no nucleus filtering, as the original's None was)."""
    kw: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if args.temperature > 0:
        kw.update(do_sample=True, temperature=args.temperature, top_p=1.0 if args.top_p is None else args.top_p)
    else:
        kw.update(do_sample=False)
    if accepts_keyword(vlm.generate, "batch_size"):
        kw["batch_size"] = args.batch_size
    out = vlm.generate(images, prompts, **kw)
    if not isinstance(out, (list, tuple)) or len(out) != len(prompts):
        raise RuntimeError(f"generate returned {type(out).__name__} of length "
                           f"{len(out) if hasattr(out, '__len__') else '?'} for {len(prompts)} prompts")
    return [str(t) for t in out]


def run_batches(todo: Sequence[str], save_path: Path, batch_size: int, seed: int,
                make_records: Callable[[list[str]], list[dict]], total: int | None = None,
                desc: str = "generate") -> int:
    """Call ``make_records`` on batches of ``todo`` and append each batch's records (fsync'ed) to ``save_path``.

    torch is seeded before each batch from (seed, the batch's first name), so the same run (same seed and batch
    size) samples the same text. An exception (a bad image) leaves every earlier batch in the file. Returns the
    number of images written."""
    import torch
    from tqdm.auto import tqdm

    total = len(todo) if total is None else total
    written = 0
    with tqdm(total=total, initial=total - len(todo), desc=desc, unit="img", file=sys.stderr) as bar:
        for start in range(0, len(todo), batch_size):
            batch = list(todo[start:start + batch_size])
            torch.manual_seed(derive_seed(seed, "torch", batch[0]))
            records = make_records(batch)
            append_jsonl(save_path, records)
            written += len(records)
            bar.update(len(batch))
    return written


def generate_missing(margs, names: Sequence[str], save: Path, image_dir: str | Path, sargs: SamplingArguments,
                     make_records: Callable[[Any, Path, list[str], SamplingArguments], list[dict]],
                     desc: str, verb: str) -> int:
    """The generation scripts' run: load the model only if some image is still to do, generate the missing ones in
    batches (``run_batches``), and say how many were done now and before."""
    todo = pending(names, save)
    if todo:
        vlm = margs.load()
        if not hasattr(vlm, "generate"):
            raise LetheError(f"--model {margs.model} does not generate text; use a vision-language family")
        root = Path(image_dir)
        run_batches(todo, save, sargs.batch_size, sargs.seed, lambda batch: make_records(vlm, root, batch, sargs),
                    total=len(names), desc=desc)
    print(f"{save}: {len(names)} images, {len(todo)} {verb} now, {len(names) - len(todo)} already done")
    return 0
