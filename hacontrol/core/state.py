"""What the decision core remembers between probe rounds.

Plain immutable data: ``decide`` takes one ``ControllerState`` and returns the next.
The journal seeds the durable parts (known primary, operator flags, last failover)
after a restart through :func:`initial_state`; everything else is re-derived from
the cluster within a few rounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hacontrol.core.model import NodeSpec

# Automatic rejoins of one fenced node: at most this many in a row, the first retry
# after REJOIN_BACKOFF_S, each further one after twice the wait (at most REJOIN_MAX_WAIT_S).
REJOIN_ATTEMPTS = 5
REJOIN_BACKOFF_S = 5.0
REJOIN_MAX_WAIT_S = 120.0


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """Probe history of one node, as far as the rules need it."""

    consecutive_failures: int = 0
    # Observation times of the first and latest failure of the current run of failures.
    first_failure_at: float | None = None
    last_failure_at: float | None = None
    consecutive_successes: int = 0
    # Declared failed by the sustained-failure rule; cleared after the recovery threshold.
    down: bool = False
    # Since when this replica has been seen not streaming from the current primary.
    misrouted_since: float | None = None
    last_repoint_at: float | None = None
    # Not a promotion candidate before this time (after a failed or abandoned promote).
    backoff_until: float | None = None
    # When the latest healthy probe was (None: never healthy since the controller started).
    last_ok_at: float | None = None
    # The primary this replica was last seen streaming from live (heard within
    # replica_silence_s), and when: only a replica that was streaming from the
    # primary shortly before it failed may confirm the failure.
    streaming_from: str | None = None
    last_streaming_at: float | None = None
    # A candidate whose failover was abandoned: its promote request may still land
    # (out of sight, or later: a replica whose replay is held back completes a
    # pending promote once it catches up, and even a restart keeps the request).
    # No automatic failover to another node until it is seen as a primary (the
    # writable-primary rules handle it) or stopped by its driver with the request
    # discarded.
    maybe_promoted: bool = False
    # Failed automatic rejoins of this fenced node in a row, and when the next one may
    # start (each failure doubles the wait; after REJOIN_ATTEMPTS it is left to an
    # operator).
    rejoin_failures: int = 0
    rejoin_retry_at: float | None = None
    # When the fence of this (unreachable, failed) primary before a promote failed;
    # the failover away from it is retried after candidate_backoff_s.
    fence_failed_at: float | None = None

    def sustained_failure(self, threshold: int, window_s: float) -> bool:
        """True when the current run of failures is long enough and spans the window."""
        if self.consecutive_failures < threshold:
            return False
        if self.first_failure_at is None or self.last_failure_at is None:
            return False
        return self.last_failure_at - self.first_failure_at >= window_s


@dataclass(frozen=True, slots=True)
class SyncQuorum:
    """A synchronous set as a primary applies it: a commit is acknowledged once ``k``
    of ``members`` have flushed it (``k`` 0: asynchronous). Members are node names
    (application names), never the primary itself."""

    members: frozenset[str] = frozenset()
    k: int = 0
    # "any" (quorum), "first" (priority: the first k connected members), "" (async).
    method: str = ""
    # Set on a superseded set: the primary's LSN when its successor was first seen in
    # force. Every commit acknowledged under this set lies at or below it.
    until_lsn: int | None = None

    @property
    def synchronous(self) -> bool:
        """True when commits wait for at least one replica."""
        return self.k > 0 and bool(self.members)


class Operation(StrEnum):
    """What kind of change of primary is in flight."""

    FAILOVER = "failover"  # automatic, after a confirmed failure
    MANUAL_FAILOVER = "manual_failover"  # an operator's ManualFailover request
    SWITCHOVER = "switchover"  # an operator's planned switchover
    FAILBACK = "failback"  # automatic planned switchover back to the preferred node


@dataclass(frozen=True, slots=True)
class FailoverInFlight:
    """A Promote or Switchover that was sent and is not yet known to have finished."""

    candidate: str
    # Empty when no primary was known (a manual failover with nothing to fail over from).
    old_primary: str
    started_at: float
    # The old primary's timeline when the promote was sent: completion means the
    # candidate is seen as primary on a higher one.
    old_timeline: int | None
    # last_failover_at before this attempt; restored when the shell reports that the
    # promote definitely did nothing, so another candidate may be tried at once.
    previous_failover_at: float | None
    promote_reported: bool = False
    kind: Operation = Operation.FAILOVER
    # A manual failover that overrode a refusal (the overrides are in its event).
    forced: bool = False
    # A planned switchover running longer than the limit was reported once.
    overdue_reported: bool = False
    # Recovered from the journal of a controller that stopped while this ran: a
    # failover is re-driven to the same candidate, a switchover is settled.
    resumed: bool = False
    # Its Promote was sent a second time (after a restart, or once at the promote
    # timeout while the candidate was still a fit replica).
    redriven: bool = False

    @property
    def planned(self) -> bool:
        """True for a switchover (operator or failback): the shell drives it to an outcome."""
        return self.kind in (Operation.SWITCHOVER, Operation.FAILBACK)

    @property
    def by_operator(self) -> bool:
        """True when an operator asked for it: its own follow-up steps run even while paused."""
        return self.kind in (Operation.MANUAL_FAILOVER, Operation.SWITCHOVER)


class BlockReason(StrEnum):
    """Why the primary is down (or unknown) and no failover runs."""

    NOT_CONFIRMED = "not_confirmed"  # replicas still hear the primary
    NO_REPLICA = "no_replica"  # no reachable replica to confirm
    PAUSED = "paused"
    MAINTENANCE = "maintenance"
    MANUAL = "manual"
    ABANDONED_CANDIDATE = "abandoned_candidate"
    FENCE_FAILED = "fence_failed"
    COOLDOWN = "cooldown"
    WRITABLE = "writable"
    QUORUM_NOT_REACHABLE = "quorum_not_reachable"
    NO_MAJORITY = "no_majority"
    NO_CANDIDATE = "no_candidate"
    NO_PRIMARY = "no_primary"
    LOGICAL_SLOTS = "logical_slots"


@dataclass(frozen=True, slots=True)
class FailoverBlock:
    """A failover that is needed but held back this round: why, and what an operator
    can do about it (status, API, CLI and metrics show it)."""

    reason: BlockReason
    message: str
    way_out: str


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Everything ``decide`` knows besides the current view. Treat as immutable."""

    primary: str | None = None
    primary_timeline: int | None = None
    # Highest WAL position the current primary was seen at (reference for max lag).
    primary_lsn: int | None = None
    nodes: Mapping[str, NodeHealth] = field(default_factory=dict)
    # Operator flags: paused = observe only; maintenance = never promoted, and no
    # failover away from a primary in maintenance; fenced = needs rejoin, never adopted.
    paused: bool = False
    maintenance: frozenset[str] = frozenset()
    fenced: frozenset[str] = frozenset()
    last_failover_at: float | None = None
    in_flight: FailoverInFlight | None = None
    # Keys of the conditions active after the last round; an event is emitted only
    # when a condition becomes active, so a fast loop does not flood the journal.
    conditions: frozenset[str] = frozenset()
    # Since when the preferred node has been continuously ready for a failback.
    failback_since: float | None = None
    # The synchronous set the current primary was last seen using (None: not seen
    # yet), and superseded sets whose acknowledged commits the current set does not
    # yet provably cover: a failover must consult those too (docs/synchronous.md).
    sync_in_force: SyncQuorum | None = None
    sync_pending: tuple[SyncQuorum, ...] = ()
    # The last synchronous_standby_names value sent to the primary, and when.
    sync_requested: str | None = None
    sync_requested_at: float | None = None
    # Nodes a Rejoin was sent for and whose outcome is not in yet (one per node).
    rejoining: frozenset[str] = frozenset()
    # Fenced nodes the controller gave up rejoining by itself (REJOIN_ATTEMPTS failed
    # in a row): never again automatically until they leave the fenced set.
    rejoin_tried: frozenset[str] = frozenset()
    # The cluster's system identifier, learnt from a majority of the nodes (or the
    # journal, or pinned): a node reporting another one is foreign, never acted on.
    system_identifier: int | None = None
    # The failover held back in the last round, if one is (None: none needed, or one
    # runs).
    failover_blocked: FailoverBlock | None = None
    # Member slots: since when each configured node has been away (not a reachable
    # replica), and the nodes a ManageSlots was sent for whose outcome is not in yet.
    slot_away_since: Mapping[str, float] = field(default_factory=dict)
    slots_pending: frozenset[str] = frozenset()
    # Not before this time after a failed ManageSlots on the node.
    slots_retry_at: Mapping[str, float] = field(default_factory=dict)
    # Configured logical slots seen on a primary: one missing later was lost.
    logical_seen: frozenset[str] = frozenset()

    def health(self, node: str) -> NodeHealth:
        """The probe history of ``node`` (empty if never probed)."""
        return self.nodes.get(node, NodeHealth())


