"""The pure decision core: data, rules and the entry points; stdlib and ``hacontrol.core`` only.

``decide`` folds one probe round into the state, ``handle_request`` an operator
request, ``apply_outcome`` the shell's report on an action; each returns a
:class:`Decision`. The shell journals a Decision's events before it carries out
its actions (a ``failover_started`` is on disk before its Promote is sent).
"""

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
from hacontrol.core.apply import apply_outcome
from hacontrol.core.events import Event, EventKind, Severity, event_kinds
from hacontrol.core.handle import handle_request
from hacontrol.core.invariants import check as check_invariants
from hacontrol.core.model import (
    ClusterView,
    Endpoint,
    NodeSpec,
    Observation,
    ReplicationClient,
    Role,
    TimelineSwitch,
    WalReceiver,
)
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
from hacontrol.core.results import OutcomeStatus, Refusal, RefusalCode
from hacontrol.core.round import decide
from hacontrol.core.settings import DecisionSettings, FailoverMode, SyncMode
from hacontrol.core.state import (
    ControllerState,
    FailoverInFlight,
    NodeHealth,
    Operation,
    SyncQuorum,
    initial_state,
)

__all__ = [
    "Action",
    "ActionOutcome",
    "CancelPromote",
    "CandidateInfo",
    "ClusterView",
    "ConfigureSync",
    "ControllerState",
    "Decision",
    "DecisionSettings",
    "Endpoint",
    "Event",
    "EventKind",
    "FailoverInFlight",
    "FailoverMode",
    "Fence",
    "ManualFailover",
    "NodeHealth",
    "NodeRejoined",
    "NodeSpec",
    "Observation",
    "Operation",
    "OutcomeStatus",
    "Pause",
    "Promote",
    "Refusal",
    "RefusalCode",
    "Rejoin",
    "RejoinRequest",
    "ReplicationClient",
    "Repoint",
    "Request",
    "Resume",
    "Role",
    "RunHook",
    "SetMaintenance",
    "Severity",
    "Switchover",
    "SwitchoverRequest",
    "SyncMode",
    "SyncQuorum",
    "TimelineSwitch",
    "Unfence",
    "WalReceiver",
    "apply_outcome",
    "check_invariants",
    "decide",
    "event_kinds",
    "handle_request",
    "initial_state",
]
