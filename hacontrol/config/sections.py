"""The ``[section]`` models: one node, the timings, the procedures, the API.

Every number is finite and bounded (:func:`_bounded`): ``inf``, ``nan`` or a
typo such as ``3e6`` seconds would otherwise pass and leave the running
controller blind or stuck (a probe that may take a month sees every node
unreachable). A rule between keys of several sections is in
:mod:`hacontrol.config.schema`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hacontrol.core.slot_names import slot_name_problem
from hacontrol.io.drivers.config import DriverConfig
from hacontrol.redact import dsn_password, redact_text

# Node names become application_name in primary_conninfo (63 bytes at most).
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# Upper bounds (docs/configuration.md, "Bounds"). Past them a value is a typo or a
# unit mistake, not a tuning: a probe or round longer than a minute no longer
# watches anything, and a step waiting longer than an hour is hung.
MINUTE = 60.0
HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
MAX_PROBE_S = MINUTE
MAX_COUNT = 100
MAX_LAG_BYTES = 1 << 40
# Below 10 ms a probe cannot even connect over loopback reliably, and a round
# repeats faster than the nodes can answer.
MIN_PROBE_S = 0.01


def _bounded(
    default: float,
    *,
    le: float,
    gt: float | None = None,
    ge: float | None = None,
) -> Any:
    """A finite number field (nan and inf refused) between the given bounds."""
    return Field(default=default, gt=gt, ge=ge, le=le, allow_inf_nan=False)


class Section(BaseModel):
    """Base of every ``[section]``: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _mask_fragment(match: re.Match[str]) -> str:
    """Keep a quoted syntax character ("="), hide a quoted word (maybe a password's)."""
    return '"…"' if re.search(r"[A-Za-z0-9]", match[0]) else match[0]


