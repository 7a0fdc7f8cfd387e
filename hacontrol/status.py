"""Rendering a cluster view for people (table) and programs (JSON)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hacontrol.model import ClusterView, NodeSpec, Observation, Role, format_lsn
from hacontrol.redact import redact_dsn, redact_text

if TYPE_CHECKING:
    from hacontrol.controller import Controller


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


def node_row(
    spec: NodeSpec,
    obs: Observation | None,
    *,
    primary: str | None = None,
    fenced: frozenset[str] = frozenset(),
    maintenance: frozenset[str] = frozenset(),
    breaker: str | None = None,
) -> dict[str, Any]:
    """A JSON-friendly description of one node."""
    seen = obs if obs is not None and obs.reachable else None
    receiver = seen.wal_receiver if seen else None
    lag_bytes: int | None = None
    replay_lag = seen.replay_lag_s if seen else None
    # A replica that does not stream reports the timeline of its last checkpoint,
    # which is stale after a failover: unknown until it streams again.
    streaming = receiver is not None and receiver.status == "streaming"
    timeline = (
        seen.timeline if seen and (seen.role is Role.PRIMARY or streaming) else None
    )
    return {
        "name": spec.name,
        "dsn": redact_dsn(spec.dsn),
        "priority": spec.priority,
        "reachable": bool(obs and obs.reachable),
        "role": str(seen.role) if seen else "unknown",
        "timeline": timeline,
        "lsn": _lsn(seen.wal_position) if seen else None,
        "replay_lsn": _lsn(seen.replay_lsn) if seen else None,
        "unreplayed_bytes": seen.unreplayed_bytes if seen else None,
        "lag_bytes": lag_bytes,
        "replay_lag_s": round(replay_lag, 3) if replay_lag is not None else None,
        "upstream": (
            f"{receiver.sender_host}:{receiver.sender_port}" if receiver and receiver.sender_host
            else None
        ),
        "receiver_status": receiver.status if receiver else None,
        "read_only": seen.read_only if seen else None,
        "health": node_health(obs, primary, fenced),
        "fenced": spec.name in fenced,
        "maintenance": spec.name in maintenance,
        "breaker": breaker,
        "error": redact_text(obs.error) if obs and obs.error else None,
        "probe_ms": round(obs.latency_s * 1000, 1) if obs and obs.latency_s is not None else None,
    }


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
) -> list[dict[str, Any]]:
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
        row = node_row(
            spec, obs, primary=primary, fenced=fenced, maintenance=maintenance,
            breaker=(breakers or {}).get(spec.name),
        )
        if obs and obs.role is Role.REPLICA and reference is not None and obs.wal_position:
            row["lag_bytes"] = max(0, reference - obs.wal_position)
        rows.append(row)
    return rows


COLUMNS = (
    ("name", "NODE"), ("role", "ROLE"), ("timeline", "TL"), ("lsn", "LSN"),
    ("lag_bytes", "LAG B"), ("replay_lag_s", "LAG S"), ("upstream", "UPSTREAM"),
    ("health", "HEALTH"), ("breaker", "BREAKER"), ("priority", "PRIO"),
)


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of node rows."""
    cells = [[h for _, h in COLUMNS]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else str(row.get(k)) for k, _ in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    for row in rows:
        if row.get("error"):
            lines.append(f"  {row['name']}: {row['error']}")
    return "\n".join(lines)


def snapshot(controller: Controller) -> dict[str, Any]:
    """The running controller's view: nodes, primary, flags, breakers."""
    state = controller.state
    breakers = {name: b.state.value for name, b in controller.breakers.items()}
    view = controller.view or ClusterView(at=0.0)
    blocked = state.failover_blocked
    return {
        "primary": state.primary,
        "mode": str(controller.settings.mode),
        "paused": state.paused,
        "maintenance": sorted(state.maintenance),
        "failover_in_flight": state.in_flight.candidate if state.in_flight else None,
        "failover_blocked": (
            {"reason": str(blocked.reason), "message": blocked.message,
             "way_out": blocked.way_out}
            if blocked is not None else None
        ),
        "system_identifier": state.system_identifier,
        "nodes": view_rows(
            controller.specs, view, primary=state.primary, fenced=state.fenced,
            maintenance=state.maintenance, breakers=breakers,
        ),
        "rounds": controller.rounds,
        "last_round_ms": round(controller.last_round_s * 1000, 1),
    }
