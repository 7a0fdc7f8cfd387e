"""What status output shows: typed, frozen snapshots of the controller's state and view.

Built from plain values (state, view, specs, breakers) so that nothing here needs the
controller; the API, the metrics and the CLI turn them into their own forms, the JSON
of ``GET /status`` through :meth:`StatusSnapshot.to_json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from hacontrol.core.model import ClusterView, NodeSpec, Observation, Role, format_lsn
from hacontrol.core.state import ControllerState, FailoverBlock
from hacontrol.redact import redact_dsn, redact_text
from hacontrol.resilience import BreakerStats, BulkheadStats


def node_health(obs: Observation | None, primary: str | None, fenced: frozenset[str]) -> str:
    """One word an operator reads first."""
    if obs is None:
        return "unprobed"
    if not obs.reachable:
        return "unreachable"
    if obs.node in fenced:
        return "fenced"
    if obs.role is Role.PRIMARY:
        if obs.read_only:
            return "read-only"
        return "ok" if primary in (None, obs.node) else "stray-primary"
    receiver = obs.wal_receiver
    if receiver is None or receiver.status != "streaming":
        return "not-streaming"
    return "ok"


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One replication slot of a node as status output shows it."""

    name: str
    kind: str
    active: bool
    # WAL the node keeps for it, from its restart LSN to the node's position.
    retained_bytes: int | None
    wal_status: str | None
    valid: bool
    # PostgreSQL 17+: a failover slot; synced from the primary (on a replica).
    failover: bool | None
    synced: bool | None

    def to_json(self) -> dict[str, Any]:
        """The slot as ``GET /status`` shows it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def slot_rows(obs: Observation | None) -> tuple[SlotRow, ...]:
    """The slots of a reachable node, by name."""
    if obs is None or not obs.reachable:
        return ()
    return tuple(
        SlotRow(s.name, str(s.kind), s.active, obs.retained_bytes(s), s.wal_status, s.valid,
                s.failover, s.synced)
        for s in sorted(obs.slots or (), key=lambda s: s.name)
    )


@dataclass(frozen=True, slots=True)
class NodeResilience:
    """The guards around one node, as the dashboard's resilience panel shows them:
    its probe breaker over the breaker's window, and its action bulkhead."""

    breaker: str
    failure_rate: float
    slow_call_rate: float
    window_calls: int
    trips: int
    bulkhead_active: int
    bulkhead_queued: int
    bulkhead_max: int

    def to_json(self) -> dict[str, Any]:
        """As ``GET /status`` shows it (rates as fractions, 0.0 to 1.0)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def node_resilience(breaker: BreakerStats, bulkhead: BulkheadStats | None) -> NodeResilience:
    """The resilience panel of a node from its probe breaker's and action bulkhead's stats."""
    return NodeResilience(
        breaker=breaker.state.value,
        failure_rate=round(breaker.failure_rate, 3),
        slow_call_rate=round(breaker.slow_call_rate, 3),
        window_calls=breaker.window_calls,
        trips=breaker.trips,
        bulkhead_active=bulkhead.active if bulkhead else 0,
        bulkhead_queued=bulkhead.queued if bulkhead else 0,
        bulkhead_max=bulkhead.max_concurrent if bulkhead else 0,
    )


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as status output shows it (fields in the order of its JSON)."""

    name: str
    dsn: str
    priority: int
    reachable: bool
    role: str
    timeline: int | None
    lsn: str | None
    replay_lsn: str | None
    unreplayed_bytes: int | None
    lag_bytes: int | None
    replay_lag_s: float | None
    upstream: str | None
    receiver_status: str | None
    read_only: bool | None
    health: str
    fenced: bool
    maintenance: bool
    breaker: str | None
    error: str | None
    probe_ms: float | None
    slots: tuple[SlotRow, ...] = ()
    resilience: NodeResilience | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as ``GET /status`` shows it."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["slots"] = [s.to_json() for s in self.slots]
        row["resilience"] = self.resilience.to_json() if self.resilience is not None else None
        return row


def node_row(
    spec: NodeSpec,
    obs: Observation | None,
    *,
    primary: str | None = None,
    fenced: frozenset[str] = frozenset(),
    maintenance: frozenset[str] = frozenset(),
    breaker: str | None = None,
    lag_bytes: int | None = None,
    resilience: NodeResilience | None = None,
) -> NodeRow:
    """The row of one node (``lag_bytes`` is measured by :func:`view_rows`)."""
    seen = obs if obs is not None and obs.reachable else None
    receiver = seen.wal_receiver if seen else None
    replay_lag = seen.replay_lag_s if seen else None
    # A replica that does not stream reports the timeline of its last checkpoint,
    # which is stale after a failover: unknown until it streams again.
    streaming = receiver is not None and receiver.status == "streaming"
    timeline = seen.timeline if seen and (seen.role is Role.PRIMARY or streaming) else None
    return NodeRow(
        name=spec.name,
        dsn=redact_dsn(spec.dsn),
        priority=spec.priority,
        reachable=bool(obs and obs.reachable),
        role=str(seen.role) if seen else "unknown",
        timeline=timeline,
        lsn=_lsn(seen.wal_position) if seen else None,
        replay_lsn=_lsn(seen.replay_lsn) if seen else None,
        unreplayed_bytes=seen.unreplayed_bytes if seen else None,
        lag_bytes=lag_bytes,
        replay_lag_s=round(replay_lag, 3) if replay_lag is not None else None,
        upstream=(
            f"{receiver.sender_host}:{receiver.sender_port}"
            if receiver and receiver.sender_host else None
        ),
        receiver_status=receiver.status if receiver else None,
        read_only=seen.read_only if seen else None,
        health=node_health(obs, primary, fenced),
        fenced=spec.name in fenced,
        maintenance=spec.name in maintenance,
        breaker=breaker,
        error=redact_text(obs.error) if obs and obs.error else None,
        probe_ms=round(obs.latency_s * 1000, 1) if obs and obs.latency_s is not None else None,
        slots=slot_rows(obs),
        resilience=resilience,
    )


