"""Which cluster the nodes belong to: the system identifier a majority reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from hacontrol.core.model import ClusterView, Observation
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import ControllerState

__all__ = ["cluster_identity", "learn_identity", "screen_foreign"]


def learn_identity(view: ClusterView, names: Iterable[str]) -> int | None:
    """The system identifier a strict majority of the configured nodes report (None:
    no majority yet). One mistyped DSN pointing at another cluster cannot outvote it."""
    configured = set(names)
    counts = Counter(
        obs.system_identifier
        for name, obs in view.observations.items()
        if name in configured and obs.reachable and obs.system_identifier is not None
    )
    for identifier, count in counts.most_common(1):
        if count >= len(configured) // 2 + 1:
            return identifier
    return None


def screen_foreign(view: ClusterView, identity: int | None) -> tuple[ClusterView, dict[str, int]]:
    """``view`` with every node of another cluster shown as unreachable (so no rule
    adopts, promotes, fences, repoints or rejoins it), and those nodes' identifiers."""
    if identity is None:
        return view, {}
    foreign: dict[str, int] = {}
    observations = dict(view.observations)
    for name, obs in view.observations.items():
        if obs.reachable and obs.system_identifier not in (None, identity):
            assert obs.system_identifier is not None
            foreign[name] = obs.system_identifier
            observations[name] = Observation(
                name,
                obs.at,
                False,
                error=(
                    f"foreign server: system identifier {obs.system_identifier}, the"
                    f" cluster's is {identity}"
                ),
                system_identifier=obs.system_identifier,
                latency_s=obs.latency_s,
            )
    if not foreign:
        return view, {}
    return ClusterView(view.at, observations), foreign


def cluster_identity(state: ControllerState, settings: DecisionSettings) -> int | None:
    """The identifier pinned in the configuration, or the one learnt before."""
    return settings.system_identifier or state.system_identifier
