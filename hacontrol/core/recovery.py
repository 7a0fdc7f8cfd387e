"""What a restarted controller rebuilds from its journal. Pure: records and clocks in.

:func:`fold` reads the journal's records (oldest first) into a
:class:`RecoveredState`; :func:`restart_state` turns that into the
``ControllerState`` the controller starts from, with wall-clock times carried
over to its monotonic clock. An operation the previous controller left unfinished
comes back in flight, ``resumed``: a failover is re-driven to the same candidate,
a switchover settled from what the nodes show (see ``hacontrol.core.inflight``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hacontrol.core.events import EventKind
from hacontrol.core.model import NodeSpec
from hacontrol.core.state import ControllerState, FailoverInFlight, Operation, initial_state

__all__ = [
    "FOLDED_KINDS",
    "SNAPSHOT_KIND",
    "RecoveredState",
    "Unresolved",
    "fold",
    "from_snapshot",
    "restart_state",
    "resumed_flight",
    "to_snapshot",
]

SNAPSHOT_KIND = "journal_snapshot"
SNAPSHOT_FORMAT = 1
# Record kinds that set the primary.
_PRIMARY_KINDS = frozenset({
    EventKind.PRIMARY_ADOPTED, EventKind.FAILOVER_COMPLETED, EventKind.SWITCHOVER_COMPLETED,
})
# How a started failover or switchover ends.
_ENDS = frozenset({
    EventKind.FAILOVER_COMPLETED, EventKind.FAILOVER_ABANDONED, EventKind.FAILOVER_FAILED,
    EventKind.SWITCHOVER_COMPLETED, EventKind.SWITCHOVER_ABORTED,
    EventKind.SWITCHOVER_ABANDONED, EventKind.SWITCHOVER_SETTLED,
})
_STARTS = frozenset({EventKind.FAILOVER_STARTED, EventKind.SWITCHOVER_STARTED})
_FLAGS = frozenset({
    EventKind.NODE_FENCED, EventKind.NODE_REJOINED, EventKind.PAUSED, EventKind.RESUMED,
    EventKind.MAINTENANCE_ON, EventKind.MAINTENANCE_OFF, EventKind.CLUSTER_IDENTIFIED,
})
# Every event kind the fold reads (each one the decision core emits).
FOLDED_KINDS: frozenset[EventKind] = _PRIMARY_KINDS | _ENDS | _STARTS | _FLAGS


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A failover or switchover that was started and never seen to end."""

    node: str
    old_primary: str | None
    old_timeline: int | None
    operation: str
    # Wall-clock times: when it started, and the last failover before it (the
    # cool-down to fall back to if nothing was promoted).
    started: float
    previous_failover: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The journal's form (a snapshot's ``unresolved_failover``)."""
        return {
            "node": self.node,
            "old_primary": self.old_primary,
            "old_timeline": self.old_timeline,
            "operation": self.operation,
            "started": self.started,
            "previous_failover": self.previous_failover,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Unresolved | None:
        """Read the journal's form (None: no node named)."""
        node = data.get("node")
        if not isinstance(node, str):
            return None
        timeline = data.get("old_timeline")
        previous = data.get("previous_failover")
        old = data.get("old_primary")
        return cls(
            node=node,
            old_primary=str(old) if old is not None else None,
            old_timeline=int(timeline) if timeline is not None else None,
            operation=str(data.get("operation") or "failover"),
            started=float(data.get("started") or 0.0),
            previous_failover=float(previous) if previous is not None else None,
        )


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What a restarted controller learns from its journal."""

    primary: str | None = None
    paused: bool = False
    maintenance: frozenset[str] = frozenset()
    fenced: frozenset[str] = frozenset()
    # Wall-clock time of the last failover (started, completed or not); used only
    # to carry the cool-down across a restart.
    last_failover_wall: float | None = None
    unresolved: Unresolved | None = None
    # The cluster's system identifier, from the last cluster_identified record.
    system_identifier: int | None = None
    # How many records (snapshots aside) this stands for.
    records: int = 0

    @property
    def unresolved_failover(self) -> dict[str, Any] | None:
        """The unfinished operation in the journal's form (None: none)."""
        return self.unresolved.as_dict() if self.unresolved else None


