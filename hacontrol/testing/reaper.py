"""Last-resort cleanup of a test cluster whose harness died without tearing it down.

Run by the cluster's watchdog as ``python -m hacontrol.testing.reaper BASE_DIR``:
stops every postgres process working in BASE_DIR (by PID, found via /proc) and
removes the directory.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from hacontrol.testing import processes
from hacontrol.testing.sysv import remove_stale_segment


def reap(base: Path) -> list[int]:
    """Stop every postgres process under ``base`` and remove it; returns the PIDs."""
    pids = processes.postgres_under(base)
    processes.send(pids, signal.SIGCONT)
    processes.send(pids, signal.SIGQUIT)
    left = processes.wait_gone(pids, 10.0)
    stray = [*left, *processes.postgres_under(base)]
    processes.send(stray, signal.SIGKILL)
    processes.wait_gone(stray, 10.0)
    for pidfile in base.glob("*/postmaster.pid"):
        remove_stale_segment(pidfile.parent)
    shutil.rmtree(base, ignore_errors=True)
    return pids


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m hacontrol.testing.reaper BASE_DIR", file=sys.stderr)
        return 2
    reap(Path(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
