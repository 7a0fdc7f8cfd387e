"""Configuration: a TOML file plus ``HACONTROL_*`` environment overrides.

The file is parsed with :mod:`tomllib`; the environment is read by a
pydantic-settings :class:`EnvSettingsSource` (nested keys joined by ``__``,
e.g. ``HACONTROL_TIMING__PROBE_INTERVAL``) and wins over the file. Every
problem becomes one line naming the file, the key path, what is wrong and
what is allowed (:class:`ConfigError`); nothing here prints a password.

Every number is finite and bounded (:func:`_bounded`): ``inf``, ``nan`` or a
typo such as ``3e6`` seconds would otherwise pass and leave the running
controller blind or stuck (a probe that may take a month sees every node
unreachable). Rules between keys that the controller's timing really depends on
are in :func:`_cross_field_problems`, which also resolves every node's DSN as
libpq would (service file, ``PG*`` variables of the environment it is loaded
from) and refuses the libpq parameters the controller's connections cannot
honour (:mod:`hacontrol.pgconn`). What can only be checked on the controller's
host (the local drivers' data directories, the journal's path) is checked by
:func:`check_config` (``hacontrol check-config``) through
:func:`data_dir_findings` and :func:`journal_problem`. :func:`config_warnings`
lists what is allowed but probably unintended, misspelt ``HACONTROL_*``
variables included.

Adding a section (say ``[api]``): define a :class:`Section` subclass with
defaulted fields, add it to :class:`Config` with a default instance, and
describe it in :func:`explain` and docs/configuration.md. Environment
overrides, unknown-key errors and the allowed-keys lists follow by themselves.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from hacontrol.drivers.base import NodeDriver
from hacontrol.drivers.config import (
    CommandDriverConfig,
    DriverConfig,
    LocalDriverConfig,
)
from hacontrol.drivers.identity import (
    UINT64_MASK,
    PortReading,
    control_file_identifier,
    directory_port,
    directory_state,
    dsn_port,
    identifier_problem,
)
from hacontrol.model import DecisionSettings, FailoverMode, NodeSpec
from hacontrol.pgconn import DsnError, Resolved, resolve
from hacontrol.redact import dsn_password, redact_dsn, redact_text

ENV_PREFIX = "HACONTROL_"
ENV_DELIMITER = "__"
DEFAULT_JOURNAL = "hacontrol-journal.jsonl"
# Slack between the longest silence a healthy, idle upstream can cause on a
# replica (wal_receiver_timeout / 2, when the replica pings it) and the silence
# that counts as "lost the primary": covers one probe round plus scheduling.
SILENCE_MARGIN_S = 0.5
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
# A cross-field rule: the promote's connection and the probe that sees it promoted
# may each use one probe timeout.
PROMOTE_PROBES = 2


def _bounded(
    default: float,
    *,
    le: float,
    gt: float | None = None,
    ge: float | None = None,
) -> Any:
    """A finite number field (nan and inf refused) between the given bounds."""
    return Field(default=default, gt=gt, ge=ge, le=le, allow_inf_nan=False)


def _service_address(dsn: str) -> str | None:
    """``host=... port=...`` of a DSN that names a service (None otherwise, or when it
    cannot be resolved: then the DSN is refused elsewhere)."""
    try:
        resolved = resolve(dsn)
    except DsnError:
        return None
    if resolved.service is None:
        return None
    host, port = resolved.address()
    if port is None:
        return None
    return make_conninfo(host=host, port=str(port))


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _CrossFieldProblems(ValueError):
    """Raised by Config's cross-field check: several problems, each with its own key path.

    ``names`` are the nodes' names, in file order: a problem with a node's DSN names
    the node next to the key path."""

    def __init__(
        self, problems: list[tuple[tuple[str | int, ...], str]], names: Sequence[str] = ()
    ) -> None:
        self.problems = problems
        self.names = list(names)
        super().__init__("; ".join(f"{self.where(loc)}: {msg}" for loc, msg in problems))

    def where(self, loc: tuple[str | int, ...]) -> str:
        path = _key_path(loc)
        if (
            len(loc) == 3 and loc[0] == "nodes" and isinstance(loc[1], int)
            and loc[2] in ("dsn", "replication_dsn") and loc[1] < len(self.names)
        ):
            return f"{path} ({self.names[loc[1]]})"
        return path


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

    def endpoint(self) -> tuple[str, str]:
        """(host, port) the DSN points at, with libpq's defaults filled in."""
        params = conninfo_to_dict(self.dsn)
        host = str(params.get("host") or params.get("hostaddr") or "(local socket)")
        return host, str(params.get("port") or "5432")


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
        return _check_token(value.get_secret_value())

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


def _check_token(token: str) -> SecretStr:
    """Never quotes the token: the messages say what is wrong, not what was given."""
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


@dataclass(frozen=True, slots=True)
class _LoadContext:
    file_data: dict[str, Any]
    environ: Mapping[str, str]