def initial_state(
    specs: Iterable[NodeSpec],
    *,
    known_primary: str | None = None,
    paused: bool = False,
    maintenance: Iterable[str] = frozenset(),
    fenced: Iterable[str] = frozenset(),
    last_failover_at: float | None = None,
    in_flight: FailoverInFlight | None = None,
    system_identifier: int | None = None,
) -> ControllerState:
    """The state of a starting controller, optionally seeded from the journal.

    A ``known_primary`` that is not configured any more, or that is fenced, is
    dropped: the cluster itself then tells which node is primary. ``in_flight`` is
    an operation the previous controller left unfinished (``resumed``).
    """
    names = {spec.name for spec in specs}
    fenced_set = frozenset(fenced) & names
    primary = known_primary if known_primary in names and known_primary not in fenced_set else None
    return ControllerState(
        primary=primary,
        nodes={name: NodeHealth() for name in sorted(names)},
        paused=paused,
        maintenance=frozenset(maintenance) & names,
        fenced=fenced_set,
        last_failover_at=last_failover_at,
        in_flight=in_flight if in_flight is not None and in_flight.candidate in names else None,
        system_identifier=system_identifier,
    )


def carried_over(state: ControllerState, specs: Iterable[NodeSpec]) -> ControllerState:
    """``state`` for a new set of nodes: flags, fences and health of the nodes kept."""
    kept = initial_state(
        specs,
        known_primary=state.primary,
        paused=state.paused,
        maintenance=state.maintenance,
        fenced=state.fenced,
        last_failover_at=state.last_failover_at,
    )
    nodes = {n: state.nodes.get(n, h) for n, h in kept.nodes.items()}
    return replace(
        state, nodes=nodes, primary=kept.primary, maintenance=kept.maintenance, fenced=kept.fenced
    )
