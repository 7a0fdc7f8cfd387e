"""Immutable data shared by the probe, the decision core and the actions.

Everything here is plain data: no I/O, no clocks. Times are seconds on the
controller's monotonic clock (``time.monotonic()``), LSNs are integers (bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FailoverMode(StrEnum):
    """How much the controller may do on its own."""

    AUTOMATIC = "automatic"  # fails over (and, if enabled, fails back) by itself
    SEMI_AUTOMATIC = "semi-automatic"  # fails over by itself, never fails back on its own
    MANUAL = "manual"  # detects and alerts, waits for an operator


class Role(StrEnum):
    """What a node said it is on its last successful probe."""

    PRIMARY = "primary"
    REPLICA = "replica"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One configured node."""

    name: str
    dsn: str
    priority: int = 100
    replication_dsn: str | None = None
    # Where replicas reach this node (``host=... port=...``) when its DSN names a
    # service: resolved from the service file by the configuration, since the DSN
    # text itself says nothing about host and port. None: read from the DSN.
    address: str | None = None


@dataclass(frozen=True, slots=True)
class WalReceiver:
    """A replica's ``pg_stat_wal_receiver`` row."""

    status: str
    sender_host: str | None
    sender_port: int | None
    # Seconds since the replica last heard anything (WAL or keepalive) from its
    # upstream, measured on the replica's clock: now() - last_msg_receipt_time.
    last_msg_age_s: float | None
    received_tli: int | None = None


@dataclass(frozen=True, slots=True)
class ReplicationClient:
    """One ``pg_stat_replication`` row on a primary."""

    application_name: str
    client_addr: str | None
    state: str
    sync_state: str
    sent_lsn: int | None
    flush_lsn: int | None
    replay_lsn: int | None


@dataclass(frozen=True, slots=True)
class TimelineSwitch:
    """One line of a timeline history file: this node's history left ``timeline``
    at ``switch_lsn`` (everything before it is shared with that timeline)."""

    timeline: int
    switch_lsn: int


@dataclass(frozen=True, slots=True)
class Observation:
    """The result of one probe of one node."""

    node: str
    at: float
    reachable: bool
    error: str | None = None
    role: Role = Role.UNKNOWN
    timeline: int | None = None
    # Primary: pg_current_wal_lsn(). Replica: None.
    current_lsn: int | None = None
    # Replica: pg_last_wal_receive_lsn() / pg_last_wal_replay_lsn().
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    # Replica: seconds since the last replayed transaction's commit time.
    replay_lag_s: float | None = None
    read_only: bool | None = None
    wal_receiver: WalReceiver | None = None
    replication: tuple[ReplicationClient, ...] = ()
    system_identifier: int | None = None
    latency_s: float | None = None
    # current_setting('synchronous_standby_names') as the node reports it (None:
    # not read). On a primary this is the synchronous set in force.
    synchronous_standby_names: str | None = None
    # Replica: pg_is_wal_replay_paused() (None: not a replica or not read).
    replay_paused: bool | None = None
    # Primary on a timeline above 1: its timeline history, oldest first (None: not
    # read, e.g. no permission to read pg_wal). Proves which WAL it shares.
    history: tuple[TimelineSwitch, ...] | None = None

    @property
    def unreplayed_bytes(self) -> int | None:
        """Replica: WAL received but not replayed yet (what a promote must still replay)."""
        if self.receive_lsn is None or self.replay_lsn is None:
            return None
        return max(0, self.receive_lsn - self.replay_lsn)

    def fork_lsn(self, timeline: int) -> int | None:
        """Where this node's history left ``timeline`` (None: not in its known history)."""
        for switch in self.history or ():
            if switch.timeline == timeline:
                return switch.switch_lsn
        return None

    @property
    def wal_position(self) -> int | None:
        """The furthest WAL this node holds: current LSN on a primary, received
        (or, failing that, replayed) LSN on a replica."""
        if self.role is Role.PRIMARY:
            return self.current_lsn
        candidates = [x for x in (self.receive_lsn, self.replay_lsn) if x is not None]
        return max(candidates) if candidates else None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One probe round: the latest observation of every configured node."""

    at: float
    observations: dict[str, Observation] = field(default_factory=dict)

    def get(self, node: str) -> Observation | None:
        """The observation of ``node``, if it was probed this round."""
        return self.observations.get(node)


def format_lsn(lsn: int | None) -> str:
    """Render an integer LSN the way PostgreSQL prints it (``16/B374D848``)."""
    if lsn is None:
        return "-"
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str | None) -> int | None:
    """Parse PostgreSQL's ``X/Y`` LSN text into an integer."""
    if text is None:
        return None
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """Everything the pure decision core needs to know about configuration."""

    mode: FailoverMode = FailoverMode.AUTOMATIC
    # How often every node is probed.
    probe_interval_s: float = 0.2
    # A primary is failed only after this many consecutive failed probes ...
    failure_threshold: int = 3
    # ... that span at least this long (first failure to latest failure).
    detection_window_s: float = 0.5
    # A reachable replica confirms it lost the primary when its WAL receiver is
    # not streaming, or when it has heard nothing from its upstream for longer
    # than this (covers a hung primary whose TCP connections stay open).
    replica_silence_s: float = 3.0
    # A node that failed must pass this many consecutive healthy probes before
    # it counts as healthy again.
    recovery_threshold: int = 3
    # A replica further behind the most advanced candidate than this is never
    # promoted automatically.
    max_lag_bytes: int = 16 * 1024 * 1024
    # Minimum time between two automatic failovers.
    cooldown_s: float = 300.0
    # A promotion not observed to complete within this long is sent once more (to the
    # same candidate), and abandoned after as long again.
    promote_timeout_s: float = 30.0
    # At most one repoint of the same replica within this long.
    repoint_retry_s: float = 5.0
    # Fail back to the highest-priority node once it is healthy again (automatic mode only).
    failback: bool = False
    failback_delay_s: float = 300.0
    # A candidate whose promote failed or was abandoned is not tried again for this long.
    candidate_backoff_s: float = 60.0
    # A planned switchover (or failback) still running after this long is reported;
    # after twice this long without an outcome from the shell it is abandoned.
    switchover_timeout_s: float = 60.0
    # Synchronous replication: "off" (the controller leaves synchronous_standby_names
    # alone) or "quorum" (it manages 'ANY k (...)' on the primary; see docs/synchronous.md).
    synchronous: str = "off"
    # k: commits wait for this many synchronous replicas.
    sync_quorum: int = 1
    # True: never fewer than k names, writes block instead; False: degrade with an event.
    sync_strict: bool = False
    # A reachable replica that does not stream from the primary yet (being repointed
    # after a failover) stays a synchronous member this long before it is dropped.
    sync_grace_s: float = 5.0
    # Rejoin a fenced old primary by itself (retried with back-off), when its node is in
    # ``rejoin_nodes``: the nodes whose driver can run the rejoin procedure.
    rejoin_automatic: bool = True
    rejoin_nodes: frozenset[str] = frozenset()
    # A fence hook is configured: an unreachable old primary is fenced (the hook,
    # e.g. STONITH) before a promote, and a failed fence aborts the promote.
    fence_before_promote: bool = False
    # The cluster's system identifier pinned in the configuration (None: learnt
    # from the nodes). A node reporting another one is foreign and never acted on.
    system_identifier: int | None = None
