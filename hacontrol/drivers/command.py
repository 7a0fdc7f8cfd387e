"""The ``command`` driver: operator templates per step (ssh, systemctl, scripts).

Each template runs through /bin/sh in its own session with its step's timeout;
its output (tail, redacted) goes into the result for the journal. Placeholder
values are shell-quoted, so a DSN with spaces stays one argument.
"""

from __future__ import annotations

import os
import shlex
import string
from dataclasses import replace
from typing import Any

from hacontrol.drivers.base import (
    STOP_MODES,
    DriverResult,
    NodeDriver,
    Step,
    last_line,
    not_possible,
    run_process,
)
from hacontrol.drivers.config import CommandDriverConfig
from hacontrol.redact import dsn_password, redact_text

# pg_ctl status and systemctl is-active both exit 3 for "not running".
STATUS_STOPPED = 3


class _QuotingFormatter(string.Formatter):
    """``{x}``: quoted for the local shell; ``{x:ssh}``: quoted again for a remote one."""

    def format_field(self, value: Any, format_spec: str) -> str:
        quoted = shlex.quote(str(value))
        return shlex.quote(quoted) if format_spec == "ssh" else quoted


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with placeholders replaced by shell-quoted ``values``."""
    return _QuotingFormatter().vformat(template, (), values)


class CommandDriver(NodeDriver):
    """Runs the configured template for each step; steps without one are not possible."""

    def __init__(self, cfg: CommandDriverConfig, node: str) -> None:
        self.cfg = cfg
        self.node = node
        steps = {
            Step.STOP: cfg.stop,
            Step.START: cfg.start,
            Step.STATUS: cfg.status,
            Step.REWIND: cfg.rewind,
            Step.BASEBACKUP: cfg.basebackup,
            Step.STANDBY_CONFIG: cfg.standby_config,
            Step.FENCE: cfg.fence,
        }
        self.templates = {step: t for step, t in steps.items() if t}
        self.capabilities = frozenset(self.templates)

    def describe(self) -> str:
        return f"command driver ({', '.join(sorted(self.capabilities)) or 'no steps'})"

    async def _run(
        self, step: Step, *, timeout: float | None = None, **values: str
    ) -> DriverResult:
        template = self.templates.get(step)
        if template is None:
            return not_possible(step, f"no {step} command configured for {self.node}")
        env_values = {"node": self.node, "data_dir": self.cfg.data_dir, **values}
        command = render(template, {k: env_values.get(k, "") for k in _placeholders(template)})
        secrets = [p for v in values.values() if (p := dsn_password(v) if "=" in v else None)]
        # The values also travel as environment variables, for scripts that prefer them.
        env = {
            **os.environ,
            "HACONTROL_STEP": str(step),
            **{f"HACONTROL_{k.upper()}": v for k, v in env_values.items()},
        }
        proc = await run_process(
            None,
            shell_command=command,
            timeout=timeout or self.cfg.timeout,
            env=env,
            secrets=secrets,
        )
        shown = redact_text(_mask(command, secrets))
        if proc.timed_out:
            detail = f"`{shown}` timed out after {timeout or self.cfg.timeout:g} s"
            return DriverResult(str(step), False, detail, proc.output, proc.duration_s,
                                timed_out=True)
        if proc.returncode is None:
            return DriverResult(str(step), False, f"`{shown}`: {proc.output}",
                                duration_s=proc.duration_s)
        ok = proc.returncode == 0
        detail = f"`{shown}` exited with {proc.returncode}"
        if not ok and last_line(proc.output):
            detail += f": {last_line(proc.output)}"
        return DriverResult(
            str(step), ok, detail, proc.output, proc.duration_s, returncode=proc.returncode
        )

    async def stop(self, mode: str = "fast") -> DriverResult:
        if mode not in STOP_MODES:
            return DriverResult(str(Step.STOP), False, f"unknown stop mode {mode!r}")
        return await self._run(Step.STOP, mode=mode)

    async def start(self) -> DriverResult:
        return await self._run(Step.START)

    async def status(self) -> DriverResult:
        result = await self._run(Step.STATUS)
        if not result.possible or result.timed_out:
            return result
        if result.ok:
            return _with(result, running=True, detail="running")
        if result.returncode == STATUS_STOPPED:
            return _with(result, ok=True, running=False, detail="stopped")
        return result

    async def rewind(self, source_dsn: str) -> DriverResult:
        return await self._run(Step.REWIND, source_dsn=source_dsn)

    async def basebackup(self, source_dsn: str) -> DriverResult:
        return await self._run(
            Step.BASEBACKUP, timeout=self.cfg.basebackup_timeout, source_dsn=source_dsn
        )

    async def write_standby_config(self, primary_conninfo: str) -> DriverResult:
        return await self._run(Step.STANDBY_CONFIG, primary_conninfo=primary_conninfo)

    async def fence(self) -> DriverResult:
        return await self._run(Step.FENCE)


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _mask(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _with(result: DriverResult, **changes: Any) -> DriverResult:
    return replace(result, **changes)
