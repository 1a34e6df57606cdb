"""Launching a CLI under ``torchrun`` in the multi-process tests (gloo on CPU)."""
from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    """A TCP port nothing listens on now (a fixed or pid-derived port can collide with another test or job)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(procs: int) -> list[str]:
    """The command prefix that runs a script in ``procs`` processes (plain python for 1)."""
    if procs == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def run(procs: int, script, args: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` in ``procs`` processes; on failure the assertion shows the ranks' own errors
    (torchrun's summary at the end of stderr hides them)."""
    r = subprocess.run([*launcher(procs), str(script), *args], capture_output=True, text=True, timeout=600, **kw)
    if r.returncode != 0:
        lines = r.stderr.splitlines()
        own = [ln for ln in lines if "error" in ln.lower() or "terminate" in ln or "Exception" in ln]
        raise AssertionError(f"{script} in {procs} process(es) exited {r.returncode}:\n"
                             + "\n".join(own[:40]) + "\n--- stderr tail ---\n" + "\n".join(lines[-30:]))
    return r
