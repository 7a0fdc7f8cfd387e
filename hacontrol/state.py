"""Moved to :mod:`hacontrol.core.state`; this path keeps working for one release."""

from hacontrol.core.state import (
    REJOIN_ATTEMPTS,
    REJOIN_BACKOFF_S,
    REJOIN_MAX_WAIT_S,
    BlockReason,
    ControllerState,
    FailoverBlock,
    FailoverInFlight,
    NodeHealth,
    Operation,
    SyncQuorum,
    initial_state,
)

__all__ = [
    "REJOIN_ATTEMPTS",
    "REJOIN_BACKOFF_S",
    "REJOIN_MAX_WAIT_S",
    "BlockReason",
    "ControllerState",
    "FailoverBlock",
    "FailoverInFlight",
    "NodeHealth",
    "Operation",
    "SyncQuorum",
    "initial_state",
]
