"""What the decision core needs to know about configuration: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from hacontrol.core.model import LogicalSlotSpec

__all__ = ["DecisionSettings", "FailoverMode", "SyncMode"]


class FailoverMode(StrEnum):
    """How much the controller may do on its own."""

    AUTOMATIC = "automatic"  # fails over (and, if enabled, fails back) by itself
    SEMI_AUTOMATIC = "semi-automatic"  # fails over by itself, never fails back on its own
    MANUAL = "manual"  # detects and alerts, waits for an operator


class SyncMode(StrEnum):
    """Whether the controller manages synchronous replication."""

    OFF = "off"  # synchronous_standby_names is left alone
    QUORUM = "quorum"  # the controller manages 'ANY k (...)' on the primary


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """Everything the pure decision core needs to know about configuration."""

    mode: FailoverMode = FailoverMode.AUTOMATIC
    # How often every node is probed.
    probe_interval_s: float = 0.2
    # A primary is failed only after this many consecutive failed probes ...
    failure_threshold: int = 3
    # ... that span at least this long (first failure to latest failure).
    detection_window_s: float = 0.5
    # A reachable replica confirms it lost the primary when its WAL receiver is
    # not streaming, or when it has heard nothing from its upstream for longer
    # than this (covers a hung primary whose TCP connections stay open).
    replica_silence_s: float = 3.0
    # A node that failed must pass this many consecutive healthy probes before
    # it counts as healthy again.
    recovery_threshold: int = 3
    # A replica further behind the most advanced candidate than this is never
    # promoted automatically.
    max_lag_bytes: int = 16 * 1024 * 1024
    # Minimum time between two automatic failovers.
    cooldown_s: float = 300.0
    # A promotion not observed to complete within this long is sent once more (to the
    # same candidate), and abandoned after as long again.
    promote_timeout_s: float = 30.0
    # At most one repoint of the same replica within this long.
    repoint_retry_s: float = 5.0
    # Fail back to the highest-priority node once it is healthy again (automatic mode only).
    failback: bool = False
    failback_delay_s: float = 300.0
    # A candidate whose promote failed or was abandoned is not tried again for this long.
    candidate_backoff_s: float = 60.0
    # A planned switchover (or failback) still running after this long is reported;
    # after twice this long without an outcome from the shell it is abandoned.
    switchover_timeout_s: float = 60.0
    # Synchronous replication: "off" (the controller leaves synchronous_standby_names
    # alone) or "quorum" (it manages 'ANY k (...)' on the primary; see docs/synchronous.md).
    synchronous: SyncMode | Literal["off", "quorum"] = SyncMode.OFF
    # k: commits wait for this many synchronous replicas.
    sync_quorum: int = 1
    # True: never fewer than k names, writes block instead; False: degrade with an event.
    sync_strict: bool = False
    # A reachable replica that does not stream from the primary yet (being repointed
    # after a failover) stays a synchronous member this long before it is dropped.
    sync_grace_s: float = 5.0
    # Rejoin a fenced old primary by itself (retried with back-off), when its node is in
    # ``rejoin_nodes``: the nodes whose driver can run the rejoin procedure.
    rejoin_automatic: bool = True
    rejoin_nodes: frozenset[str] = frozenset()
    # A fence hook is configured: an unreachable old primary is fenced (the hook,
    # e.g. STONITH) before a promote, and a failed fence aborts the promote.
    fence_before_promote: bool = False
    # The cluster's system identifier pinned in the configuration (None: learnt
    # from the nodes). A node reporting another one is foreign and never acted on.
    system_identifier: int | None = None
    # Physical member slots: the primary holds one per other node and the replicas
    # stream through it (docs/slots.md).
    member_slots: bool = True
    # A member away this long (not a reachable replica) loses its slot.
    slot_retention_s: float = 1800.0
    # Permanent logical slots created on the primary (``[[slots]]``).
    logical_slots: tuple[LogicalSlotSpec, ...] = ()
    # No automatic failover to a candidate that lacks the synced logical slots.
    require_logical_slots: bool = False

    def __post_init__(self) -> None:
        # The configuration may still hand over the plain word; the rules compare enums.
        object.__setattr__(self, "synchronous", SyncMode(self.synchronous))
