"""A dead man's switch for test harnesses: a cleanup that runs if this process dies.

A small shell reads its stdin; when the pipe closes — a normal stop, or this process
killed by SIGKILL or leaving by ``os._exit`` — its script goes on and cleans up what
the harness left (servers, containers, namespaces). Each script decides from a state
file or from what it read whether there is anything left to do.
"""

from __future__ import annotations

import contextlib
import subprocess

__all__ = ["DeadManSwitch"]


class DeadManSwitch:
    """A shell running ``script`` with ``args`` ($1, $2, …), fed lines on its stdin."""

    def __init__(self, script: str, *args: str) -> None:
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to the test's process group spares it
        )

    def say(self, line: str) -> None:
        """Send the script one line (it may be gone already: nothing is raised)."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.flush()

    def release(self, *, last: str | None = None, wait_s: float = 5.0) -> None:
        """Close the pipe (after ``last``, if given) and wait for the shell; killed by
        PID if it does not end within ``wait_s``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                if last is not None:
                    proc.stdin.write(last.encode() + b"\n")
                proc.stdin.close()
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
