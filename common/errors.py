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
    """``if __name__ == "__main__": run_cli(main)``.

    Under ``torchrun`` the process group is closed after a barrier before the process exits: a rank that leaves
    while another still holds gloo/NCCL connections can make that one abort (SIGABRT) at teardown."""
    rc = main()
    close_process_group()
    sys.exit(rc)


def close_process_group() -> None:
    """Barrier + ``destroy_process_group`` when a torch.distributed group is up (a no-op otherwise)."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
