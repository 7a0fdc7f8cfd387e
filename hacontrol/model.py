"""Moved to :mod:`hacontrol.core.model`; this path keeps working for one release."""

from hacontrol.core.model import (
    ClusterView,
    NodeSpec,
    Observation,
    ReplicationClient,
    Role,
    TimelineSwitch,
    WalReceiver,
    format_lsn,
    parse_lsn,
)
from hacontrol.core.settings import DecisionSettings, FailoverMode

__all__ = [
    "ClusterView",
    "DecisionSettings",
    "FailoverMode",
    "NodeSpec",
    "Observation",
    "ReplicationClient",
    "Role",
    "TimelineSwitch",
    "WalReceiver",
    "format_lsn",
    "parse_lsn",
]
