"""Whom to promote: every node's figures, the fit ones first in promotion order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hacontrol.core.actions import CandidateInfo
from hacontrol.core.fitness import NodeFacts, first_exclusion
from hacontrol.core.model import ClusterView, NodeSpec, Observation, Role, format_lsn
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slot_names import synced_slots_ready
from hacontrol.core.state import ControllerState
from hacontrol.core.topology import is_replica, reachable

__all__ = ["preferred_node", "promote_reason", "rank_candidates"]


def _reference(
    state: ControllerState, view: ClusterView, names: Iterable[str], old: str | None
) -> int | None:
    """The position lag is measured from: the primary's last known LSN or the best replica's."""
    positions = [
        obs.wal_position
        for name in names
        if name != old
        for obs in [view.get(name)]
        if is_replica(obs) and obs is not None and obs.wal_position is not None
    ]
    parts = [p for p in (state.primary_lsn, max(positions, default=None)) if p is not None]
    return max(parts) if parts else None


def _info(facts: NodeFacts, spec: NodeSpec, position: int | None) -> CandidateInfo:
    obs: Observation | None = facts.obs
    names = [s.name for s in facts.settings.logical_slots]
    return CandidateInfo(
        node=facts.name,
        priority=spec.priority,
        reachable=reachable(obs),
        role=obs.role if obs is not None and obs.reachable else Role.UNKNOWN,
        wal_position=position,
        lag_bytes=facts.lag,
        excluded=first_exclusion(facts),
        unreplayed_bytes=obs.unreplayed_bytes if position is not None and obs else None,
        replay_paused=obs.replay_paused if position is not None and obs else None,
        logical_slots_ready=synced_slots_ready(obs, names) if names else None,
    )


def rank_candidates(
    state: ControllerState,
    view: ClusterView,
    specs: Sequence[NodeSpec] | Mapping[str, NodeSpec],
    settings: DecisionSettings,
    *,
    old_primary: str | None = None,
) -> tuple[CandidateInfo, ...]:
    """Every node other than ``old_primary`` with its figures, eligible ones first in
    promotion order (most WAL; then replay not paused and least WAL left to replay;
    then priority, then name), then the excluded by name."""
    by_name = specs if isinstance(specs, Mapping) else {s.name: s for s in specs}
    old = state.primary if old_primary is None else old_primary
    reference = _reference(state, view, by_name, old)
    infos: list[CandidateInfo] = []
    for name in sorted(by_name):
        if name == old:
            continue
        obs = view.get(name)
        position = obs.wal_position if is_replica(obs) and obs is not None else None
        lag = reference - position if reference is not None and position is not None else None
        facts = NodeFacts(
            name, by_name[name], obs, state.health(name), state, view, by_name, settings, lag
        )
        infos.append(_info(facts, by_name[name], position))
    # Most WAL first; among equals, the one that can finish recovery soonest (replay
    # not paused, least WAL left to replay: a reporting query holding back replay
    # would hold back the promote too), then priority, then name.
    eligible = sorted(
        (i for i in infos if i.eligible),
        key=lambda i: (
            -(i.wal_position or 0),
            bool(i.replay_paused),
            i.unreplayed_bytes or 0,
            -i.priority,
            # Otherwise equal: the one whose consumers' slots survive the failover.
            i.logical_slots_ready is False,
            i.node,
        ),
    )
    return (*eligible, *(i for i in infos if not i.eligible))


def promote_reason(chosen: CandidateInfo, ranking: Sequence[CandidateInfo], old: str) -> str:
    """Why ``chosen`` is promoted in place of ``old``, with the other figures."""
    eligible = [c for c in ranking if c.eligible]
    others = "; ".join(c.describe() for c in ranking if c is not chosen)
    return (
        f"primary {old} failed and the replicas confirm it; {chosen.node} has the most WAL"
        f" ({format_lsn(chosen.wal_position)}, prio {chosen.priority}) of {len(eligible)}"
        f" candidate(s)" + (f"; others: {others}" if others else "")
    )


def preferred_node(specs: Iterable[NodeSpec]) -> str | None:
    """The node failback returns to: the unique highest priority (> 0); a tie: none."""
    ordered = sorted(specs, key=lambda s: -s.priority)
    if not ordered or ordered[0].priority <= 0:
        return None
    if len(ordered) > 1 and ordered[1].priority == ordered[0].priority:
        return None
    return ordered[0].name
