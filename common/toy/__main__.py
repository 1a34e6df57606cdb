"""``python -m common.toy <subcommand> ...``

Each subcommand is one function decorated with ``@subcommand``: it receives its own ``argparse`` parser to fill
with flags and returns the function that runs it (taking the parsed namespace). To add one (e.g. ``pretrain``),
write such a function below; import heavy modules (torch, ...) inside the runner so that ``generate`` stays fast.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

from common.errors import LetheError, cli_main, run_cli

Runner = Callable[[argparse.Namespace], "int | None"]
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Runner]]] = {}


def subcommand(name: str, help: str):
    def register(fn: Callable[[argparse.ArgumentParser], Runner]):
        SUBCOMMANDS[name] = (help, fn)
        return fn
    return register


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """"cup:bottle,ball:kite" -> (("cup", "bottle"), ("ball", "kite")); "" -> ()"""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        a, sep, b = item.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"bias pair {item!r} is not of the form A:B")
        out.append((a.strip(), b.strip()))
    return tuple(out)


@subcommand("generate", help="write the toy world dataset (COCO format + benchmark layouts)")
def generate(p: argparse.ArgumentParser) -> Runner:
    from dataclasses import fields

    from common.toy.world import WorldConfig

    defaults = WorldConfig()
    p.add_argument("--out", default="dataset/toy", help="output directory (default: dataset/toy)")
    for f in fields(WorldConfig):
        value = getattr(defaults, f.name)
        if f.name == "bias_pairs":
            p.add_argument("--bias_pairs", type=_pairs, default=value,
                           help="A:B pairs, comma-separated (default: %s)"
                                % ",".join(f"{a}:{b}" for a, b in value))
        else:
            p.add_argument(f"--{f.name}", type=type(value), default=value, help=f"(default: {value})")

    def run(args: argparse.Namespace) -> None:
        from common.toy.world import generate as generate_world

        cfg_args = {f.name: getattr(args, f.name) for f in fields(WorldConfig)}
        try:
            cfg = WorldConfig(**cfg_args)
        except ValueError as e:
            raise LetheError(str(e)) from None
        t0 = time.perf_counter()
        generate_world(args.out, cfg)
        print(f"done in {time.perf_counter() - t0:.1f} s")

    return run


@subcommand("pretrain", help="train the toy CLIP and LLaVA on CPU (cached), print and write OUT/metrics.json")
def pretrain(p: argparse.ArgumentParser) -> Runner:
    from common.toy.pretrain import add_arguments

    add_arguments(p)

    def run(args: argparse.Namespace) -> None:
        from dataclasses import fields
        from pathlib import Path

        from common.toy.pretrain import PretrainConfig, pretrain as run_pretrain

        cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
        if not (Path(cfg.data) / "manifest.json").is_file():
            if not args.generate_if_missing:
                raise LetheError(f"{cfg.data}: no toy world here (run python -m common.toy generate)")
            from common.toy.world import WorldConfig, generate as generate_world

            generate_world(cfg.data, WorldConfig(seed=cfg.seed))
        run_pretrain(cfg, force=args.force)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common.toy",
                                     description="The toy world: synthetic data (and tiny models trained on it).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, fn) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_run=fn(p))
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int | None:
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    run_cli(main)
