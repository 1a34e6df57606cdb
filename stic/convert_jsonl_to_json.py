"""STIC step 1.1: the preference jsonl of ``generate_pref.py`` → one JSON list (what DPO training reads).

    python stic/convert_jsonl_to_json.py --input pref_data_mscoco.jsonl [--output pref_data_mscoco.json]

The output defaults to the input with a ``.json`` suffix and is written atomically. A line that is not a JSON
object, or lacks ``chosen``/``rejected`` lists, stops it with one ``error:`` line naming the file and line.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file: import from the repo root, never from this script's folder
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401, E702

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from common.args import parse_args
from common.errors import LetheError, cli_main, run_cli
from common.io import atomic_write_json, iter_jsonl_numbered


@dataclass
class ConvertArguments:
    input: Optional[str] = field(default=None, metadata={"help": "preference jsonl (generate_pref.py output)"})
    output: Optional[str] = field(default=None, metadata={"help": "JSON list to write (default: INPUT with .json)"})


def read_preferences(path: str | Path) -> list[dict]:
    rows = []
    for lineno, row in iter_jsonl_numbered(path):  # a malformed line raises naming file:line
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), list):
                what = "no" if key not in row else "a non-list"
                raise LetheError(f"{path}:{lineno}: {what} {key!r} field (a preference record needs 'chosen' and "
                                 f"'rejected' conversations)")
        rows.append(row)
    return rows


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args([ConvertArguments], argv)
    if not args.input:
        raise LetheError("--input is required")
    src = Path(args.input)
    dst = Path(args.output) if args.output else src.with_suffix(".json")
    if dst.resolve() == src.resolve():
        raise LetheError(f"{dst}: --output would overwrite --input")
    rows = read_preferences(src)
    atomic_write_json(dst, rows)
    print(f"{dst}: {len(rows)} preference pairs")
    return 0


if __name__ == "__main__":
    run_cli(main)