def _lsn(lsn: int | None) -> str | None:
    """PostgreSQL's LSN text, or None (JSON null) when unknown."""
    return None if lsn is None else format_lsn(lsn)


def view_rows(
    specs: Sequence[NodeSpec],
    view: ClusterView,
    *,
    primary: str | None = None,
    fenced: frozenset[str] = frozenset(),
    maintenance: frozenset[str] = frozenset(),
    breakers: Mapping[str, str] | None = None,
    resilience: Mapping[str, NodeResilience] | None = None,
) -> tuple[NodeRow, ...]:
    """One row per node, lag in bytes measured against the primary's position."""
    if primary is None:
        writable = [
            o.node for o in view.observations.values()
            if o.reachable and o.role is Role.PRIMARY and not o.read_only
        ]
        primary = writable[0] if len(writable) == 1 else None
    primary_obs = view.get(primary) if primary else None
    reference = primary_obs.wal_position if primary_obs else None
    rows = []
    for spec in specs:
        obs = view.get(spec.name)
        lag: int | None = None
        if obs and obs.role is Role.REPLICA and reference is not None and obs.wal_position:
            lag = max(0, reference - obs.wal_position)
        rows.append(node_row(
            spec, obs, primary=primary, fenced=fenced, maintenance=maintenance,
            breaker=(breakers or {}).get(spec.name), lag_bytes=lag,
            resilience=(resilience or {}).get(spec.name),
        ))
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class BlockedFailover:
    """A failover held back: why, and what an operator can do about it."""

    reason: str
    message: str
    way_out: str

    @classmethod
    def of(cls, block: FailoverBlock) -> BlockedFailover:
        """The status form of the core's block."""
        return cls(str(block.reason), block.message, block.way_out)

    def to_json(self) -> dict[str, Any]:
        """As ``GET /status`` shows it."""
        return {"reason": self.reason, "message": self.message, "way_out": self.way_out}


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """The running controller's view: nodes, primary, flags, breakers, procedures."""

    primary: str | None
    mode: str
    paused: bool
    maintenance: tuple[str, ...]
    failover_in_flight: str | None
    failover_blocked: BlockedFailover | None
    system_identifier: int | None
    nodes: tuple[NodeRow, ...]
    rounds: int
    last_round_ms: float
    rejoining: tuple[str, ...]
    procedures: tuple[str, ...]
    # Node name -> the driver's description, by name.
    drivers: tuple[tuple[str, str], ...]

    def row(self, name: str | None) -> NodeRow | None:
        """The row of node ``name`` (None: no such node)."""
        return next((r for r in self.nodes if r.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``GET /status`` (without the service's events and facts)."""
        return {
            "primary": self.primary,
            "mode": self.mode,
            "paused": self.paused,
            "maintenance": list(self.maintenance),
            "failover_in_flight": self.failover_in_flight,
            "failover_blocked": (
                self.failover_blocked.to_json() if self.failover_blocked is not None else None
            ),
            "system_identifier": self.system_identifier,
            "nodes": [row.to_json() for row in self.nodes],
            "rounds": self.rounds,
            "last_round_ms": self.last_round_ms,
            "rejoining": list(self.rejoining),
            "procedures": list(self.procedures),
            "drivers": dict(self.drivers),
        }


def status_snapshot(
    state: ControllerState,
    view: ClusterView | None,
    specs: Sequence[NodeSpec],
    *,
    mode: str,
    breakers: Mapping[str, str],
    rounds: int,
    last_round_s: float,
    procedures: Sequence[str] = (),
    drivers: Mapping[str, str] | None = None,
    resilience: Mapping[str, NodeResilience] | None = None,
) -> StatusSnapshot:
    """The snapshot of a controller with this state, latest view and configuration."""
    blocked = state.failover_blocked
    return StatusSnapshot(
        primary=state.primary,
        mode=mode,
        paused=state.paused,
        maintenance=tuple(sorted(state.maintenance)),
        failover_in_flight=state.in_flight.candidate if state.in_flight else None,
        failover_blocked=BlockedFailover.of(blocked) if blocked is not None else None,
        system_identifier=state.system_identifier,
        nodes=view_rows(
            specs, view or ClusterView(at=0.0), primary=state.primary, fenced=state.fenced,
            maintenance=state.maintenance, breakers=breakers, resilience=resilience,
        ),
        rounds=rounds,
        last_round_ms=round(last_round_s * 1000, 1),
        rejoining=tuple(sorted(state.rejoining)),
        procedures=tuple(sorted(procedures)),
        drivers=tuple(sorted((drivers or {}).items())),
    )
