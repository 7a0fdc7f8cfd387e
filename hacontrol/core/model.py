"""Immutable data shared by the probe, the decision core and the actions.

Everything here is plain data: no I/O, no clocks. Times are seconds on the
controller's monotonic clock (``time.monotonic()``), LSNs are integers (bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What a node said it is on its last successful probe."""

    PRIMARY = "primary"
    REPLICA = "replica"
    UNKNOWN = "unknown"


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def normal_host(host: str | None) -> str | None:
    """A host name as compared between DSNs and WAL receivers (None: libpq's socket)."""
    if host is None or host == "":
        return None
    text = host.strip().lower()
    return "loopback" if text in _LOOPBACK else text


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One host/port a node can be reached at (host None: libpq's default socket)."""

    host: str | None
    port: int


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
    # Where replicas connect to this node, parsed once when the configuration is
    # loaded (``hacontrol.io.pgconn.node_spec``), so the core never parses a DSN.
    endpoints: tuple[Endpoint, ...] = ()


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


class SlotKind(StrEnum):
    """``pg_replication_slots.slot_type``."""

    PHYSICAL = "physical"
    LOGICAL = "logical"


@dataclass(frozen=True, slots=True)
class ReplicationSlot:
    """One ``pg_replication_slots`` row."""

    name: str
    kind: SlotKind
    active: bool
    restart_lsn: int | None = None
    # Logical: what its consumer confirmed; it resumes from there.
    confirmed_flush_lsn: int | None = None
    database: str | None = None
    plugin: str | None = None
    # reserved, extended, unreserved or lost (max_slot_wal_keep_size).
    wal_status: str | None = None
    # PostgreSQL 17+: a failover slot, and (on a replica) one synced from the primary.
    failover: bool | None = None
    synced: bool | None = None
    # Why the server invalidated it (None: valid).
    invalidated: str | None = None
    # Dropped at the end of its session (a slot still being synced is one until it
    # has caught up: promoted then, it is gone).
    temporary: bool = False

    @property
    def valid(self) -> bool:
        """True unless the server invalidated the slot (its WAL or rows are gone)."""
        return self.invalidated is None and self.wal_status != "lost"


@dataclass(frozen=True, slots=True)
class LogicalSlotSpec:
    """One configured permanent logical slot (``[[slots]]``)."""

    name: str
    database: str
    plugin: str = "pgoutput"


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
    # server_version_num (e.g. 180001; None: not read).
    server_version: int | None = None
    # Its replication slots (None: not read) and, on a replica, primary_slot_name
    # ("" when it streams without one) and sync_replication_slots (PostgreSQL 17+).
    slots: tuple[ReplicationSlot, ...] | None = None
    primary_slot_name: str | None = None
    slot_sync: bool | None = None
    # max_slot_wal_keep_size in MB (-1: unlimited) and synchronized_standby_slots.
    max_slot_wal_keep_mb: int | None = None
    synchronized_standby_slots: str | None = None

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

    def slot(self, name: str) -> ReplicationSlot | None:
        """The slot called ``name`` on this node (None: absent or not read)."""
        return next((s for s in self.slots or () if s.name == name), None)

    def retained_bytes(self, slot: ReplicationSlot) -> int | None:
        """WAL this node keeps for ``slot``: from its restart LSN to the node's position."""
        position = self.wal_position
        if position is None or slot.restart_lsn is None:
            return None
        return max(0, position - slot.restart_lsn)

    @property
    def wal_position(self) -> int | None:
        """The furthest WAL this node holds: current LSN on a primary, received
        (or, failing that, replayed) LSN on a replica."""
        if self.role is Role.PRIMARY:
            return self.current_lsn
        candidates = [x for x in (self.receive_lsn, self.replay_lsn) if x is not None]
        return max(candidates) if candidates else None


@dataclass(frozen=True, slots=True)
class Witnesses:
    """With ``[dcs]``: what the other controllers of the scope see with their own
    probes, as they last published it."""

    # Every controller of the scope, this one included.
    controllers: int
    # Node -> how long each other controller reporting it (freshly) has failed to
    # probe it, in seconds.
    failing_s: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One probe round: the latest observation of every configured node."""

    at: float
    observations: dict[str, Observation] = field(default_factory=dict)
    # The other controllers' view (None: this controller runs alone).
    witnesses: Witnesses | None = None

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
