"""Process-tree helpers over /proc: find, signal and wait for PIDs.

PostgreSQL puts children in their own process groups, so nothing here signals a
group: every PID is signalled by itself. A zombie counts as dead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return raw[raw.rindex(")") + 2 :].split()


def state(pid: int) -> str | None:
    """The one-letter state (R, S, T, Z ...) of ``pid``, or None if it does not exist."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    st = state(pid)
    return st is not None and st not in ("Z", "X")


def parent(pid: int) -> int | None:
    """The parent PID of ``pid``."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def all_pids() -> list[int]:
    """Every PID on the machine."""
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def children(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren ...)."""
    by_parent: dict[int, list[int]] = {}
    for p in all_pids():
        ppid = parent(p)
        if ppid is not None and alive(p):
            by_parent.setdefault(ppid, []).append(p)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cwd(pid: int) -> str | None:
    """The working directory of ``pid`` (a postmaster's is its data directory)."""
    try:
        return os.readlink(PROC / str(pid) / "cwd")
    except OSError:
        return None


def is_postgres(pid: int) -> bool:
    """True when ``pid`` runs the postgres server binary."""
    try:
        exe = os.readlink(PROC / str(pid) / "exe")
        return os.path.basename(exe).split(" ")[0] in ("postgres", "postmaster")
    except OSError:
        pass
    try:
        cmd = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(cmd).startswith(("postgres", "postmaster"))


def postgres_under(root: str | Path) -> list[int]:
    """Live postgres processes whose working directory is ``root`` or below it."""
    prefix = os.path.realpath(root).rstrip("/") + "/"
    found = []
    for p in all_pids():
        if p == os.getpid():
            continue
        where = cwd(p)
        if where is None or not (where + "/").startswith(prefix):
            continue
        if alive(p) and is_postgres(p):
            found.append(p)
    return found


def send(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to every PID that still exists."""
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def wait_gone(pids: Iterable[int], timeout: float, interval: float = 0.01) -> list[int]:
    """Wait until none of ``pids`` is alive; returns those still alive at the timeout."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        _reap_own_children(pending)
        pending = [p for p in pending if alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(interval)


def _reap_own_children(pids: Iterable[int]) -> None:
    # A postmaster we started is our child: collect it so it does not stay a zombie.
    for p in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, os.WNOHANG)


def wait_stopped(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is stopped by a signal (state T) or gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = state(pid)
        if st is None or st in ("T", "t", "Z"):
            return True
        time.sleep(0.002)
    return False


def kill_tree(pid: int, timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pid`` and every descendant, as a host death would; returns the PIDs
    killed. The parent is stopped first so it cannot fork while we list its children."""
    if not alive(pid):
        return []
    send([pid], signal.SIGSTOP)
    wait_stopped(pid, 1.0)
    victims = [pid, *children(pid)]
    send(victims, signal.SIGKILL)
    left = wait_gone(victims, timeout)
    if left:
        raise RuntimeError(f"processes survived SIGKILL: {left}")
    return victims
