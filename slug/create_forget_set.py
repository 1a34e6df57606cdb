"""Build SLUG's forget set: the image–caption pairs whose caption names a concept, as a webdataset tar.

    python slug/create_forget_set.py --name Elon_Musk --source 'data/laion/laion400m/{00000..09539}.tar'
    python slug/create_forget_set.py --name kite --source toy:dataset/toy --exclude_out data/tar_files/retain.tar

``--source``: webdataset tar shards (a path or a brace pattern), img2dataset ``*.parquet``, an image folder (same-stem
``.txt`` captions or a ``captions.jsonl``), or ``toy:ROOT[:SPLIT]`` (see ``slug/data.py``). The concept matches
whole words, case-insensitively, ``_`` and spaces alike. The scan stops at ``--n_imgs`` matches (0: read the whole
source). ``--exclude_out`` also writes up to ``--n_retain`` pairs that did not match, as a retain set (the scan then
goes on until both are full). ``{name}`` in ``--out``/``--exclude_out`` is the concept, spaces made ``_``.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common.errors import LetheError, cli_main, run_cli


@dataclass
class ForgetSetArguments:
    # required, checked after parsing (a mistyped flag is then named as such, with the closest valid one)
    name: Optional[str] = field(default=None, metadata={
        "help": "the concept (a name, an object): Elon_Musk, 'Taylor Swift', kite (required)"})
    source: Optional[str] = field(default=None, metadata={
        "help": "tar shards (path or brace pattern), *.parquet, an image folder, or toy:ROOT[:SPLIT] (required)"})
    n_imgs: int = field(default=500, metadata={"help": "stop at this many matches (0: no cap)"})
    out: str = field(default="data/tar_files/{name}.tar", metadata={"help": "the forget-set tar"})
    exclude_out: Optional[str] = field(default=None, metadata={
        "help": "also write pairs that do not match here, as a retain-set tar"})
    n_retain: int = field(default=1000, metadata={"help": "at most this many pairs in --exclude_out"})


def _out_path(template: str, name: str) -> Path:
    return Path(template.replace("{name}", re.sub(r"[\s/\\]+", "_", name.strip())))


@cli_main
def main(argv: list[str] | None = None) -> int:
    from common.args import parse_args
    from slug.data import concept_pattern, iter_source, select, write_tar

    (a,) = parse_args([ForgetSetArguments], argv)
    missing = [f"--{k}" for k in ("name", "source") if getattr(a, k) is None]
    if missing:
        raise LetheError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    pattern = concept_pattern(a.name)
    if a.n_imgs < 0:
        raise LetheError(f"--n_imgs must be 0 (no cap) or positive, got {a.n_imgs}")
    if a.exclude_out and a.n_retain < 1:
        raise LetheError(f"--n_retain must be at least 1, got {a.n_retain}")
    out = _out_path(a.out, a.name)
    retain_out = _out_path(a.exclude_out, a.name) if a.exclude_out else None
    if retain_out is not None and retain_out.resolve() == out.resolve():
        raise LetheError(f"--exclude_out and --out are the same file ({out})")

    pairs = iter_source(a.source, pattern)
    sel = select(pairs, pattern, cap=a.n_imgs or None, keep_rest=a.n_retain if retain_out else 0)
    if not sel.matched:
        raise LetheError(f"no caption in {a.source} matches {a.name!r} (scanned {sel.scanned} samples)")
    if retain_out is not None and not sel.rest:
        raise LetheError(f"every caption scanned in {a.source} matches {a.name!r} (scanned {sel.scanned} samples): "
                         f"no pair for --exclude_out")
    stop = "" if sel.exhausted else f", stopped at --n_imgs {a.n_imgs}" + (f" and --n_retain {a.n_retain}"
                                                                          if retain_out else "")
    print(f"scanned {sel.scanned} samples in {a.source}: {len(sel.matched)} match {a.name!r}{stop}")
    write_tar(sel.matched, out)
    print(f"wrote {len(sel.matched)} pairs -> {out}")
    if retain_out is not None:
        write_tar(sel.rest, retain_out)
        print(f"wrote {len(sel.rest)} non-matching pairs -> {retain_out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
