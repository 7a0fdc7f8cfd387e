"""What the decision core tells the journal: event kinds, severities, events, hook env.

The kinds' string values are the journal's and the API's vocabulary: recovery,
the service, the demo and the fault checks match on them, so a value never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ROLE_CHANGE_HOOK",
    "Event",
    "EventKind",
    "Severity",
    "event_kinds",
    "hook_env",
    "role_change_env",
]

ROLE_CHANGE_HOOK = "on_role_change"


class EventKind(StrEnum):
    """Every kind of event the decision core emits."""

    # identity and health
    CLUSTER_IDENTIFIED = "cluster_identified"
    FOREIGN_NODE = "foreign_node"
    NODE_RECOVERED = "node_recovered"
    NODE_UNREACHABLE = "node_unreachable"
    NODE_FENCED = "node_fenced"
    NODE_REJOINED = "node_rejoined"
    PRIMARY_READ_ONLY = "primary_read_only"
    NO_PRIMARY = "no_primary"
    # one writable primary
    PRIMARY_ADOPTED = "primary_adopted"
    STRAY_PRIMARY = "stray_primary"
    SPLIT_BRAIN = "split_brain"
    # failure detection and failover
    PRIMARY_FAILED = "primary_failed"
    PRIMARY_RECOVERED = "primary_recovered"
    FAILURE_CONFIRMED = "failure_confirmed"
    FAILURE_NOT_CONFIRMED = "failure_not_confirmed"
    FAILOVER_BLOCKED = "failover_blocked"
    MANUAL_FAILOVER_NEEDED = "manual_failover_needed"
    QUORUM_NOT_REACHABLE = "quorum_not_reachable"
    NO_CANDIDATE = "no_candidate"
    FAILOVER_STARTED = "failover_started"
    FAILOVER_REDRIVEN = "failover_redriven"
    FAILOVER_COMPLETED = "failover_completed"
    FAILOVER_ABANDONED = "failover_abandoned"
    FAILOVER_FAILED = "failover_failed"
    OLD_PRIMARY_FENCED = "old_primary_fenced"
    PROMOTE_SUCCEEDED = "promote_succeeded"
    PROMOTE_UNCERTAIN = "promote_uncertain"
    PROMOTE_REDRIVE_FAILED = "promote_redrive_failed"
    PROMOTE_OUTCOME_IGNORED = "promote_outcome_ignored"
    PROMOTE_CANCELLED = "promote_cancelled"
    PROMOTE_CANCEL_FAILED = "promote_cancel_failed"
    # planned switchover and failback
    FAILBACK_PENDING = "failback_pending"
    SWITCHOVER_STARTED = "switchover_started"
    SWITCHOVER_PROMOTED = "switchover_promoted"
    SWITCHOVER_OVERDUE = "switchover_overdue"
    SWITCHOVER_SETTLED = "switchover_settled"
    SWITCHOVER_ABANDONED = "switchover_abandoned"
    SWITCHOVER_COMPLETED = "switchover_completed"
    SWITCHOVER_ABORTED = "switchover_aborted"
    SWITCHOVER_UNCERTAIN = "switchover_uncertain"
    SWITCHOVER_OUTCOME_IGNORED = "switchover_outcome_ignored"
    # rejoin
    REJOIN_SCHEDULED = "rejoin_scheduled"
    REJOIN_NOT_NEEDED = "rejoin_not_needed"
    REJOIN_FAILED = "rejoin_failed"
    # synchronous replication
    SYNC_DEGRADED = "sync_degraded"
    SYNC_WRITES_BLOCKED = "sync_writes_blocked"
    SYNC_RESTORED = "sync_restored"
    # replication slots
    SLOTS_CHANGED = "slots_changed"
    SLOT_EXPIRED = "slot_expired"
    SLOT_WAL_UNLIMITED = "slot_wal_unlimited"
    LOGICAL_SLOT_CREATED = "logical_slot_created"
    LOGICAL_SLOTS_LOST = "logical_slots_lost"
    LOGICAL_SLOT_MISMATCH = "logical_slot_mismatch"
    # operator requests
    PAUSED = "paused"
    RESUMED = "resumed"
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"
    REQUEST_REFUSED = "request_refused"
    # failed actions
    REPOINT_FAILED = "repoint_failed"
    FENCE_FAILED = "fence_failed"
    HOOK_FAILED = "hook_failed"
    SYNC_CONFIG_FAILED = "sync_config_failed"
    UNFENCE_FAILED = "unfence_failed"
    SLOTS_FAILED = "slots_failed"


def event_kinds() -> frozenset[str]:
    """Every event kind's journal value."""
    return frozenset(str(kind) for kind in EventKind)


class Severity(StrEnum):
    """How loudly an event should be reported."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"  # an operator should look now (alerts)


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth one journal record and one log line."""

    kind: EventKind
    node: str | None
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity = Severity.INFO


def hook_env(event: str, **fields: str | int | None) -> dict[str, str]:
    """A hook's environment: ``HACONTROL_EVENT`` and one ``HACONTROL_<FIELD>`` per
    field (None: empty), the one builder for every hook."""
    env = {"HACONTROL_EVENT": event}
    env.update({f"HACONTROL_{k.upper()}": "" if v is None else str(v) for k, v in fields.items()})
    return env


def role_change_env(
    new: str, old: str | None, timeline: int | None, why: str
) -> dict[str, str]:
    """The environment of the role-change hook."""
    return hook_env(ROLE_CHANGE_HOOK, new_primary=new, old_primary=old or None,
                    timeline=timeline, reason=why)
