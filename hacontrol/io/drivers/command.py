"""The ``command`` driver: operator templates per step (ssh, systemctl, scripts).

Each template runs through /bin/sh in its own session with its step's timeout;
its output (tail, redacted) goes into the result for the journal. Placeholder
values are shell-quoted, so a DSN with spaces stays one argument.

With an ``identity`` template, every stop, start, rewind, base backup and standby
configuration is preceded by it: what it prints (the directory's port and/or
system identifier) must match the node's DSN port and the cluster's identifier,
or the step is refused. Without one this driver cannot check which data
directory its commands act on.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from dataclasses import replace
from typing import Any

from hacontrol.io.drivers.base import (
    STOP_MODES,
    DriverResult,
    NodeDriver,
    Step,
    not_possible,
    refusal,
)
from hacontrol.io.drivers.config import CommandDriverConfig
from hacontrol.io.drivers.identity import UINT64_MASK, identifier_problem, parse_int
from hacontrol.io.proc import last_line, run_program
from hacontrol.redact import dsn_password, redact_text

# pg_ctl status and systemctl is-active both exit 3 for "not running".
STATUS_STOPPED = 3
# pg_ctl status exits 4 when there is no data directory: an identity command says
# so the same way, which only a base backup accepts.
IDENTITY_NO_DATA_DIR = 4
# The identity command needs only to read a few files: never a whole step's budget.
IDENTITY_TIMEOUT_S = 30.0
_IDENTITY_LINE = re.compile(
    r"^\s*(?:database\s+)?(port|system[ _]identifier)\s*[:=]\s*(\S+)\s*$", re.IGNORECASE
)


def parse_identity(output: str) -> tuple[int | None, int | None]:
    """(port, system identifier) from an identity command's output: lines such as
    ``port=5432``, ``system_identifier = 7301...`` or pg_controldata's
    ``Database system identifier: 7301...``; the last of each wins."""
    port: int | None = None
    identifier: int | None = None
    for line in output.splitlines():
        match = _IDENTITY_LINE.match(line)
        if match is None:
            continue
        value = parse_int(match[2])
        if value is None:
            continue
        if match[1].lower() == "port":
            port = value
        else:
            identifier = value & UINT64_MASK
    return port, identifier


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

    def __init__(
        self,
        cfg: CommandDriverConfig,
        node: str,
        *,
        expected_port: int | None = None,
        system_identifier: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.expected_port = expected_port
        self.pinned_system_identifier = system_identifier
        steps = {
            Step.STOP: cfg.stop,
            Step.START: cfg.start,
            Step.STATUS: cfg.status,
            Step.REWIND: cfg.rewind,
            Step.BASEBACKUP: cfg.basebackup,
            Step.STANDBY_CONFIG: cfg.standby_config,
            Step.FENCE: cfg.fence,
            Step.DISCARD_PROMOTE: cfg.discard_promote,
            Step.IDENTITY: cfg.identity,
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
            **{f"HACONTROL_{_ENV_NAMES.get(k, k).upper()}": v for k, v in env_values.items()},
        }
        proc = await run_program(
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

    async def verify_identity(
        self, step: Step | str = Step.IDENTITY, *, absent_ok: bool = False
    ) -> DriverResult:
        """Run the ``identity`` command and compare what it prints with the node's DSN
        port and the cluster's system identifier; ``possible=False`` without one."""
        if Step.IDENTITY not in self.templates:
            return not_possible(Step.IDENTITY, f"no identity command configured for "
                                f"{self.node}: its data directory is not checked")
        result = await self._run(Step.IDENTITY, timeout=min(self.cfg.timeout, IDENTITY_TIMEOUT_S))
        label = self.cfg.data_dir or "the directory its commands act on"
        if result.returncode == IDENTITY_NO_DATA_DIR and not result.timed_out:
            if absent_ok:
                return DriverResult(str(Step.IDENTITY), True, "nothing to prove: the identity "
                                    "command reports no data directory", result.output,
                                    result.duration_s, returncode=result.returncode)
            return refusal(step, self.node, f"the identity command reports that {label} is "
                           f"no data directory (expected {self.node}'s); fix the node's "
                           "[nodes.driver] commands, or re-clone it", result.duration_s)
        if not result.ok:
            return refusal(step, self.node, f"cannot prove which data directory its commands "
                           f"act on: the identity command failed ({result.detail}); fix it "
                           "(docs/drivers.md)", result.duration_s)
        port, found = parse_identity(result.output)
        if port is None and found is None:
            return refusal(step, self.node, "the identity command printed neither a port "
                           "nor a system identifier (expected lines such as 'port=5432'); "
                           "fix it (docs/drivers.md)", result.duration_s)
        shown: list[str] = []
        if port is not None and self.expected_port is not None:
            if port != self.expected_port:
                return refusal(step, self.node, (
                    f"{label} is not {self.node}'s data directory: the identity command "
                    f"reports port {port}, but {self.node}'s dsn names port "
                    f"{self.expected_port}; fix the node's [nodes.driver] commands (or its dsn) "
                    "so both name the same server"
                ), result.duration_s)
            shown.append(f"port {port}")
        expected, how, conflict = self.expected_system_identifier()
        if conflict:
            return refusal(step, self.node, conflict, result.duration_s)
        if found is not None and expected is not None:
            problem = identifier_problem(self.node, label, found, expected, how)
            if problem:
                return refusal(step, self.node, problem, result.duration_s)
            shown.append(f"system identifier {found}")
        proven = ", ".join(shown) or "nothing the configuration could compare"
        return DriverResult(str(Step.IDENTITY), True, f"identity command: {proven}",
                            result.output, result.duration_s, returncode=0)

    async def _proven(self, step: Step, *, absent_ok: bool = False) -> DriverResult | None:
        """The refusal of ``step``, or None to go ahead (proven, or nothing to check with)."""
        proof = await self.verify_identity(step, absent_ok=absent_ok)
        return proof if proof.possible and not proof.ok else None

    async def stop(self, mode: str = "fast") -> DriverResult:
        if mode not in STOP_MODES:
            return DriverResult(str(Step.STOP), False, f"unknown stop mode {mode!r}")
        return await self._proven(Step.STOP) or await self._run(Step.STOP, mode=mode)

    async def start(self) -> DriverResult:
        return await self._proven(Step.START) or await self._run(Step.START)

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
        return await self._proven(Step.REWIND) or await self._run(
            Step.REWIND, source_dsn=source_dsn
        )

    async def basebackup(self, source_dsn: str) -> DriverResult:
        return await self._proven(Step.BASEBACKUP, absent_ok=True) or await self._run(
            Step.BASEBACKUP, timeout=self.cfg.basebackup_timeout, source_dsn=source_dsn
        )

    async def write_standby_config(
        self, primary_conninfo: str, primary_slot_name: str = ""
    ) -> DriverResult:
        return await self._proven(Step.STANDBY_CONFIG) or await self._run(
            Step.STANDBY_CONFIG, primary_conninfo=primary_conninfo,
            primary_slot_name=primary_slot_name,
        )

    async def fence(self) -> DriverResult:
        return await self._run(Step.FENCE)

    async def discard_promote(self) -> DriverResult:
        return await self._proven(Step.DISCARD_PROMOTE) or await self._run(Step.DISCARD_PROMOTE)


# HACONTROL_MODE is the controller's own `mode` setting: a hacontrol command run by a
# stop template would read the stop mode as it.
_ENV_NAMES = {"mode": "stop_mode"}


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _mask(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _with(result: DriverResult, **changes: Any) -> DriverResult:
    return replace(result, **changes)
