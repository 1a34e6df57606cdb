"""User-facing errors and the CLI wrapper that turns them into one clear line."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class LetheError(ValueError):
    """An error caused by user input (a path, a flag, a file's content).

    CLIs print ``error: <message>`` on one line and exit with status 2 instead of a traceback.
    """


def cli_main(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a CLI ``main(argv=None)``: user errors become one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = fn(*args, **kwargs)
        except LetheError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0 if rc is None else int(rc)

    return wrapper


def run_cli(main: Callable[..., int]) -> None:
    """``if __name__ == "__main__": run_cli(main)``."""
    sys.exit(main())
