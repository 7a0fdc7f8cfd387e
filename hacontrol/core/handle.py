"""Operator requests: one handler per request type; pause, resume and maintenance here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from hacontrol.core.actions import Decision
from hacontrol.core.ask import Asked, unknown_node
from hacontrol.core.events import Event, EventKind
from hacontrol.core.identity import cluster_identity, screen_foreign
from hacontrol.core.manual import manual_failover
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.planned import switchover_request
from hacontrol.core.replicas import node_rejoined, rejoin_request
from hacontrol.core.requests import (
    ManualFailover,
    NodeRejoined,
    Pause,
    RejoinRequest,
    Request,
    Resume,
    SetMaintenance,
    SwitchoverRequest,
)
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import ControllerState

__all__ = ["HANDLERS", "handle_request"]


def pause_or_resume(a: Asked, request: Pause | Resume) -> Decision:
    """Pause (observe and report only) or resume."""
    state = a.state
    paused = isinstance(request, Pause)
    kind = EventKind.PAUSED if paused else EventKind.RESUMED
    if paused == state.paused:
        message = f"already {kind}"
    elif paused:
        message = "paused: observing and reporting only, no actions until resumed"
    else:
        message = "resumed: acting on failures again"
    event = Event(kind, None, message, {"changed": paused != state.paused})
    return Decision(replace(state, paused=paused), (), (event,))


def set_maintenance(a: Asked, request: SetMaintenance) -> Decision:
    """Put a node in maintenance or take it out."""
    state, node = a.state, request.node
    if node not in a.specs:
        return unknown_node(state, request, node, a.specs)
    kind = EventKind.MAINTENANCE_ON if request.on else EventKind.MAINTENANCE_OFF
    changed = (node in state.maintenance) != request.on
    maintenance = state.maintenance | {node} if request.on else state.maintenance - {node}
    if not changed:
        message = f"{node} is already {'in' if request.on else 'out of'} maintenance"
    elif request.on:
        message = (
            f"{node} in maintenance: never a failover candidate, and its failure starts"
            " no failover"
        )
    else:
        message = f"{node} out of maintenance"
    event = Event(kind, node, message, {"changed": changed})
    return Decision(replace(state, maintenance=maintenance), (), (event,))


HANDLERS: dict[type[Any], Callable[[Asked, Any], Decision]] = {
    Pause: pause_or_resume,
    Resume: pause_or_resume,
    SetMaintenance: set_maintenance,
    RejoinRequest: rejoin_request,
    NodeRejoined: node_rejoined,
    ManualFailover: manual_failover,
    SwitchoverRequest: switchover_request,
}


def handle_request(
    state: ControllerState,
    view: ClusterView,
    specs: Sequence[NodeSpec],
    settings: DecisionSettings,
    request: Request,
) -> Decision:
    """Fold an operator request into the state. Pure.

    ``view`` is the latest probe round (``state`` must come from deciding on it);
    its time stamps what the request starts. A refused request changes nothing and
    returns ``Decision.refused`` plus a ``request_refused`` event saying why and
    what would allow it. See docs/operations.md for the semantics of each request.
    """
    by_name = {s.name: s for s in sorted(specs, key=lambda s: s.name)}
    # A node of another cluster is out of reach for every request too.
    screened, _ = screen_foreign(view, cluster_identity(state, settings))
    return HANDLERS[type(request)](Asked(state, screened, by_name, settings), request)
