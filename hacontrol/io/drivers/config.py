"""Driver configuration models: the ``[nodes.driver]`` table of a node.

```toml
[[nodes]]
name = "pg1"
dsn = "host=10.0.0.1 port=5432 user=hacontrol dbname=postgres"
[nodes.driver]
kind = "local"
data_dir = "/var/lib/postgresql/15/main"
```

No table means no driver: the controller then does only what SQL can do.

Step timeouts are finite and bounded (:data:`MAX_STEP_TIMEOUT_S`,
:data:`MAX_BASEBACKUP_TIMEOUT_S`): a driver step that may hang for ever would
hold a rejoin or a switchover for ever too.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Placeholders a command template may use (see docs/drivers.md).
PLACEHOLDERS = frozenset(
    {"node", "data_dir", "source_dsn", "primary_conninfo", "primary_slot_name", "mode"}
)
FORMAT_SPECS = frozenset({"", "ssh"})
# One stop, start or rewind taking longer than an hour is a hung step, not a slow one.
MAX_STEP_TIMEOUT_S = 3600.0
# A base backup copies the whole database: a week covers tens of terabytes.
MAX_BASEBACKUP_TIMEOUT_S = 7 * 24 * 3600.0


def _step_timeout(default: float) -> Any:
    return Field(default=default, gt=0, le=MAX_STEP_TIMEOUT_S, allow_inf_nan=False)


def _basebackup_timeout() -> Any:
    return Field(default=3600.0, gt=0, le=MAX_BASEBACKUP_TIMEOUT_S, allow_inf_nan=False)


class _DriverSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class LocalDriverConfig(_DriverSection):
    """PostgreSQL on this host: pg_ctl, pg_rewind and pg_basebackup run as the data
    directory's owner."""

    kind: Literal["local"] = "local"
    data_dir: Path
    # None: $PG_BINDIR, `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
    bindir: Path | None = None
    # None: the owner of the data directory (when running as root), else the current user.
    os_user: str | None = None
    # Server log for `pg_ctl start -l`; None: "<data_dir>.log" next to the data directory.
    log_file: Path | None = None
    # pg_rewind --restore-target-wal: None = when the node has a restore_command.
    restore_target_wal: bool | None = None
    # Keep the node's own *.conf files (port, pg_hba ...) across rewind and base backup,
    # which would otherwise bring the source's copies.
    keep_config: bool = True
    timeout: float = _step_timeout(60.0)
    # A base backup copies the whole database: give it its own, longer budget.
    basebackup_timeout: float = _basebackup_timeout()

    @field_validator("data_dir", "bindir", "log_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        return value


def _check_template(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        fields = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(
            f"not a valid template ({exc}); write literal braces as {{{{ }}}}"
        ) from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
            raise ValueError(f"unknown placeholder {{{name}}}; allowed: {allowed}")
        if conversion is not None or (spec or "") not in FORMAT_SPECS:
            raise ValueError(
                f"placeholder {{{name}}} may only be written {{{name}}} or {{{name}:ssh}}"
            )
    return value


class CommandDriverConfig(_DriverSection):
    """Operator command templates per step, run through /bin/sh (ssh, systemctl ...).

    Placeholders are shell-quoted: ``{x}`` once, for the local shell; ``{x:ssh}``
    twice, for a command that ssh hands to the remote shell. A step without a
    template is one this driver cannot do.
    """

    kind: Literal["command"] = "command"
    data_dir: str = ""
    stop: str | None = None
    start: str | None = None
    # Exit 0: running; 3 (pg_ctl's and systemctl's "not running"): stopped; else unknown.
    status: str | None = None
    rewind: str | None = None
    basebackup: str | None = None
    standby_config: str | None = None
    fence: str | None = None
    # Removes {data_dir}/promote.signal of the stopped node (a pending promote request).
    discard_promote: str | None = None
    # Prints the data directory's port and/or system identifier; run before every
    # step that changes the node, which is refused when they do not match.
    identity: str | None = None
    timeout: float = _step_timeout(60.0)
    basebackup_timeout: float = _basebackup_timeout()

    @field_validator(
        "stop", "start", "status", "rewind", "basebackup", "standby_config", "fence",
        "discard_promote", "identity",
    )
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)


DriverConfig = Annotated[LocalDriverConfig | CommandDriverConfig, Field(discriminator="kind")]
