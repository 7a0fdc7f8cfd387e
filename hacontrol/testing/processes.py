"""Process helpers: the PID tree over /proc (find, signal and wait for PIDs), and
child processes of a test or check (the controller above all) stopped by their PID.

PostgreSQL puts children in their own process groups, so nothing here signals a
group: every PID is signalled by itself. A zombie counts as dead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

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


# -- child processes stopped by PID


class ChildProcess:
    """A program run as a child, signalled by its PID only; stdout to ``log``, stderr
    to ``stderr`` (default: ``log`` as well), both appended. As a context manager it
    is started on entry and stopped (SIGTERM, then SIGKILL after ``stop_timeout``
    seconds) on exit, also on failure."""

    def __init__(
        self, argv: Sequence[str], log: Path, *, stderr: Path | None = None,
        stop_timeout: float = 20.0,
    ) -> None:
        self.argv = list(argv)
        self.stop_timeout = stop_timeout
        self.stdout_path = log
        self.stderr_path = stderr if stderr is not None else log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.started_wall: float | None = None

    def start(self) -> Self:
        """Start the program (again, after it was stopped or killed)."""
        with contextlib.ExitStack() as files:
            out = files.enter_context(self.stdout_path.open("ab"))
            err = out if self.stderr_path == self.stdout_path else files.enter_context(
                self.stderr_path.open("ab"))
            self.started_at = time.monotonic()
            self.started_wall = time.time()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The running child's PID (None when it is not running)."""
        return self.proc.pid if self.alive() and self.proc is not None else None

    def alive(self) -> bool:
        """Started and not exited yet."""
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        """The exit status once the child has exited (None while it runs)."""
        return self.proc.poll() if self.proc is not None else None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child while it runs."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (no chance to clean up), and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in ``timeout`` seconds
        (default: ``stop_timeout``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once it exited within ``timeout``; None while still running."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_http(self, url: str, timeout: float) -> bool:
        """Wait until GET ``url`` answers 200 (True), the child exits or ``timeout``
        passes (False)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            try:
                with opener.open(url, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        return False

    def stderr(self) -> str:
        """Everything the child wrote to stderr so far."""
        path = self.stderr_path
        return path.read_text(errors="replace") if path.exists() else ""

    def output_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of its stderr and stdout."""
        text = self.stderr()
        if self.stdout_path != self.stderr_path and self.stdout_path.exists():
            text += self.stdout_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class ControllerProcess(ChildProcess):
    """``python -m hacontrol run --config CONFIG --json-logs`` as a :class:`ChildProcess`."""

    def __init__(
        self, config: Path, log: Path, *, stderr: Path | None = None,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            [sys.executable, "-m", "hacontrol", "run", "--config", str(config), "--json-logs"],
            log, stderr=stderr, stop_timeout=stop_timeout,
        )
        self.config = config

    def api_base(self) -> str:
        """``http://host:port`` of the API the configuration enables."""
        with self.config.open("rb") as f:
            listen = tomllib.load(f)["api"]["listen"]
        return f"http://{listen}"

    def wait_api(self, path: str = "/health", timeout: float = 60.0) -> bool:
        """Wait until the controller's API answers ``path`` with 200 (False: it exited,
        or did not within ``timeout`` seconds)."""
        return self.wait_http(self.api_base() + path, timeout)
