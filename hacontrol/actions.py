"""Moved to :mod:`hacontrol.core` (actions, events, requests, results); this path keeps
working for one release."""

from hacontrol.core.actions import (
    Action,
    ActionOutcome,
    CancelPromote,
    CandidateInfo,
    ConfigureSync,
    Decision,
    Fence,
    Promote,
    Rejoin,
    Repoint,
    RunHook,
    Switchover,
    Unfence,
)
from hacontrol.core.events import Event, Severity
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
from hacontrol.core.results import BAD_REQUEST_CODES, OutcomeStatus, Refusal

__all__ = [
    "BAD_REQUEST_CODES",
    "Action",
    "ActionOutcome",
    "CancelPromote",
    "CandidateInfo",
    "ConfigureSync",
    "Decision",
    "Event",
    "Fence",
    "ManualFailover",
    "NodeRejoined",
    "OutcomeStatus",
    "Pause",
    "Promote",
    "Refusal",
    "Rejoin",
    "RejoinRequest",
    "Repoint",
    "Request",
    "Resume",
    "RunHook",
    "SetMaintenance",
    "Severity",
    "Switchover",
    "SwitchoverRequest",
    "Unfence",
]
