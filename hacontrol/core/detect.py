"""Probe history: health, streaming, the primary's position and what the round reports
about the cluster's identity and a read-only primary."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.core.actions import Unfence
from hacontrol.core.draft import Round
from hacontrol.core.events import EventKind, Severity
from hacontrol.core.model import Observation, Role
from hacontrol.core.standby_names import parse_standby_names
from hacontrol.core.state import NodeHealth
from hacontrol.core.sync import track_in_force
from hacontrol.core.topology import (
    is_primary,
    is_replica,
    node_endpoints,
    receiver_matches,
    streaming,
)

__all__ = [
    "report_identity",
    "report_no_primary",
    "report_read_only_primary",
    "set_primary",
    "track_primary",
    "track_streaming",
    "track_sync",
    "update_health",
]


def report_identity(r: Round) -> None:
    """Say once which cluster the nodes belong to, and which node is foreign."""
    if r.learnt_identity:
        r.emit(
            EventKind.CLUSTER_IDENTIFIED,
            None,
            f"cluster system identifier {r.identity} (reported by a majority of the"
            " nodes): a node reporting another one is treated as foreign",
            system_identifier=r.identity,
        )
    for name, identifier in sorted(r.foreign.items()):
        r.condition(
            f"foreign_node:{name}:{identifier}",
            EventKind.FOREIGN_NODE,
            name,
            f"{name} answers with system identifier {identifier}, not this cluster's"
            f" {r.identity}: its DSN points at another cluster's server; it is never"
            f" adopted, promoted, fenced, repointed or rejoined. Fix {name}'s dsn and"
            " reload",
            Severity.CRITICAL,
            system_identifier=identifier,
            cluster_system_identifier=r.identity,
        )


def _healthy(health: NodeHealth, r: Round, name: str, when: float) -> NodeHealth:
    successes = health.consecutive_successes + 1
    down = health.down
    if down and successes >= r.settings.recovery_threshold:
        down = False
        r.emit(
            EventKind.NODE_RECOVERED,
            name,
            f"{name} is healthy again ({successes} healthy probes)",
        )
    return replace(
        health,
        consecutive_failures=0,
        first_failure_at=None,
        last_failure_at=None,
        consecutive_successes=successes,
        down=down,
        fence_failed_at=None,
        last_ok_at=when,
    )


def _failing(
    health: NodeHealth, r: Round, name: str, when: float, obs: Observation | None
) -> NodeHealth:
    health = replace(
        health,
        consecutive_failures=health.consecutive_failures + 1,
        first_failure_at=(
            health.first_failure_at if health.first_failure_at is not None else when
        ),
        last_failure_at=when,
        consecutive_successes=0,
    )
    settings = r.settings
    if not health.down and health.sustained_failure(
        settings.failure_threshold, settings.detection_window_s
    ):
        health = replace(health, down=True)
        if name != r.primary:
            r.emit(
                EventKind.NODE_UNREACHABLE,
                name,
                f"{name} failed {health.consecutive_failures} probes in a row",
                Severity.WARNING,
                error=obs.error if obs is not None else "not probed",
            )
    return health


def update_health(r: Round) -> None:
    """Fold this round's probe of every node into its health."""
    for name in r.names:
        obs = r.obs(name)
        health = r.health(name)
        if name == r.primary:
            ok = is_primary(obs)
        else:
            ok = obs is not None and obs.reachable and obs.role is not Role.UNKNOWN
        when = obs.at if obs is not None else r.at
        health = _healthy(health, r, name, when) if ok else _failing(health, r, name, when, obs)
        # An abandoned candidate's promote is settled once it is seen a primary (then
        # the writable-primary rules decide). A replica is no proof: a pending promote
        # survives even a restart of its server.
        if health.maybe_promoted and is_primary(obs):
            health = replace(health, maybe_promoted=False)
        r.set_health(name, health)


def track_streaming(r: Round) -> None:
    """Remember when each replica was last seen streaming live from the primary."""
    primary = r.primary
    if primary is None:
        return
    targets = node_endpoints(r.specs[primary])
    for name in r.names:
        obs = r.obs(name)
        receiver = obs.wal_receiver if is_replica(obs) and obs is not None else None
        if (
            name == primary
            or obs is None
            or receiver is None
            or not streaming(receiver)
            or not receiver_matches(receiver, targets)
            or (
                receiver.last_msg_age_s is not None
                and receiver.last_msg_age_s > r.settings.replica_silence_s
            )
        ):
            continue
        r.set_health(
            name, replace(r.health(name), streaming_from=primary, last_streaming_at=obs.at)
        )


def track_primary(r: Round) -> None:
    """Follow the primary's timeline, furthest LSN and synchronous set."""
    obs = r.obs(r.primary)
    if obs is None or not is_primary(obs):
        return
    draft = r.draft
    if obs.timeline is not None:
        draft = replace(draft, primary_timeline=obs.timeline)
    if obs.current_lsn is not None:
        draft = replace(draft, primary_lsn=max(draft.primary_lsn or 0, obs.current_lsn))
    r.draft = draft
    track_sync(r, obs)


def track_sync(r: Round, obs: Observation) -> None:
    """Remember the synchronous set the primary is seen using (and what it replaced)."""
    seen = parse_standby_names(obs.synchronous_standby_names, obs.node, r.names)
    if seen is None:
        return
    in_force, pending = track_in_force(r.draft.sync_in_force, r.draft.sync_pending, seen, obs)
    r.draft = replace(r.draft, sync_in_force=in_force, sync_pending=pending)


def set_primary(r: Round, name: str | None) -> None:
    """Make ``name`` the primary from this round on (a fenced node no more)."""
    obs = r.obs(name)
    # The synchronous sets belong to the old primary's commits; the new primary's
    # set is learnt from its next probe.
    r.draft = replace(
        r.draft,
        primary=name,
        primary_timeline=obs.timeline if obs is not None else None,
        primary_lsn=obs.current_lsn if obs is not None else None,
        fenced=r.draft.fenced - {name} if name is not None else r.draft.fenced,
        sync_in_force=None,
        sync_pending=(),
        sync_requested=None,
        sync_requested_at=None,
    )
    r.primary_changed = True
    if obs is not None and is_primary(obs):
        track_sync(r, obs)


def report_read_only_primary(r: Round) -> None:
    """A followed primary that refuses writes with nothing in flight is a write
    outage: say so, and how to end it, every time it starts."""
    primary = r.primary
    obs = r.obs(primary)
    if primary is None or r.in_flight is not None or obs is None:
        return
    if any(isinstance(a, Unfence) and a.node == primary for a in r.actions):
        return  # being lifted this round
    if is_primary(obs) and obs.read_only:
        r.condition(
            f"primary_read_only:{primary}",
            EventKind.PRIMARY_READ_ONLY,
            primary,
            f"primary {primary} is read-only (default_transaction_read_only = on): no"
            " node accepts writes. If nobody meant that, lift it on the node:"
            " ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();",
            Severity.CRITICAL,
        )


def report_no_primary(r: Round) -> None:
    """No primary and nothing in flight: only an operator can end that."""
    if r.primary is None and r.in_flight is None:
        r.condition(
            "no_primary",
            EventKind.NO_PRIMARY,
            None,
            "no known writable primary: a manual failover is needed",
            Severity.CRITICAL,
        )
