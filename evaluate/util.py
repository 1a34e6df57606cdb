"""What the evaluation CLIs share beyond ``common.io``: the answer-file reader and the one table printer."""
from __future__ import annotations

import os
from typing import Any, Sequence

from common.errors import LetheError
from common.io import iter_jsonl_numbered

PathLike = str | os.PathLike


def read_answers(path: PathLike, id_key: str = "question_id", last_wins: bool = False) -> dict[str, dict[str, Any]]:
    """An answers jsonl (LLaVA format: ``question_id``, ``text``, ...) keyed by ``str(id)``.

    A line without the id or ``text`` raises naming the line; so does a second answer for an id unless
    ``last_wins`` (what a scorer that builds a dict from the file does)."""
    out: dict[str, dict[str, Any]] = {}
    for lineno, row in iter_jsonl_numbered(path):
        if id_key not in row or "text" not in row:
            raise LetheError(f"{path}:{lineno}: an answer needs {id_key!r} and 'text'")
        key = str(row[id_key])
        if key in out and not last_wins:
            raise LetheError(f"{path}:{lineno}: second answer for {id_key} {row[id_key]!r}")
        out[key] = row
    return out


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None,
                 float_fmt: str = "{:.4f}") -> str:
    """A plain, aligned text table (floats with ``float_fmt``)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return float_fmt.format(v)
        return "" if v is None else str(v)

    body = [[cell(v) for v in r] for r in rows]
    all_rows = ([list(headers)] if headers else []) + body
    if not all_rows:
        return ""
    ncol = max(len(r) for r in all_rows)
    all_rows = [r + [""] * (ncol - len(r)) for r in all_rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(ncol)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in all_rows]
    if headers:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None, title: str | None = None,
                float_fmt: str = "{:.4f}") -> None:
    if title:
        print(title)
    print(format_table(rows, headers, float_fmt))
