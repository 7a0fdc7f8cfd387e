"""What every operator request handler shares: its inputs, and how it refuses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hacontrol.core.actions import Decision
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.requests import Request
from hacontrol.core.results import Refusal, RefusalCode
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import ControllerState

__all__ = ["Asked", "refuse", "request_details", "unknown_node"]


@dataclass(frozen=True, slots=True)
class Asked:
    """A request's inputs: the state, the latest round (foreign nodes screened out),
    the configured nodes by name and the settings."""

    state: ControllerState
    view: ClusterView
    specs: Mapping[str, NodeSpec]
    settings: DecisionSettings


def request_details(request: Request) -> dict[str, Any]:
    """The request as journal details: its type and fields."""
    return {"type": type(request).__name__} | {
        f.name: getattr(request, f.name) for f in fields(request)
    }


def refuse(
    state: ControllerState,
    request: Request,
    node: str | None,
    code: RefusalCode,
    message: str,
) -> Decision:
    """Refuse ``request``: nothing changes, the operator hears why."""
    event = Event(
        EventKind.REQUEST_REFUSED,
        node,
        message,
        {"request": request_details(request), "code": code},
        Severity.WARNING,
    )
    return Decision(state, (), (event,), refused=Refusal(code, message))


def unknown_node(
    state: ControllerState, request: Request, node: str, specs: Mapping[str, NodeSpec]
) -> Decision:
    """Refuse a request that names a node the configuration does not know."""
    return refuse(
        state, request, None, RefusalCode.UNKNOWN_NODE,
        f"{node} is not a configured node ({', '.join(specs)})",
    )