_LOADING: ContextVar[_LoadContext | None] = ContextVar("hacontrol_config_loading", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """EnvSettingsSource over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class Config(BaseSettings):
    """The whole configuration. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
        case_sensitive=False,
    )

    mode: FailoverMode = FailoverMode.AUTOMATIC
    journal: Path = Path(DEFAULT_JOURNAL)
    nodes: list[NodeConfig] = Field(min_length=2)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    replication: ReplicationConfig = Field(default_factory=ReplicationConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    rejoin: RejoinConfig = Field(default_factory=RejoinConfig)
    switchover: SwitchoverConfig = Field(default_factory=SwitchoverConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    # The cluster's identity, pinned: a node (or data directory) reporting another
    # system identifier is never acted on. None: learned from the nodes.
    system_identifier: int | None = Field(default=None, gt=0, le=UINT64_MASK)
    # What the environment it was loaded from set in vain (env_warnings); kept for
    # config_warnings, which has only the Config.
    _env_warnings: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first (it wins), then the file; no .env or secrets dirs."""
        loading = _LOADING.get()
        if loading is None:
            return env_settings, init_settings
        return (
            _MappingEnvSource(settings_cls, loading.environ),
            InitSettingsSource(settings_cls, init_kwargs=loading.file_data),
        )

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("system_identifier", mode="before")
    @classmethod
    def _system_identifier(cls, value: Any) -> Any:
        # An empty string reads as "not set"; a string holds identifiers above TOML's
        # largest integer (2^63 - 1).
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("journal")
    @classmethod
    def _journal(cls, value: Path) -> Path:
        if not str(value).strip() or str(value) == ".":
            raise ValueError("must be a file path, e.g. 'hacontrol-journal.jsonl'")
        return value.expanduser()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        loading = _LOADING.get()
        problems = _cross_field_problems(self, os.environ if loading is None else loading.environ)
        if problems:
            raise _CrossFieldProblems(problems, [n.name for n in self.nodes])
        return self

    def decision_settings(self) -> DecisionSettings:
        """The settings the pure decision core works with."""
        t, f = self.timing, self.failover
        return DecisionSettings(
            mode=self.mode,
            probe_interval_s=t.probe_interval,
            failure_threshold=t.failure_threshold,
            detection_window_s=t.detection_window,
            replica_silence_s=t.replica_silence,
            recovery_threshold=t.recovery_threshold,
            max_lag_bytes=f.max_lag_bytes,
            cooldown_s=t.cooldown,
            promote_timeout_s=t.promote_timeout,
            repoint_retry_s=t.repoint_retry,
            failback=f.failback,
            failback_delay_s=f.failback_delay,
            candidate_backoff_s=f.candidate_backoff,
            switchover_timeout_s=self.switchover.timeout,
            rejoin_automatic=self.rejoin.automatic,
            fence_before_promote=bool(self.hooks.fence),
            synchronous=self.replication.synchronous,
            sync_quorum=self.replication.quorum,
            sync_strict=self.replication.strict,
        )

    def node_specs(self) -> tuple[NodeSpec, ...]:
        """The configured nodes, in file order."""
        return tuple(
            NodeSpec(n.name, n.dsn, n.priority, n.replication_dsn,
                     _service_address(n.replication_dsn or n.dsn))
            for n in self.nodes
        )

    def node_drivers(self) -> dict[str, LocalDriverConfig | CommandDriverConfig | None]:
        """Each node's ``[nodes.driver]`` table (None: no driver)."""
        return {n.name: n.driver for n in self.nodes}

    def build_drivers(self) -> dict[str, NodeDriver]:
        """Each node's driver, told the port of the node's DSN (which its data directory
        must show) and the pinned ``system_identifier``."""
        from hacontrol.drivers.config import build_driver

        return {
            n.name: build_driver(n.driver, n.name, dsn=n.dsn,
                                 system_identifier=self.system_identifier)
            for n in self.nodes
        }

    def managed_settings_ms(self) -> dict[str, int]:
        """Server settings (in ms) to enforce on every node; empty when not managed."""
        if not self.postgres.manage_settings:
            return {}
        return {
            "wal_receiver_timeout": round(self.postgres.wal_receiver_timeout * 1000),
            "wal_sender_timeout": round(self.postgres.wal_sender_timeout * 1000),
        }


def _cross_field_problems(
    config: Config, environ: Mapping[str, str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules spanning several keys, each reported at the key to change; ``environ``
    is what libpq would read (PG* variables, service files) for the nodes' DSNs."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen_names: dict[str, int] = {}
    seen_endpoints: dict[tuple[str, int | None], tuple[int, Resolved]] = {}
    for i, node in enumerate(config.nodes):
        if node.name in seen_names:
            problems.append(
                (
                    ("nodes", i, "name"),
                    f"duplicate node name {node.name!r} (also nodes[{seen_names[node.name]}]); "
                    "node names must be unique",
                )
            )
        else:
            seen_names[node.name] = i
        try:
            resolved = resolve(node.dsn, environ)
        except DsnError as exc:
            problems += [(("nodes", i, "dsn"), p) for p in exc.problems]
            continue
        problems += [(("nodes", i, "dsn"), p) for p in resolved.problems()]
        # Compared after the service is read: service=a and service=b are two
        # servers exactly when the services name two.
        endpoint = resolved.address()
        if endpoint in seen_endpoints:
            first, other = seen_endpoints[endpoint]
            via = f", from service {other.service!r}" if other.service else ""
            problems.append(
                (
                    ("nodes", i, "dsn"),
                    f"points at the same server ({resolved.describe()}) as nodes[{first}] "
                    f"({config.nodes[first].name!r}{via}); each node is one server",
                )
            )
        else:
            seen_endpoints[endpoint] = (i, resolved)
    problems += _driver_problems(config)
    t, pg = config.timing, config.postgres
    problems += _probe_problems(t)
    if t.detection_window < t.probe_interval:
        problems.append(
            (
                ("timing", "detection_window"),
                f"must be at least timing.probe_interval ({t.probe_interval:g} s) "
                f"(got {t.detection_window:g})",
            )
        )
    rep = config.replication
    if rep.quorum > len(config.nodes) - 1:
        problems.append(
            (
                ("replication", "quorum"),
                f"must be at most the number of nodes - 1 = {len(config.nodes) - 1} (a primary"
                f" never waits for itself, so at most every replica can acknowledge)"
                f" (got {rep.quorum})",
            )
        )
    sw, rj = config.switchover, config.rejoin
    if sw.timeout < sw.catchup_timeout + rj.timeout:
        problems.append(
            (
                ("switchover", "timeout"),
                f"must be at least switchover.catchup_timeout + rejoin.timeout = "
                f"{sw.catchup_timeout + rj.timeout:g} s: a switchover may wait that long by "
                f"itself (the target catching up, then the old primary streaming again), and "
                f"one running past this limit is reported as overdue (got {sw.timeout:g})",
            )
        )
    if pg.manage_settings:
        floor = pg.wal_receiver_timeout / 2 + SILENCE_MARGIN_S
        if t.replica_silence <= floor:
            problems.append(
                (
                    ("timing", "replica_silence"),
                    f"must be greater than postgres.wal_receiver_timeout / 2 + "
                    f"{SILENCE_MARGIN_S:g} s = {floor:g} s, or an idle but healthy primary "
                    f"looks lost to its replicas (got {t.replica_silence:g})",
                )
            )
    return problems


def _probe_problems(t: TimingConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """The probe timings the failure confirmation and the promote depend on."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    # A replica confirms a lost primary only if it was seen streaming within
    # replica_silence before the primary's first failed probe; one round (the
    # interval plus a probe that may use its whole timeout) lies between the two.
    why = (
        "a replica confirms a lost primary only if it was seen streaming within "
        "timing.replica_silence before the primary's first failed probe, and one probe "
        "round lies between the two"
    )
    if t.probe_interval >= t.replica_silence:
        problems.append((
            ("timing", "probe_interval"),
            f"must be less than timing.replica_silence ({t.replica_silence:g} s): {why}, so "
            f"no failure would ever be confirmed (got {t.probe_interval:g})",
        ))
    elif t.probe_interval + t.probe_timeout > t.replica_silence:
        limit = t.replica_silence - t.probe_interval
        problems.append((
            ("timing", "probe_timeout"),
            f"must be at most timing.replica_silence - timing.probe_interval = {limit:g} s: "
            f"{why} (the interval plus a probe that may take its whole timeout); lower it, "
            f"or raise timing.replica_silence (got {t.probe_timeout:g})",
        ))
    if t.promote_timeout < PROMOTE_PROBES * t.probe_timeout:
        problems.append((
            ("timing", "promote_timeout"),
            f"must be at least {PROMOTE_PROBES} × timing.probe_timeout = "
            f"{PROMOTE_PROBES * t.probe_timeout:g} s: the promote's own connection and the "
            "probe that sees it promoted may each take a probe timeout, so a shorter limit "
            f"abandons promotions that work (got {t.promote_timeout:g})",
        ))
    return problems


def _driver_problems(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """What makes a local driver unable to tell its node's data directory apart."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(config.nodes):
        driver = node.driver
        if not isinstance(driver, LocalDriverConfig):
            continue
        if dsn_port(node.dsn) is None:
            problems.append((
                ("nodes", i, "dsn"),
                "names no single numeric port of its own (the local driver does not read "
                "service files); a node with a local driver needs one, e.g. port=5432: its "
                "data directory must show that port before the driver acts on it",
            ))
        key = os.path.normpath(str(driver.data_dir))
        if key in seen:
            first = seen[key]
            problems.append((
                ("nodes", i, "driver", "data_dir"),
                f"the same data directory as nodes[{first}] ({config.nodes[first].name!r}); "
                "each node has its own",
            ))
        else:
            seen[key] = i
    return problems


# ---------------------------------------------------------------- loading


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML) with ``HACONTROL_*`` overrides from ``env`` (default: the
    process environment); raise :class:`ConfigError` listing every problem found.

    A relative ``journal`` path is resolved against the file's directory.
    """
    path = Path(path)
    data = _read_toml(path, str(path))
    return config_from_mapping(
        data,
        env=os.environ if env is None else env,
        source=str(path),
        base_dir=path.resolve().parent,
    )


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source: str = "<config>",
    base_dir: Path | None = None,
) -> Config:
    """Validate already-parsed configuration data (``env``: overrides, none by default).

    ``source`` names the origin in messages; a relative journal path is resolved
    against ``base_dir`` when given.
    """
    environ = dict(env or {})
    env_data = _env_values(environ, source)
    # TOML keys are case-sensitive; the settings sources are not (for the
    # environment's sake), so a misspelt top-level key is caught here.
    allowed = ", ".join(Config.model_fields)
    early = [
        f"{source}: {key}: unknown key; allowed keys: {allowed}"
        for key in data
        if key not in Config.model_fields
    ]
    nodes = data.get("nodes")
    if "nodes" not in env_data and isinstance(nodes, list) and len(nodes) < 2:
        # pydantic skips the length rule when a node itself is invalid; say it anyway.
        early.append(f"{source}: nodes: {_too_few_nodes(len(nodes))}")
    known = {k: v for k, v in data.items() if k in Config.model_fields}
    token = _LOADING.set(_LoadContext(known, environ))
    try:
        config = Config()  # type: ignore[call-arg]  # values come from the sources
    except ValidationError as exc:
        later = [p for p in _problems(exc, source, env_data) if p not in early]
        raise ConfigError(early + later) from None
    except SettingsError as exc:
        raise ConfigError([f"{source}: {_settings_error(exc)}"]) from None
    finally:
        _LOADING.reset(token)
    if early:
        raise ConfigError(early)
    config._env_warnings = tuple(env_warnings(environ))
    if base_dir is not None and not config.journal.is_absolute():
        config = config.model_copy(update={"journal": base_dir / config.journal})
    return _with_token_from_file(config, source, base_dir)


# HACONTROL_* variables that are no configuration keys and are not warned about: the
# CLI's own, those hooks and command drivers receive (present when hacontrol runs
# inside one), and the build and test tooling's. HACONTROL_API_TOKEN, the compose
# file's host-side variable, is left out on purpose: in the controller's environment
# it is the classic misspelling of HACONTROL_API__TOKEN.
OTHER_ENV_NAMES = frozenset({
    "HACONTROL_CONFIG", "HACONTROL_API_ADDRESS",
    "HACONTROL_EVENT", "HACONTROL_NODE", "HACONTROL_OLD_PRIMARY", "HACONTROL_NEW_PRIMARY",
    "HACONTROL_TIMELINE", "HACONTROL_REASON", "HACONTROL_STEP", "HACONTROL_DATA_DIR",
    "HACONTROL_SOURCE_DSN", "HACONTROL_PRIMARY_CONNINFO", "HACONTROL_STOP_MODE",
    "HACONTROL_DOCKER_TESTS", "HACONTROL_DOCKER_REQUIRED", "HACONTROL_DOCKER_CACHE",
    "HACONTROL_IMAGE", "HACONTROL_NODE_IMAGE", "HACONTROL_API_PORT",
})


def setting_env_names() -> list[str]:
    """Every environment variable that sets a key: HACONTROL_KEY for top-level keys and
    whole sections (JSON), HACONTROL_SECTION__KEY for a section's keys."""
    names: list[str] = []
    for name in Config.model_fields:
        names.append(f"{ENV_PREFIX}{name}".upper())
        model = _model_at((name,))
        if model is not None and name != "nodes":
            names += [f"{ENV_PREFIX}{name}{ENV_DELIMITER}{key}".upper()
                      for key in model.model_fields]
    return names


def env_warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per ``HACONTROL_*`` variable in ``environ`` that sets nothing (a
    misspelt name is otherwise ignored without a word), naming the nearest valid
    name. Values are never shown: the variable may hold a secret. A misspelt key
    under a section (HACONTROL_TIMING__PROBE_INTERVALL) is an error instead."""
    valid = setting_env_names()
    known = set(valid) | OTHER_ENV_NAMES
    lines: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        rest = upper[len(ENV_PREFIX):]
        top, nested, _ = rest.partition(ENV_DELIMITER)
        section = _model_at((top.lower(),)) if top.lower() in Config.model_fields else None
        if nested and section is not None:
            continue
        # Compared without the prefix, which every candidate shares.
        near = difflib.get_close_matches(
            rest, sorted(k[len(ENV_PREFIX):] for k in known), n=1, cutoff=0.6
        )
        hint = (
            f"did you mean {ENV_PREFIX}{near[0]}?" if near else
            f"settings are {ENV_PREFIX}KEY or {ENV_PREFIX}SECTION{ENV_DELIMITER}KEY "
            "(docs/configuration.md)"
        )
        lines.append(f"environment: {name} is not a hacontrol setting and is ignored; {hint}")
    return lines


def journal_problem(path: Path) -> str | None:
    """Why the controller could not keep its journal at ``path``, checked without
    creating anything: an existing path must be a file this user can read and
    append to; otherwise the nearest existing directory above it must let this user
    create entries (the journal creates missing directories). os.access asks the
    kernel, so a read-only filesystem counts even for root, but for root most
    permission bits do not."""
    try:
        if path.exists():
            if path.is_dir():
                return "is a directory; journal must name a file in it"
            if not os.access(path, os.R_OK | os.W_OK):
                return f"cannot be read and appended to by this user (uid {os.geteuid()})"
            return None
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"cannot be created: {parent} is not a directory"
        if not os.access(parent, os.W_OK | os.X_OK):
            return (
                f"cannot be created: this user (uid {os.geteuid()}) may not create "
                f"entries in {parent}"
            )
    except OSError as exc:
        return f"cannot be checked: {exc.strerror or type(exc).__name__}"
    return None


def _with_token_from_file(config: Config, source: str, base_dir: Path | None) -> Config:
    """Read ``api.token_file`` (relative to ``base_dir``) into ``api.token``."""
    path = config.api.token_file
    if path is None:
        return config
    path = path.expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    where = f"{source}: api.token_file"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{where}: {path}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{where}: {path}: is a directory, not a file"]) from None
    except PermissionError:
        raise ConfigError([f"{where}: {path}: cannot read: permission denied"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: {path}: not valid UTF-8 text"]) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{where}: {path}: cannot read: {reason}"]) from None
    token = text.strip()
    if not token:
        raise ConfigError([f"{where}: {path}: the file is empty; write the token in it"])
    try:
        secret = _check_token(token)
    except ValueError as exc:
        raise ConfigError([f"{where}: {path}: the token: {exc}"]) from None
    api = config.api.model_copy(update={"token": secret, "token_file": path})
    return config.model_copy(update={"api": api})


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{label}: configuration file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, not a configuration file"]) from None
    except PermissionError:
        raise ConfigError(
            [f"{label}: cannot read the configuration file: permission denied"]
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([f"{label}: cannot read the configuration file: {reason}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{label}: line {line}: not valid UTF-8 text"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: {_toml_error(str(exc))}"]) from None


def _toml_error(message: str) -> str:
    """'TOML syntax error at line L, column C: reason' from tomllib's message."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if match:
        reason = message[: match.start()]
        return f"TOML syntax error at line {match[1]}, column {match[2]}: {reason}"
    match = re.search(r"\s*\(at end of document\)\s*$", message)
    if match:
        return f"TOML syntax error at the end of the file: {message[: match.start()]}"
    return f"TOML syntax error: {message}"


def _env_values(environ: Mapping[str, str], label: str) -> dict[str, Any]:
    """What the environment sets, as nested data (used to say where a bad value came from)."""
    try:
        return dict(_MappingEnvSource(Config, environ)())
    except SettingsError as exc:
        raise ConfigError([f"{label}: {_settings_error(exc)}"]) from None


def _settings_error(exc: SettingsError) -> str:
    """A pydantic-settings parse failure (a table or array not given as JSON)."""
    match = re.search(r'field "(\w+)"', str(exc))
    if match is None:
        return f"environment: {redact_text(str(exc))}"
    field = match[1]
    return (
        f"{field} (set by {ENV_PREFIX}{field.upper()}): not valid JSON; a table or array "
        f"set from the environment must be JSON, or set single keys with "
        f"{ENV_PREFIX}SECTION{ENV_DELIMITER}KEY"
    )


def check_config(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """What ``hacontrol check-config`` prints and its exit code (0 valid, 2 invalid).

    Beyond the file itself, the local drivers' data directories are checked on this
    host (:func:`data_dir_findings`)."""
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        # A misspelt variable is often why a key is missing: say so next to it.
        hints = env_warnings(os.environ if env is None else env)
        return 2, "\n".join([*exc.problems, *(f"warning: {w}" for w in hints)])
    problems = data_dir_findings(config)[0]
    journal = journal_problem(config.journal)
    if journal is not None:
        problems.insert(0, f"journal: {config.journal}: {journal}")
    if problems:
        return 2, "\n".join(f"{path}: {p}" for p in problems)
    return 0, explain(config)


# ---------------------------------------------------------------- messages


def _key_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _env_name(loc: Sequence[str | int], env_data: Mapping[str, Any]) -> str | None:
    """The HACONTROL_* variable that set the value at ``loc``, if one did."""
    node: Any = env_data
    names: list[str] = []
    for part in loc:
        if isinstance(node, Mapping) and isinstance(part, str) and part in node:
            names.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            # A list comes whole from one variable holding JSON.
            return ENV_PREFIX + ENV_DELIMITER.join(names).upper()
        else:
            return None
    if not names or isinstance(node, Mapping):
        # A whole section: its keys may come from several places.
        return None
    return ENV_PREFIX + ENV_DELIMITER.join(names).upper()


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` (for 'allowed keys' lists)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation: Any = field.annotation
        candidates = [annotation, *get_args(annotation)]
        found = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if found is None:
            return None
        model = found
    return model


_SECRET_FIELDS = {"dsn", "replication_dsn", "token"}


def _describe(value: Any) -> str:
    """A short, secret-free rendering of a bad input for 'got ...'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        text = redact_text(value)
        return repr(text if len(text) <= 60 else text[:57] + "...")
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


_TYPE_WORDS = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "path_type": "must be a path (a string)",
    "list_type": "must be an array of tables ([[nodes]] ...)",
    "model_type": "must be a table ([section])",
    "model_attributes_type": "must be a table ([section])",
    "dict_type": "must be a table ([section])",
    "finite_number": "must be a finite number",
    "int_parsing_size": "must be a whole number of a sensible size",
}


def _too_few_nodes(count: object) -> str:
    return f"at least 2 nodes are required, a primary and a replica (got {count})"


_DRIVER_MODELS: dict[str, type[BaseModel]] = {
    "local": LocalDriverConfig,
    "command": CommandDriverConfig,
}


def _untag(loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], type[BaseModel] | None]:
    """pydantic puts a driver table's ``kind`` into the location
    (``nodes.0.driver.local.data_dir``): drop it, and say which model it chose."""
    for i, part in enumerate(loc[:-1]):
        tag = loc[i + 1]
        if part == "driver" and isinstance(tag, str) and tag in _DRIVER_MODELS:
            return loc[: i + 1] + loc[i + 2 :], _DRIVER_MODELS[tag]
    return loc, None


def _problem_text(
    error: Mapping[str, Any],
    loc: tuple[str | int, ...],
    tagged: type[BaseModel] | None = None,
) -> str:
    kind = str(error["type"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    got = "" if field in _SECRET_FIELDS else f" (got {_describe(value)})"
    kinds = ", ".join(_DRIVER_MODELS)
    if kind == "union_tag_not_found":
        return f"the table needs a kind: one of {kinds} (docs/drivers.md)"
    if kind == "union_tag_invalid":
        return f"kind must be one of: {kinds} (got {_describe(ctx.get('tag'))})"
    if kind == "extra_forbidden":
        model = tagged or _model_at(loc[:-1])
        allowed = ", ".join(model.model_fields) if model is not None else "none"
        return f"unknown key; allowed keys: {allowed}"
    if kind == "missing":
        if loc == ("nodes",):
            return "missing; at least 2 [[nodes]] tables (name, dsn) are required"
        return "required key is missing"
    if kind == "too_short" and loc == ("nodes",):
        return _too_few_nodes(ctx.get("actual_length", "?"))
    if kind == "greater_than":
        return f"must be greater than {_describe(ctx['gt'])}{got}"
    if kind == "greater_than_equal":
        return f"must be at least {_describe(ctx['ge'])}{got}"
    if kind == "less_than":
        return f"must be less than {_describe(ctx['lt'])}{got}"
    if kind == "less_than_equal":
        return f"must be at most {_describe(ctx['le'])}{got}"
    if kind == "enum" and field == "mode":
        allowed = ", ".join(m.value for m in FailoverMode)
        return f"must be one of: {allowed}{got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of: {expected}{got}"
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind] + got
    if kind == "value_error":
        reason = str(ctx.get("error", error.get("msg", "")))
        return redact_text(reason)
    return redact_text(str(error.get("msg", kind))) + got


def _problems(exc: ValidationError, label: str, env_data: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        cross = (error.get("ctx") or {}).get("error")
        render: Callable[[tuple[str | int, ...]], str] = _key_path
        if isinstance(cross, _CrossFieldProblems):
            entries = [(loc, msg) for loc, msg in cross.problems]
            render = cross.where
        else:
            loc, tagged = _untag(tuple(error["loc"]))
            entries = [(loc, _problem_text(error, loc, tagged))]
        for loc, message in entries:
            source = _env_name(loc, env_data)
            where = render(loc) + (f" (set by {source})" if source else "")
            lines.append(f"{label}: {where}: {message}")
    return lines


# ---------------------------------------------------------------- explain


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def detection_delay(config: Config) -> float:
    """Seconds from a crashed primary's first failed probe to it being declared failed.

    N consecutive failures spanning at least the window: the first failure at
    t0, then one per interval until both the count and the span are met.
    """
    t = config.timing
    rounds = max(t.failure_threshold - 1, math.ceil(t.detection_window / t.probe_interval - 1e-9))
    return rounds * t.probe_interval


@dataclass(frozen=True, slots=True)
class _LocalDir:
    index: int
    node: NodeConfig
    data_dir: Path
    expected: int | None
    reading: PortReading


def data_dir_findings(config: Config) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the local drivers' data directories as this host
    shows them: a directory that is not a data directory, or whose server runs (or
    would run) on another port than its node's DSN, is a problem (two nodes' swapped
    data_dir is one problem naming both); a missing one, or one whose port cannot be
    told, a warning. Each line starts with the key path."""
    problems: list[tuple[int, str]] = []
    warnings: list[str] = []
    dirs: list[_LocalDir] = []
    for i, node in enumerate(config.nodes):
        driver = node.driver
        if not isinstance(driver, LocalDriverConfig):
            continue
        where = f"nodes[{i}].driver.data_dir"
        path = driver.data_dir
        state = directory_state(path)
        if state in ("missing", "empty"):
            what = "does not exist on this host" if state == "missing" else "is empty"
            warnings.append(
                f"{where} ({node.name}): {path} {what}; a local driver runs pg_ctl here, next "
                f"to the data directory, and until one is there it can only re-clone "
                f"{node.name} (rejoin.allow_basebackup)"
            )
            continue
        if state == "unreadable":
            warnings.append(f"{where} ({node.name}): cannot look into {path}; run check-config "
                            "as the controller's user to check it")
            continue
        if state != "pgdata":
            what = "is not a directory" if state == "not_a_directory" else (
                "is not a PostgreSQL data directory (no PG_VERSION)"
            )
            problems.append((i, f"{where}: {path} {what}; {node.name}'s data_dir must be its "
                                "PostgreSQL data directory"))
            continue
        pinned = config.system_identifier
        found = control_file_identifier(path) if pinned is not None else None
        if pinned is not None and found is not None and found != pinned:
            problem = identifier_problem(node.name, path, found, pinned,
                                         "pinned by system_identifier")
            problems.append((i, f"{where}: {problem}"))
            continue
        reading = directory_port(path)
        if reading.port is None:
            warnings.append(
                f"{where} ({node.name}): cannot tell which port {path}'s server would run on "
                f"({reading.problem}); the driver refuses to stop, start, rewind or re-clone "
                f"{node.name} until it can"
            )
            continue
        dirs.append(_LocalDir(i, node, path, dsn_port(node.dsn), reading))
    problems += _port_mismatches(config, dirs)
    return [text for _, text in sorted(problems, key=lambda p: p[0])], warnings


def _port_mismatches(config: Config, dirs: list[_LocalDir]) -> list[tuple[int, str]]:
    """One problem per data directory on another node's port; one per swapped pair."""
    wrong = {d.index: d for d in dirs if d.expected is not None and d.reading.port != d.expected}
    by_index = {d.index: d for d in dirs}
    problems: list[tuple[int, str]] = []
    done: set[int] = set()
    for i, d in sorted(wrong.items()):
        if i in done:
            continue
        owner = _port_owner(config, d, by_index)
        where = f"nodes[{i}].driver.data_dir"
        name = d.node.name
        other = wrong.get(owner) if owner is not None else None
        if other is not None and other.reading.port == d.expected and owner not in done:
            done |= {i, other.index}
            b = other.node.name
            problems.append((i, (
                f"{where}: {name} and {b} have their data directories swapped: {name}'s "
                f"data_dir {d.data_dir}: {d.reading.describe()}, the port of {b}'s dsn; "
                f"{b}'s data_dir {other.data_dir}: {other.reading.describe()}, the port of "
                f"{name}'s dsn; exchange the two data_dir values"
            )))
        elif owner is not None:
            b = config.nodes[owner].name
            problems.append((i, (
                f"{where}: {d.data_dir} is {b}'s data directory, not {name}'s: "
                f"{d.reading.describe()}, the port of {b}'s dsn, but {name}'s dsn names port "
                f"{d.expected}; fix {name}'s data_dir"
            )))
        else:
            problems.append((i, (
                f"{where}: {d.data_dir} is not {name}'s data directory: "
                f"{d.reading.describe()}, but {name}'s dsn names port {d.expected}; fix "
                f"{name}'s data_dir (or its dsn) so both name the same server"
            )))
    return problems


def _port_owner(config: Config, d: _LocalDir, local: Mapping[int, _LocalDir]) -> int | None:
    """The other node whose DSN names the port ``d``'s directory shows: one with a local
    driver first (the same host), else one on the same DSN host."""
    host = d.node.endpoint()[0]
    same_port = [
        j for j, n in enumerate(config.nodes)
        if j != d.index and dsn_port(n.dsn) == d.reading.port
    ]
    for j in same_port:
        if j in local or isinstance(config.nodes[j].driver, LocalDriverConfig):
            return j
    for j in same_port:
        if config.nodes[j].endpoint()[0] == host:
            return j
    return None


def config_warnings(config: Config) -> list[str]:
    """Things that are allowed but probably not what the operator wants, one line
    each and free of secrets: what ``check-config`` prints under "warnings:", and what
    the service logs when it starts and after every reload. Includes the misspelt
    ``HACONTROL_*`` variables of the environment the configuration was loaded from."""
    warnings: list[str] = list(config._env_warnings)
    for i, node in enumerate(config.nodes):
        for key in ("dsn", "replication_dsn"):
            dsn = getattr(node, key)
            if dsn and dsn_password(dsn):
                warnings.append(
                    f"nodes[{i}].{key} ({node.name}): a password is written in the DSN; "
                    "use a libpq passfile (~/.pgpass or passfile=...), PGPASSWORD, or a "
                    "service file instead"
                )
        service = conninfo_to_dict(node.dsn).get("service")
        if service and not node.replication_dsn:
            warnings.append(
                f"nodes[{i}].dsn ({node.name}): names service {service!r} and there is no "
                f"replication_dsn, so replicas get primary_conninfo 'service={service} ...', "
                "which each replica's server resolves in its own service file, as its own OS "
                "user; set replication_dsn (host=... port=...) or define the service there"
            )
    warnings += data_dir_findings(config)[1]
    for i, node in enumerate(config.nodes):
        driver = node.driver
        acts = isinstance(driver, CommandDriverConfig) and any(
            (driver.stop, driver.start, driver.rewind, driver.basebackup, driver.standby_config)
        )
        if isinstance(driver, CommandDriverConfig) and acts and driver.identity is None:
            warnings.append(
                f"nodes[{i}].driver ({node.name}): a command driver without an identity "
                f"command cannot check that its commands act on {node.name}'s data "
                "directory; add identity = \"...\" (docs/drivers.md)"
            )
    promotable = [n for n in config.nodes if n.priority > 0]
    if not promotable:
        warnings.append("every node has priority 0: no node can ever be promoted")
    elif len(promotable) == 1:
        warnings.append(
            f"only {promotable[0].name} has priority > 0: if it is the primary that fails, "
            "there is no candidate"
        )
    if not config.postgres.manage_settings:
        warnings.append(
            "postgres.manage_settings is off: the nodes keep their own wal_receiver_timeout "
            "(PostgreSQL default 60 s); a replica of an idle primary may hear nothing for up "
            f"to half of it, so it must be below 2 × (timing.replica_silence − "
            f"{SILENCE_MARGIN_S:g} s) = "
            f"{_seconds(2 * (config.timing.replica_silence - SILENCE_MARGIN_S))}, or a hung "
            "primary is only confirmed by its replicas after their own timeout"
        )
    if not config.postgres.heartbeat:
        warnings.append(
            "postgres.heartbeat is off: on an idle primary, replica lag and liveness are "
            "measured less precisely"
        )
    if (
        config.mode is not FailoverMode.MANUAL
        and not config.hooks.fence
        and not config.hooks.pre_promote
        and config.replication.synchronous == "off"
    ):
        warnings.append(
            "no hooks.fence, no hooks.pre_promote and replication.synchronous is off: a hung "
            "old primary that wakes up after a failover can take writes for up to one probe "
            f"round ({_seconds(config.timing.probe_interval)} + probe time) before it is "
            "fenced; set a fence or pre_promote hook (e.g. STONITH), or use "
            'replication.synchronous = "quorum"'
        )
    if (
        len(config.nodes) == 2
        and config.mode is not FailoverMode.MANUAL
        and config.replication.synchronous == "off"
    ):
        warnings.append(
            "2 nodes: an automatic failover needs a strict majority of the nodes to confirm "
            "(2 replicas), which 2 nodes cannot give, so every failover is manual; add a "
            'third node, or use replication.synchronous = "quorum"'
        )
    if config.failover.failback and config.mode is not FailoverMode.AUTOMATIC:
        warnings.append(f"failover.failback has no effect in {config.mode.value} mode")
    warnings += _replication_warnings(config)
    warnings += _api_warnings(config.api)
    return warnings


def _replication_warnings(config: Config) -> list[str]:
    rep = config.replication
    if rep.synchronous != "quorum":
        return (
            ["replication.strict has no effect while replication.synchronous is off"]
            if rep.strict
            else []
        )
    warnings: list[str] = []
    replicas = len(config.nodes) - 1
    if rep.strict and rep.quorum == replicas:
        warnings.append(
            f"replication.strict with quorum {rep.quorum} of {replicas} replicas: writes block"
            " whenever any single replica is down"
        )
    never = [n.name for n in config.nodes if n.priority == 0]
    if never:
        warnings.append(
            f"{', '.join(never)} (priority 0) acknowledge commits but are never promoted: when"
            " one of them holds the most WAL after a failure, the failover waits"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_warnings(api: ApiConfig) -> list[str]:
    if not api.enabled:
        return []
    warnings: list[str] = []
    host, port = api.address()
    if not _is_loopback(host):
        warnings.append(
            f"api.listen ({host}:{port}) is not a loopback address: status, health and "
            "metrics endpoints answer anyone who can reach it (only commands need the "
            "token); restrict access with a firewall"
        )
    if api.token_file is not None:
        try:
            mode = api.token_file.stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            warnings.append(
                f"api.token_file ({api.token_file}) is readable by other users "
                f"(mode {mode & 0o777:o}); make it chmod 600"
            )
    return warnings


_MODE_TEXT = {
    FailoverMode.AUTOMATIC: "automatic: fails over by itself",
    FailoverMode.SEMI_AUTOMATIC: (
        "semi-automatic: fails over by itself, never fails back on its own"
    ),
    FailoverMode.MANUAL: "manual: detects and alerts only; an operator decides",
}


def _api_line(api: ApiConfig) -> str:
    if not api.enabled:
        return "api: disabled"
    host, port = api.address()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if api.token_file is not None:
        token = f"the bearer token from {api.token_file}"
    elif api.bearer_token():
        token = "the configured bearer token"
    else:
        token = (
            "a bearer token; none configured, so they are refused: set api.token_file or "
            "HACONTROL_API__TOKEN"
        )
    return f"api: http://{where} (status, health checks and metrics open; commands need {token})"


def _replication_lines(config: Config) -> list[str]:
    rep = config.replication
    if rep.synchronous != "quorum":
        return [
            "replication: asynchronous as far as the controller is concerned "
            "(synchronous_standby_names is left alone); a failover may lose commits the "
            "primary acknowledged but no replica had received"
        ]
    replicas = len(config.nodes) - 1
    lines = [
        f"replication: synchronous quorum, ANY {rep.quorum} of the healthy replicas "
        "(synchronous_standby_names managed on the primary)",
        f"  each commit waits until {rep.quorum} replica(s) flushed it; a failover promotes "
        "only a member of the set, once N - k + 1 members are reachable, the one with the "
        "most WAL: no acknowledged commit is lost",
        f"  with all {replicas} replicas in the set, a failover needs "
        f"{replicas - rep.quorum + 1} of them reachable; a replica that fails is dropped "
        "from the set, so a later failover needs one fewer",
    ]
    if rep.strict:
        lines.append(
            f"  strict: with fewer than {rep.quorum} healthy replica(s) the set keeps "
            f"{rep.quorum} names over all {replicas} replicas and writes block until they return"
        )
    else:
        lines.append(
            f"  not strict: with fewer than {rep.quorum} healthy replica(s) it degrades to "
            "fewer names, or asynchronous (event sync_degraded), and is restored when they "
            "return (event sync_restored)"
        )
    return lines


def _driver_text(driver: LocalDriverConfig | CommandDriverConfig | None) -> str:
    if driver is None:
        return "none (SQL only: rejoin by hand)"
    if isinstance(driver, LocalDriverConfig):
        return f"local: pg_ctl/pg_rewind/pg_basebackup on this host, data in {driver.data_dir}"
    steps = [name for name in ("stop", "start", "status", "rewind", "basebackup",
                               "standby_config", "fence", "identity") if getattr(driver, name)]
    return f"command: {', '.join(steps) or 'no steps'}"


def rejoin_capable(config: Config) -> list[str]:
    """Nodes whose driver can run the rejoin procedure (in file order)."""
    from hacontrol.rejoin import missing_steps

    allow = config.rejoin.allow_basebackup
    drivers = config.build_drivers()
    return [
        n.name
        for n in config.nodes
        if n.driver is not None and not missing_steps(drivers[n.name], allow_basebackup=allow)
    ]


def _rejoin_lines(config: Config) -> list[str]:
    rj, sw = config.rejoin, config.switchover
    capable = rejoin_capable(config)
    others = [n.name for n in config.nodes if n.name not in capable]
    lines = ["rejoin (a fenced old primary back as a replica):"]
    if capable:
        how = "rewind" + (", then a base backup if that fails" if rj.allow_basebackup else "")
        when = (
            "automatically after a failover (a failed attempt retried up to 5 times, after"
            " 5, 10, 20 and 40 s), and on 'hacontrol rejoin NODE'"
            if rj.automatic
            else "on 'hacontrol rejoin NODE' (automatic rejoin is off)"
        )
        lines.append(f"  {', '.join(capable)}: by the driver ({how}), {when}; it must stream "
                     f"within {_seconds(rj.timeout)} of each start, or it is stopped and stays "
                     "fenced")
    if others:
        lines.append(f"  {', '.join(others)}: no driver that can: rejoin by hand, then report it "
                     "with 'hacontrol rejoin NODE' (docs/runbook.md)")
    lines += [
        "switchover (planned, no acknowledged write lost):",
        f"  fence the old primary, the target must replay its last WAL within "
        f"{_seconds(sw.catchup_timeout)} (else rolled back), promote it, repoint the others, "
        "and rejoin the old primary when its driver can stop and start it (without one it "
        "stays a fenced, read-only primary that needs a rejoin)",
        f"  reported overdue after {_seconds(sw.timeout)}, abandoned after "
        f"{_seconds(2 * sw.timeout)}; a failed candidate is not tried again for "
        f"{_seconds(config.failover.candidate_backoff)}",
    ]
    return lines


def _identity_line(config: Config) -> str:
    checks = (
        "drivers act only on a data directory that shows its node's dsn port and, once "
        "known, the cluster's system identifier"
    )
    if config.system_identifier is not None:
        return (f"identity: system identifier {config.system_identifier} (pinned): a node or "
                f"data directory reporting another is never acted on; {checks}")
    return f"identity: the system identifier is learned from the nodes (not pinned); {checks}"


def explain(config: Config) -> str:
    """A human summary of what this configuration makes the controller do."""
    t, f, pg, h = config.timing, config.failover, config.postgres, config.hooks
    lines = [f"mode: {_MODE_TEXT[config.mode]}", _identity_line(config), "nodes:"]
    width = max(len(n.name) for n in config.nodes)
    for node in config.nodes:
        note = "never promoted" if node.priority == 0 else f"priority {node.priority}"
        lines.append(f"  {node.name:<{width}}  {note:<16} {redact_dsn(node.dsn)}")
        if node.replication_dsn:
            lines.append(f"  {'':<{width}}  {'replication':<16} {redact_dsn(node.replication_dsn)}")
        lines.append(f"  {'':<{width}}  {'driver':<16} {_driver_text(node.driver)}")
    delay = detection_delay(config)
    probes = round(delay / t.probe_interval) + 1
    lines += [
        "detection:",
        f"  every node is probed every {_seconds(t.probe_interval)} "
        f"(one probe may take up to {_seconds(t.probe_timeout)})",
        f"  a crashed primary is declared failed after {t.failure_threshold} failed probes "
        f"spanning >= {_seconds(t.detection_window)}, "
        f"about {round(delay, 3):g} s ({probes} probes) at a {_seconds(t.probe_interval)} "
        "interval, then confirmed by the replicas "
        "(WAL receiver not streaming)",
        f"  a hung primary is confirmed once every reachable replica has heard nothing from it "
        f"for {_seconds(t.replica_silence)}",
        "  if the replicas still hear from the primary, only the controller is cut off: "
        "no failover, a warning",
        f"  an automatic failover needs {len(config.nodes) // 2 + 1} of the "
        f"{len(config.nodes)} nodes' replicas confirming (a strict majority), so a "
        "controller cut off with a minority never promotes",
        f"  a failed node counts as healthy again after {t.recovery_threshold} "
        "consecutive healthy probes",
        "candidates:",
        f"  reachable replicas with priority > 0, at most {_bytes(f.max_lag_bytes)} behind; "
        "most WAL first, then the least WAL left to replay, then priority, then name",
        f"  at most one failover in flight; {_seconds(t.cooldown)} cool-down between automatic "
        f"failovers; a promotion not complete after {_seconds(t.promote_timeout)} is sent once"
        " more, then abandoned (no other node is promoted while it may still land)",
    ]
    if f.failback and config.mode is FailoverMode.AUTOMATIC:
        lines.append(
            f"  fails back to the highest-priority node {_seconds(f.failback_delay)} after it "
            "is healthy again"
        )
    else:
        lines.append("  no automatic failback")
    lines.append("postgres settings:")
    if pg.manage_settings:
        managed = ", ".join(f"{k} = {v}ms" for k, v in config.managed_settings_ms().items())
        lines.append(f"  managed on every node (ALTER SYSTEM + reload): {managed}")
    else:
        lines.append("  not managed (the nodes keep their own)")
    lines.append(
        "  heartbeat: a tiny WAL record on the primary every probe round"
        if pg.heartbeat
        else "  heartbeat: off"
    )
    lines += _replication_lines(config)
    lines += _rejoin_lines(config)
    lines.append(f"hooks (timeout {_seconds(h.timeout)}):")
    for name in ("pre_promote", "fence", "on_role_change"):
        command = getattr(h, name)
        lines.append(f"  {name}: {redact_text(command) if command else '(none)'}")
    if h.fence:
        lines.append(
            "  an unreachable old primary is fenced (fence hook) before a promote; "
            "a failed fence aborts the promote"
        )
    lines.append(f"journal: {config.journal}")
    lines.append(_api_line(config.api))
    warnings = config_warnings(config)
    if warnings:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in warnings]
    return "\n".join(lines)

