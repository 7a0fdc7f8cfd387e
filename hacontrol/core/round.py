"""One probe round: the ordered steps that fold a view into the next state."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hacontrol.core.actions import Decision
from hacontrol.core.arbitrate import arbitrate
from hacontrol.core.detect import (
    report_identity,
    report_no_primary,
    report_read_only_primary,
    track_primary,
    track_streaming,
    update_health,
)
from hacontrol.core.draft import Round
from hacontrol.core.failover import consider_failover
from hacontrol.core.inflight import follow_in_flight
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.planned import consider_failback
from hacontrol.core.replicas import consider_rejoin, repoint
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slots import manage_slots
from hacontrol.core.state import ControllerState
from hacontrol.core.sync_manage import manage_sync

__all__ = ["STEPS", "decide"]

# In this order: a step sees what the earlier ones decided this round.
STEPS: tuple[Callable[[Round], None], ...] = (
    report_identity,
    update_health,
    track_primary,
    follow_in_flight,
    arbitrate,
    # After arbitrate: a primary adopted this round already counts.
    track_streaming,
    consider_failover,
    consider_failback,
    repoint,
    consider_rejoin,
    manage_sync,
    manage_slots,
    report_read_only_primary,
    report_no_primary,
)


def decide(
    state: ControllerState,
    view: ClusterView,
    specs: Sequence[NodeSpec],
    settings: DecisionSettings,
) -> Decision:
    """One round: fold ``view`` into ``state`` and say what to do and why. Pure."""
    r = Round(state, view, specs, settings)
    for step in STEPS:
        step(r)
    return r.finish()
