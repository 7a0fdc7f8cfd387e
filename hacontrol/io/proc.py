"""Running a program in its own process group: a timeout, the whole group killed,
output captured, scrubbed of secrets and shortened by one rule.

Hooks (:mod:`hacontrol.io.hooks`) and node drivers (:mod:`hacontrol.io.drivers`)
both run their programs through :func:`run_program`; a program whose output goes
to a file instead (``pg_ctl start``) is waited for with :func:`wait_or_kill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hacontrol.redact import redact_text

# Keep program output in the journal short: enough to diagnose, never megabytes.
MAX_OUTPUT = 4000
# How long a killed group gets to be reaped before the result is returned anyway.
_REAP_S = 2.0


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """One finished program run (``returncode`` None: it never started)."""

    returncode: int | None
    output: str
    duration_s: float
    timed_out: bool = False


async def run_program(
    argv: Sequence[str] | None,
    *,
    timeout: float,
    shell_command: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    popen_kwargs: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> ProcessResult:
    """Run ``argv`` (or ``shell_command`` through /bin/sh) with output captured.

    The program runs in its own session; on timeout or cancellation its whole
    process group is killed, so a hung ssh cannot outlive its budget. The output
    is scrubbed of secrets (``secrets`` are masked verbatim too), then shortened
    to its last :data:`MAX_OUTPUT` characters (:func:`shorten`). ``env`` replaces
    the environment when given.
    """
    started = time.monotonic()
    common: dict[str, Any] = {
        "stdin": asyncio.subprocess.DEVNULL,
        "stdout": asyncio.subprocess.PIPE,
        "stderr": asyncio.subprocess.STDOUT,
        "env": dict(env) if env is not None else None,
        "cwd": cwd,
        "start_new_session": True,
        **(popen_kwargs or {}),
    }
    try:
        if shell_command is not None:
            proc = await asyncio.create_subprocess_shell(shell_command, **common)
        else:
            assert argv is not None
            proc = await asyncio.create_subprocess_exec(*argv, **common)
    except OSError as exc:
        text = scrub(f"cannot run: {exc}", secrets)
        return ProcessResult(None, text, time.monotonic() - started)
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REAP_S):
                await proc.communicate()
        return ProcessResult(
            proc.returncode, f"timed out after {timeout:g} s", time.monotonic() - started, True
        )
    except asyncio.CancelledError:
        kill_group(proc.pid)
        raise
    text = scrub(out.decode(errors="replace").strip(), secrets)
    return ProcessResult(proc.returncode, shorten(text), time.monotonic() - started)


async def wait_or_kill(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    """``proc``'s exit code, or None when it did not exit within ``timeout`` seconds;
    then (and on cancellation) its whole process group is killed."""
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REAP_S):
                await proc.wait()
        return None
    except asyncio.CancelledError:
        kill_group(proc.pid)
        raise


def shorten(text: str, limit: int = MAX_OUTPUT) -> str:
    """``text`` cut to its last ``limit`` characters, marked with a leading "…": the
    end of a failing program's output is what says why it failed."""
    return "…" + text[-limit:] if len(text) > limit else text


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with known secret values and anything that looks like one masked."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_text(text)


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a program started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def last_line(text: str) -> str:
    """The last non-empty line of program output (the usual error message)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
