"""Running operator hook commands (fence, pre-promote, role change) with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

# Keep hook output in the journal short: enough to diagnose, never megabytes.
MAX_OUTPUT = 4000


@dataclass(frozen=True, slots=True)
class HookResult:
    """Outcome of one hook run."""

    ok: bool
    returncode: int | None
    output: str
    duration_s: float
    timed_out: bool = False


async def run_hook(
    command: str, env: Mapping[str, str], timeout: float, *, cwd: str | None = None
) -> HookResult:
    """Run ``command`` through the shell with ``env`` added to the environment.

    The command runs in its own process group; on timeout the whole group is
    killed, so a hung ssh or script cannot outlive its budget.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
        cwd=cwd,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        _kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await proc.wait()
        return HookResult(
            False, proc.returncode, f"timed out after {timeout:g} s", time.monotonic() - started,
            timed_out=True,
        )
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    text = out.decode(errors="replace")
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + "…"
    return HookResult(proc.returncode == 0, proc.returncode, text, time.monotonic() - started)


def _kill_group(pid: int) -> None:
    # The hook is the leader of its own session, so its group id is its PID.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
