"""The whole configuration (:class:`Config`), its rules between keys, and its
conversion to the core's types (:meth:`Config.decision_settings`,
:meth:`Config.node_specs`).

The environment is read by a pydantic-settings :class:`EnvSettingsSource`
(nested keys joined by ``__``, e.g. ``HACONTROL_TIMING__PROBE_INTERVAL``) and
wins over the file; :mod:`hacontrol.config.load` sets what both hold for one
validation (:data:`LOADING`). Rules between keys that the controller's timing
really depends on are in :func:`_cross_field_problems`, which also resolves every
node's DSN as libpq would (service file, ``PG*`` variables of the environment it
is loaded from) and refuses the libpq parameters the controller's connections
cannot honour (:mod:`hacontrol.io.dsn`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo
from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from hacontrol.config.dcs import DcsConfig
from hacontrol.config.errors import CrossFieldProblems
from hacontrol.config.sections import (
    ApiConfig,
    FailoverConfig,
    HooksConfig,
    LogicalSlotConfig,
    NodeConfig,
    PostgresConfig,
    RejoinConfig,
    ReplicationConfig,
    SwitchoverConfig,
    TimingConfig,
)
from hacontrol.core.model import LogicalSlotSpec, NodeSpec
from hacontrol.core.settings import DecisionSettings, FailoverMode, SyncMode
from hacontrol.core.slot_names import member_slot_name
from hacontrol.io.drivers.base import NodeDriver
from hacontrol.io.drivers.config import CommandDriverConfig, LocalDriverConfig
from hacontrol.io.drivers.factory import build_driver
from hacontrol.io.drivers.identity import UINT64_MASK
from hacontrol.io.dsn import Resolved, dsn_port, node_spec, resolve
from hacontrol.io.dsn_params import DsnError

ENV_PREFIX = "HACONTROL_"
ENV_DELIMITER = "__"
DEFAULT_JOURNAL = "hacontrol-journal.jsonl"
# Slack between the longest silence a healthy, idle upstream can cause on a
# replica (wal_receiver_timeout / 2, when the replica pings it) and the silence
# that counts as "lost the primary": covers one probe round plus scheduling.
SILENCE_MARGIN_S = 0.5
# A cross-field rule: the promote's connection and the probe that sees it promoted
# may each use one probe timeout.
PROMOTE_PROBES = 2


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


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What one validation reads: the file's known keys and the environment."""

    file_data: dict[str, Any]
    environ: Mapping[str, str]


LOADING: ContextVar[LoadContext | None] = ContextVar("hacontrol_config_loading", default=None)


class MappingEnvSource(EnvSettingsSource):
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
    # Permanent logical slots ([[slots]]).
    slots: list[LogicalSlotConfig] = Field(default_factory=list)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    rejoin: RejoinConfig = Field(default_factory=RejoinConfig)
    switchover: SwitchoverConfig = Field(default_factory=SwitchoverConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    # The etcd cluster of several controllers (docs/ha.md); None: this controller alone.
    dcs: DcsConfig | None = None
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
        loading = LOADING.get()
        if loading is None:
            return env_settings, init_settings
        return (
            MappingEnvSource(settings_cls, loading.environ),
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
        loading = LOADING.get()
        problems = _cross_field_problems(self, os.environ if loading is None else loading.environ)
        if problems:
            raise CrossFieldProblems(problems, [n.name for n in self.nodes])
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
            synchronous=SyncMode(self.replication.synchronous),
            sync_quorum=self.replication.quorum,
            sync_strict=self.replication.strict,
            member_slots=self.replication.slots,
            slot_retention_s=self.replication.slot_retention,
            logical_slots=tuple(
                LogicalSlotSpec(s.name, s.database, s.plugin) for s in self.slots
            ),
            require_logical_slots=f.require_logical_slots,
        )

    def node_specs(self) -> tuple[NodeSpec, ...]:
        """The configured nodes, in file order."""
        return tuple(
            node_spec(n.name, n.dsn, n.priority, n.replication_dsn,
                      _service_address(n.replication_dsn or n.dsn))
            for n in self.nodes
        )

    def node_drivers(self) -> dict[str, LocalDriverConfig | CommandDriverConfig | None]:
        """Each node's ``[nodes.driver]`` table (None: no driver)."""
        return {n.name: n.driver for n in self.nodes}

    def build_drivers(self) -> dict[str, NodeDriver]:
        """Each node's driver, told the port of the node's DSN (which its data directory
        must show) and the pinned ``system_identifier``."""
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
    problems += _slot_problems(config)
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


def _slot_problems(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Two nodes whose member slots would share a name; two [[slots]] of one name."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if config.replication.slots:
        owners: dict[str, str] = {}
        for i, node in enumerate(config.nodes):
            slot = member_slot_name(node.name)
            other = owners.setdefault(slot, node.name)
            if other != node.name:
                problems.append((("nodes", i, "name"), (
                    f"its member slot would be {slot!r}, as {other!r}'s: rename one node, or"
                    " set [replication] slots = false")))
    seen: set[str] = set()
    for i, slot_config in enumerate(config.slots):
        if slot_config.name in seen:
            problems.append((("slots", i, "name"), f"duplicate slot name {slot_config.name!r}"))
        seen.add(slot_config.name)
    return problems
