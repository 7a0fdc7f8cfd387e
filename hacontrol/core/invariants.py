"""What holds after every decision; the property tests check it after every step."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hacontrol.core.actions import Action, ManageSlots, Promote
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.slot_names import SLOT_PREFIX
from hacontrol.core.state import ControllerState
from hacontrol.core.topology import writable

__all__ = ["CONDITION_PREFIXES", "check"]

# The first part (before ":") of every condition key the rules set.
CONDITION_PREFIXES = frozenset({
    "foreign_node", "primary_read_only", "no_primary", "split_brain", "primary_failed",
    "not_confirmed", "no_replica", "confirmed", "paused", "maintenance", "manual",
    "abandoned_candidate", "fence_failed", "cooldown", "writable", "quorum_not_reachable",
    "no_majority", "no_candidate", "failback_pending", "sync_blocked", "sync_degraded",
    "slot_wal_unlimited", "logical_slot_mismatch", "logical_slots",
})


def check(
    state: ControllerState,
    specs: Sequence[NodeSpec],
    view: ClusterView | None = None,
    actions: Iterable[Action] = (),
) -> list[str]:
    """Every invariant ``state`` (and the ``actions`` decided on ``view``) breaks."""
    names = {s.name for s in specs}
    broken: list[str] = []
    if state.primary is not None and state.primary in state.fenced:
        broken.append(f"primary {state.primary} is fenced")
    if state.in_flight is not None and state.in_flight.candidate not in names:
        broken.append(f"in-flight candidate {state.in_flight.candidate} is not configured")
    if not state.rejoining <= names:
        broken.append(f"rejoining unknown nodes {sorted(state.rejoining - names)}")
    unknown = sorted(k for k in state.conditions if k.split(":", 1)[0] not in CONDITION_PREFIXES)
    if unknown:
        broken.append(f"unknown condition keys {unknown}")
    if view is not None:
        seen = [n for n in sorted(names) if writable(view.get(n))]
        for action in actions:
            if isinstance(action, Promote) and seen:
                broken.append(f"Promote of {action.node} while {', '.join(seen)} is writable")
    for action in actions:
        if isinstance(action, ManageSlots):
            foreign = [s for s in (*action.create, *action.drop) if not s.startswith(SLOT_PREFIX)]
            if foreign:
                broken.append(f"ManageSlots on {action.node} touches slots not ours: {foreign}")
    return broken
