"""What every benchmark shares: a fixed thread count, CPU and wall time of each side, and one machine-readable line.

Each benchmark ends with ``RESULT {"bench": ..., "ratio": ..., "identical": ..., "threads": ..., ...}`` (json on one
line), the ratio being the original side's median CPU time over ours unless the benchmark says otherwise.
"""
from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field


def fix_threads(n: int) -> int:
    """Set torch's intra-op thread count (0: leave it) and return the count in force: a benchmark's ratio swings
    several-fold on a busy machine when the count is left to chance."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


@dataclass
class Timings:
    """CPU and wall seconds of every run of each side."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)

    @contextmanager
    def measure(self, side: str):
        c, w = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu.setdefault(side, []).append(time.process_time() - c)
            self.wall.setdefault(side, []).append(time.perf_counter() - w)

    def median(self, side: str, kind: str = "cpu") -> float:
        return statistics.median((self.cpu if kind == "cpu" else self.wall)[side])

    def ratio(self, slow: str = "original", fast: str = "ours", kind: str = "cpu") -> float:
        f = self.median(fast, kind)
        return self.median(slow, kind) / f if f > 0 else float("inf")

    def line(self, slow: str = "original", fast: str = "ours") -> str:
        runs = len(self.cpu[slow])
        return (f"{slow} {self.median(slow):.3f} CPU s / {self.median(slow, 'wall'):.3f} wall s; {fast} "
                f"{self.median(fast):.3f} CPU s / {self.median(fast, 'wall'):.3f} wall s (medians of {runs} run(s)); "
                f"ratio {self.ratio(slow, fast):.2f}x CPU, {self.ratio(slow, fast, 'wall'):.2f}x wall")


def result(bench: str, ratio: float, identical: bool, threads: int, **extra) -> dict:
    """Print the benchmark's ``RESULT {...}`` line and return its dict."""
    row = {"bench": bench, "ratio": round(float(ratio), 4), "identical": bool(identical), "threads": int(threads),
           **extra}
    print("RESULT " + json.dumps(row, sort_keys=False, default=float), flush=True)
    return row
