"""Running operator hook commands (fence, pre-promote, role change) with a timeout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hacontrol.io.proc import run_program


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
    killed, so a hung ssh or script cannot outlive its budget. Its output is
    redacted and, when long, cut to its end (:func:`hacontrol.io.proc.run_program`).
    """
    result = await run_program(
        None, shell_command=command, timeout=timeout, env={**os.environ, **env}, cwd=cwd
    )
    return HookResult(
        result.returncode == 0 and not result.timed_out, result.returncode, result.output,
        result.duration_s, timed_out=result.timed_out,
    )
