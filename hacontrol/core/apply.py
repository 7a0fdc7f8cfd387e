"""Outcomes: the shell's report on an action, folded into the state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hacontrol.core.actions import (
    ActionOutcome,
    CancelPromote,
    ConfigureSync,
    Decision,
    Fence,
    ManageSlots,
    Promote,
    Rejoin,
    Repoint,
    RunHook,
    Switchover,
    Unfence,
)
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.failover import fence_first_outcome, promote_outcome
from hacontrol.core.inflight import cancel_promote_outcome
from hacontrol.core.planned import switchover_outcome
from hacontrol.core.replicas import rejoin_outcome
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slots import slots_outcome
from hacontrol.core.state import ControllerState
from hacontrol.core.sync_manage import sync_outcome

__all__ = ["FAILURE_KINDS", "HANDLERS", "apply_outcome"]

Handler = Callable[[ControllerState, ActionOutcome, float, DecisionSettings], Decision]

# Outcomes that change the state; the others only report a failure.
HANDLERS: dict[type[Any], Handler] = {
    Promote: promote_outcome,
    Switchover: switchover_outcome,
    Rejoin: rejoin_outcome,
    CancelPromote: cancel_promote_outcome,
    ManageSlots: slots_outcome,
}
# The event of each other action's failure (fences and repoints are retried by the
# rules themselves).
FAILURE_KINDS: dict[type[Any], EventKind] = {
    Repoint: EventKind.REPOINT_FAILED,
    Fence: EventKind.FENCE_FAILED,
    RunHook: EventKind.HOOK_FAILED,
    ConfigureSync: EventKind.SYNC_CONFIG_FAILED,
    Unfence: EventKind.UNFENCE_FAILED,
}


def _failed(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    action = outcome.action
    if outcome.status is OutcomeStatus.SUCCEEDED:
        return Decision(state)
    if isinstance(action, ConfigureSync):
        state = sync_outcome(state, outcome, at, settings)
    kind = FAILURE_KINDS[type(action)]
    severity = Severity.CRITICAL if isinstance(action, Fence | Unfence) else Severity.WARNING
    details: dict[str, Any] = {"status": str(outcome.status), "detail": outcome.detail}
    event = Event(
        kind, action.node, f"{kind.replace('_', ' ')} on {action.node}: {outcome.detail}",
        details, severity,
    )
    return Decision(state, (), (event,))


def apply_outcome(
    state: ControllerState,
    outcome: ActionOutcome,
    at: float,
    settings: DecisionSettings | None = None,
) -> Decision:
    """Fold the shell's report on an action into the state. Pure.

    A Promote that FAILED (certainly did nothing) clears the in-flight failover,
    backs the candidate off and lifts the cool-down it started, so another
    candidate may be tried at once. An UNCERTAIN promote keeps the failover in
    flight until it is observed or times out. Other failures only produce events:
    fences and repoints are retried by the rules themselves.

    A Switchover outcome finishes the switchover (see ``switchover_outcome``). The
    returned actions must be carried out like decide's: after a switchover whose
    promotion decide had not observed yet, they hold the role-change hook.
    """
    action = outcome.action
    settings = settings or DecisionSettings()
    if isinstance(action, Fence) and action.then is not None:
        return fence_first_outcome(state, outcome, at, settings)
    handler = HANDLERS.get(type(action), _failed)
    return handler(state, outcome, at, settings)
