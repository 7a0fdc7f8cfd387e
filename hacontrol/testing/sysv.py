"""Removing the small SysV shared-memory segment a SIGKILLed postmaster leaves behind.

A postmaster that dies by SIGKILL cannot remove its interlock segment; a restart of
the same data directory would reuse it, but a test cluster that is torn down
afterwards would leak one segment per kill until the system limit is reached.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from pathlib import Path

IPC_RMID = 0


def _segment_from_pidfile(pidfile: Path) -> tuple[int, int] | None:
    try:
        lines = pidfile.read_text().splitlines()
    except OSError:
        return None
    # Line 7 of postmaster.pid: "<shmem key> <shmid>".
    if len(lines) < 7:
        return None
    parts = lines[6].split()
    if len(parts) != 2:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


def _attached(key: int, shmid: int) -> int | None:
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        cols = row.split()
        # key shmid perms size cpid lpid nattch ...
        if len(cols) > 6 and int(cols[0]) == key and int(cols[1]) == shmid:
            return int(cols[6])
    return None


def remove_stale_segment(data_dir: Path) -> bool:
    """Remove the segment named in ``data_dir``'s postmaster.pid when it still exists
    with that key and nothing is attached. Call only when the postmaster is gone."""
    seg = _segment_from_pidfile(data_dir / "postmaster.pid")
    if seg is None or _attached(*seg) != 0:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    with contextlib.suppress(OSError):
        return bool(libc.shmctl(ctypes.c_int(seg[1]), IPC_RMID, None) == 0)
    return False
