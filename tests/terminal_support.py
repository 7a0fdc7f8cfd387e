"""Running a command on a real pseudo-terminal, for tests of what a person sees."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping


def on_terminal(
    command: list[str],
    answer: bytes,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run ``command`` with a terminal as stdin and stderr, ``answer`` typed into it;
    (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    shown = b""
    try:
        proc = subprocess.Popen(
            command, stdin=slave, stdout=subprocess.PIPE, stderr=slave,
            env=dict(env) if env is not None else None,
        )
        os.close(slave)
        slave = -1
        os.write(master, answer)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # every end of the terminal is closed: the command ended
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        try:
            out = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        return proc.returncode, out.decode(errors="replace"), shown.decode(errors="replace")
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