def _check_dsn(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty; write a libpq connection string such as 'host=... '")
    try:
        params = conninfo_to_dict(value)
    except Exception as exc:
        # psycopg quotes the fragment it choked on, which may be part of a
        # password: scrub it before it can reach a message.
        detail = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        if dsn_password(value) or "password" in value.lower() or "@" in value:
            detail = re.sub(r'"[^"]*"', _mask_fragment, detail)
        raise ValueError(
            f"not a valid libpq connection string ({detail}); "
            "allowed: 'key=value ...' pairs or a postgresql:// URI"
        ) from None
    hosts = [h for h in str(params.get("host") or params.get("hostaddr") or "").split(",") if h]
    if len(hosts) > 1:
        raise ValueError(
            f"names {len(hosts)} hosts; a node's DSN must name exactly one server"
        )
    return value


class NodeConfig(Section):
    """One ``[[nodes]]`` table: a PostgreSQL server the controller watches."""

    name: str
    dsn: str
    priority: int = Field(default=100, ge=0, le=1_000_000)
    replication_dsn: str | None = None
    # [nodes.driver]: how host-level steps (stop, start, rewind) run for this node;
    # absent: none, the controller does only what SQL can (docs/drivers.md).
    driver: DriverConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"invalid node name {value!r}; allowed: 1-63 letters, digits, '_', '-', '.', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str) -> str:
        return _check_dsn(value)

    @field_validator("replication_dsn")
    @classmethod
    def _replication_dsn(cls, value: str | None) -> str | None:
        # An empty string reads as "not set", like an omitted key.
        if value is None or not value.strip():
            return None
        return _check_dsn(value)


class TimingConfig(Section):
    """``[timing]``: detection and action timings (seconds)."""

    probe_interval: float = _bounded(0.2, ge=MIN_PROBE_S, le=MAX_PROBE_S)
    probe_timeout: float = _bounded(1.0, ge=MIN_PROBE_S, le=MAX_PROBE_S)
    failure_threshold: int = Field(default=3, ge=1, le=MAX_COUNT)
    detection_window: float = _bounded(0.5, ge=0, le=HOUR)
    replica_silence: float = _bounded(3.0, gt=0, le=HOUR)
    recovery_threshold: int = Field(default=3, ge=1, le=MAX_COUNT)
    cooldown: float = _bounded(300.0, ge=0, le=WEEK)
    promote_timeout: float = _bounded(30.0, gt=0, le=HOUR)
    repoint_retry: float = _bounded(5.0, gt=0, le=HOUR)


class FailoverConfig(Section):
    """``[failover]``: candidate rules and failback."""

    max_lag_bytes: int = Field(default=16 * 1024 * 1024, ge=0, le=MAX_LAG_BYTES)
    failback: bool = False
    failback_delay: float = _bounded(300.0, ge=0, le=WEEK)
    # A candidate whose promote (or switchover) failed is not tried again for this long.
    candidate_backoff: float = _bounded(60.0, ge=0, le=DAY)
    # No automatic failover to a candidate without the synced logical slots (waits).
    require_logical_slots: bool = False


class LogicalSlotConfig(Section):
    """``[[slots]]``: a permanent logical slot kept on the primary (docs/slots.md)."""

    name: str
    database: str = Field(min_length=1)
    plugin: str = Field(default="pgoutput", min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = slot_name_problem(value)
        if problem is not None:
            raise ValueError(f"{problem} (got {value!r})")
        return value


class RejoinConfig(Section):
    """``[rejoin]``: bringing a fenced old primary back as a replica (needs a driver)."""

    # Rejoin a fenced old primary by itself after a failover (nodes with a driver only).
    automatic: bool = True
    # When pg_rewind fails, re-clone the node from the primary (the old data directory
    # is kept, renamed).
    allow_basebackup: bool = False
    # How long a rejoined node may take to stream from the primary after it is started.
    timeout: float = _bounded(30.0, gt=0, le=HOUR)


class SwitchoverConfig(Section):
    """``[switchover]``: the planned switchover procedure (and failback)."""

    # From the fence until the target has replayed the old primary's last WAL; past
    # it, the switchover rolls back.
    catchup_timeout: float = _bounded(10.0, gt=0, le=HOUR)
    # A switchover running longer is reported (switchover_overdue); after twice this
    # long without an outcome it is abandoned. It must cover catch-up plus rejoin.
    timeout: float = _bounded(60.0, gt=0, le=2 * HOUR)


class PostgresConfig(Section):
    """``[postgres]``: server settings the controller manages on every node."""

    manage_settings: bool = True
    # Settings are in whole milliseconds on the server.
    wal_receiver_timeout: float = _bounded(2.0, ge=0.001, le=HOUR)
    wal_sender_timeout: float = _bounded(10.0, ge=0.001, le=HOUR)
    heartbeat: bool = True


class ReplicationConfig(Section):
    """``[replication]``: synchronous quorum replication (docs/synchronous.md)."""

    # off: synchronous_standby_names is left alone; quorum: the controller manages
    # 'ANY k (...)' on the primary and fails over only without losing a commit.
    synchronous: Literal["off", "quorum"] = "off"
    # k: each commit waits until this many replicas have flushed it.
    quorum: int = Field(default=1, ge=1)
    # true: keep k names even when fewer replicas can acknowledge (writes block);
    # false: degrade to fewer names or asynchronous with an event, restore later.
    strict: bool = False
    # Physical member slots: one per other node on the primary, replicas stream
    # through it (docs/slots.md).
    slots: bool = True
    # A member away this long (not a reachable replica) loses its slot, seconds.
    slot_retention: float = _bounded(1800.0, ge=0, le=WEEK)

    @field_validator("synchronous", mode="before")
    @classmethod
    def _synchronous(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class HooksConfig(Section):
    """``[hooks]``: shell commands run on events; empty means not configured."""

    pre_promote: str = ""
    fence: str = ""
    on_role_change: str = ""
    timeout: float = _bounded(10.0, gt=0, le=HOUR)


DEFAULT_API_LISTEN = "127.0.0.1:8008"
# Shorter bearer tokens can be guessed; 16 random characters are ~80+ bits.
MIN_TOKEN_CHARS = 16
_LISTEN_RE = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6addr]:port`` for IPv6) as (host, port); ValueError if malformed."""
    match = _LISTEN_RE.match(value.strip())
    if match is None or int(match["port"]) > 65535:
        raise ValueError(
            f"must be host:port, e.g. {DEFAULT_API_LISTEN!r} or '[::1]:8008', "
            f"with a port from 0 to 65535 (got {value!r})"
        )
    return match["v6"] or match["host"], int(match["port"])


class ApiConfig(Section):
    """``[api]``: the HTTP API (status, health checks for load balancers, metrics, commands)."""

    enabled: bool = True
    listen: str = DEFAULT_API_LISTEN
    # Bearer token for mutations (switchover, failover, pause, ...); empty: refused.
    token: SecretStr = SecretStr("")
    token_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return check_token(value.get_secret_value())

    @field_validator("token_file", mode="before")
    @classmethod
    def _token_file(cls, value: Any) -> Any:
        # An empty string reads as "not set", like an omitted key.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ApiConfig:
        if self.token.get_secret_value() and self.token_file is not None:
            raise ValueError("set either api.token or api.token_file, not both")
        return self

    def address(self) -> tuple[str, int]:
        """(host, port) to bind."""
        return parse_listen(self.listen)

    def bearer_token(self) -> str:
        """The token mutations must present; empty when none is configured."""
        return self.token.get_secret_value()


def check_token(token: str) -> SecretStr:
    """``token`` as a secret, or ValueError. Never quotes the token: the messages say
    what is wrong, not what was given."""
    if token and (len(token) < MIN_TOKEN_CHARS):
        raise ValueError(
            f"too short ({len(token)} characters); use at least {MIN_TOKEN_CHARS} random "
            "characters, e.g. the output of 'openssl rand -hex 32'"
        )
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(
            "must not contain spaces or control characters (it is sent in an HTTP header)"
        )
    return SecretStr(token)