@dataclass(slots=True)
class _Folding:
    """The fold's accumulator (mutable only inside :func:`fold`)."""

    primary: str | None = None
    paused: bool = False
    maintenance: set[str] = field(default_factory=set)
    fenced: set[str] = field(default_factory=set)
    last_failover: float | None = None
    unresolved: Unresolved | None = None
    identifier: int | None = None
    count: int = 0

    @classmethod
    def starting(cls, state: RecoveredState) -> _Folding:
        return cls(
            state.primary, state.paused, set(state.maintenance), set(state.fenced),
            state.last_failover_wall, state.unresolved, state.system_identifier, state.records,
        )

    def result(self) -> RecoveredState:
        return RecoveredState(
            self.primary, self.paused, frozenset(self.maintenance), frozenset(self.fenced),
            self.last_failover, self.unresolved, self.identifier, self.count,
        )

    def started(self, kind: EventKind, node: Any, record: Mapping[str, Any]) -> None:
        details = record.get("details") or {}
        ts = float(record.get("ts", 0.0))
        operation = details.get("operation") or (
            "failover" if kind is EventKind.FAILOVER_STARTED else "switchover"
        )
        timeline = details.get("old_timeline")
        old = details.get("old_primary")
        self.unresolved = Unresolved(
            node=node,
            old_primary=str(old) if old is not None else None,
            old_timeline=int(timeline) if timeline is not None else None,
            operation=str(operation),
            started=ts,
            previous_failover=self.last_failover,
        ) if isinstance(node, str) else None
        if kind is EventKind.FAILOVER_STARTED:
            self.last_failover = ts

    def flag(self, kind: EventKind, node: Any, record: Mapping[str, Any]) -> None:
        if kind is EventKind.CLUSTER_IDENTIFIED:
            value = (record.get("details") or {}).get("system_identifier")
            self.identifier = int(value) if value is not None else self.identifier
        elif kind is EventKind.PAUSED or kind is EventKind.RESUMED:
            self.paused = kind is EventKind.PAUSED
        elif not isinstance(node, str):
            return
        elif kind is EventKind.NODE_FENCED:
            self.fenced.add(node)
        elif kind is EventKind.NODE_REJOINED:
            self.fenced.discard(node)
        elif kind is EventKind.MAINTENANCE_ON:
            self.maintenance.add(node)
        elif kind is EventKind.MAINTENANCE_OFF:
            self.maintenance.discard(node)

    def feed(self, record: Mapping[str, Any]) -> None:
        raw = record.get("kind")
        self.count += 1
        if raw not in FOLDED_KINDS:
            return
        kind = EventKind(raw)
        node = record.get("node")
        # The decision core's event (with details), not the procedure's own record.
        if kind in _STARTS and "details" in record:
            self.started(kind, node, record)
        elif kind in _ENDS:
            self.unresolved = None
        if kind in _PRIMARY_KINDS and isinstance(node, str):
            self.primary = node
            self.fenced.discard(node)
            if kind is EventKind.FAILOVER_COMPLETED:
                ts = float(record.get("ts", 0.0))
                self.last_failover = max(self.last_failover or 0.0, ts)
        else:
            self.flag(kind, node, record)


def fold(
    records: Iterable[Mapping[str, Any]], start: RecoveredState | None = None
) -> RecoveredState:
    """``start`` (default: nothing known) with ``records`` folded in, oldest first. A
    snapshot record states everything before it and replaces what was folded."""
    acc = _Folding.starting(start or RecoveredState())
    for record in records:
        if record.get("kind") == SNAPSHOT_KIND:
            acc = _Folding.starting(from_snapshot(record.get("snapshot") or {}))
        else:
            acc.feed(record)
    return acc.result()


def to_snapshot(state: RecoveredState) -> dict[str, Any]:
    """``state`` as a rotation's snapshot record holds it."""
    return {
        "format": SNAPSHOT_FORMAT,
        "records": state.records,
        "primary": state.primary,
        "paused": state.paused,
        "maintenance": sorted(state.maintenance),
        "fenced": sorted(state.fenced),
        "last_failover_wall": state.last_failover_wall,
        "unresolved_failover": state.unresolved.as_dict() if state.unresolved else None,
        "system_identifier": state.system_identifier,
    }


def from_snapshot(data: Mapping[str, Any]) -> RecoveredState:
    """A snapshot record's ``snapshot`` read back."""
    primary = data.get("primary")
    last = data.get("last_failover_wall")
    unresolved = data.get("unresolved_failover")
    identifier = data.get("system_identifier")
    return RecoveredState(
        primary=str(primary) if primary is not None else None,
        paused=bool(data.get("paused")),
        maintenance=frozenset(str(n) for n in data.get("maintenance") or ()),
        fenced=frozenset(str(n) for n in data.get("fenced") or ()),
        last_failover_wall=float(last) if last is not None else None,
        unresolved=Unresolved.from_dict(unresolved) if isinstance(unresolved, Mapping) else None,
        system_identifier=int(identifier) if identifier is not None else None,
        records=int(data.get("records") or 0),
    )


def _from_wall(wall: float, now: float, wall_now: float) -> float:
    # The journal holds wall-clock times; only the elapsed part carries over to
    # this process's monotonic clock.
    return now - max(0.0, wall_now - wall)


def resumed_flight(
    unresolved: Unresolved | None, names: Iterable[str], now: float, wall_now: float
) -> FailoverInFlight | None:
    """The operation the previous controller left unfinished, back in flight."""
    if unresolved is None or unresolved.node not in set(names):
        return None
    try:
        kind = Operation(unresolved.operation)
    except ValueError:
        kind = Operation.FAILOVER
    previous = unresolved.previous_failover
    return FailoverInFlight(
        candidate=unresolved.node,
        old_primary=unresolved.old_primary or "",
        started_at=_from_wall(unresolved.started, now, wall_now),
        old_timeline=unresolved.old_timeline,
        previous_failover_at=(
            _from_wall(previous, now, wall_now) if previous is not None else None
        ),
        kind=kind,
        resumed=True,
    )


def restart_state(
    recovered: RecoveredState,
    specs: Sequence[NodeSpec],
    *,
    pinned: int | None,
    now: float,
    wall_now: float,
) -> ControllerState:
    """The state a controller restarted at ``now`` (monotonic; ``wall_now`` on the
    wall clock) starts from."""
    last = recovered.last_failover_wall
    return initial_state(
        specs,
        known_primary=recovered.primary,
        paused=recovered.paused,
        maintenance=recovered.maintenance,
        fenced=recovered.fenced,
        last_failover_at=_from_wall(last, now, wall_now) if last is not None else None,
        in_flight=resumed_flight(recovered.unresolved, (s.name for s in specs), now, wall_now),
        system_identifier=pinned or recovered.system_identifier,
    )
