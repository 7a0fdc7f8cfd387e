"""What the decision core asks the shell to do, the shell's report, and a Decision.

Actions are requests: the shell carries them out (idempotently, behind each node's
resilience policy) and reports back with an :class:`ActionOutcome`. Every action
carries a human ``reason`` and the inputs behind it. A :class:`Decision` holds the
next state, the actions and the events; the shell journals the events before it
carries out the actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hacontrol.core.events import Event
from hacontrol.core.model import LogicalSlotSpec, Role, format_lsn
from hacontrol.core.results import OutcomeStatus, Refusal
from hacontrol.core.state import ControllerState

__all__ = [
    "Action",
    "ActionOutcome",
    "CancelPromote",
    "CandidateInfo",
    "ConfigureSync",
    "Decision",
    "Fence",
    "ManageSlots",
    "Promote",
    "Rejoin",
    "Repoint",
    "RunHook",
    "SlotSync",
    "Switchover",
    "Unfence",
]


@dataclass(frozen=True, slots=True)
class CandidateInfo:
    """One node's figures as weighed for promotion, and why it was excluded if it was."""

    node: str
    priority: int
    reachable: bool
    role: Role
    wal_position: int | None
    # Bytes behind the reference position (max of the primary's last known LSN and
    # the best replica position); None when the node's position is unknown.
    lag_bytes: int | None
    excluded: str | None = None
    # Received but not yet replayed WAL, and whether replay is paused: a promote must
    # replay it first, so among equally advanced candidates the least held back wins.
    unreplayed_bytes: int | None = None
    replay_paused: bool | None = None
    # With logical slots configured: whether it holds every one synced and valid
    # (None: not known, or none configured).
    logical_slots_ready: bool | None = None

    @property
    def eligible(self) -> bool:
        """True when nothing excludes this node from promotion."""
        return self.excluded is None

    def describe(self) -> str:
        """One line: ``pg2 lsn 0/3000060 lag 0 B prio 100`` plus the exclusion."""
        lag = "-" if self.lag_bytes is None else f"{self.lag_bytes} B"
        text = f"{self.node} lsn {format_lsn(self.wal_position)} lag {lag} prio {self.priority}"
        if self.unreplayed_bytes:
            text += f" unreplayed {self.unreplayed_bytes} B"
        if self.replay_paused:
            text += " replay paused"
        if self.logical_slots_ready is False:
            text += " logical slots not synced"
        return f"{text} (excluded: {self.excluded})" if self.excluded else text

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly figures for events and the journal."""
        return {
            "node": self.node,
            "priority": self.priority,
            "reachable": self.reachable,
            "role": str(self.role),
            "wal_position": format_lsn(self.wal_position),
            "lag_bytes": self.lag_bytes,
            "excluded": self.excluded,
            "unreplayed_bytes": self.unreplayed_bytes,
            "replay_paused": self.replay_paused,
            "logical_slots_ready": self.logical_slots_ready,
        }


@dataclass(frozen=True, slots=True)
class Promote:
    """Promote ``node`` to primary (guarded by the shell: re-read its role first)."""

    node: str
    reason: str
    old_primary: str
    candidates: tuple[CandidateInfo, ...] = ()
    # Quorum mode: synchronous_standby_names to set on the candidate before the
    # promote, so its first commit already waits for its replicas (None: leave it).
    sync_standbys: str | None = None
    # Member slots to create on the candidate before the promote (one per other
    # node, the old primary's included), so the WAL they need is kept from the start.
    slots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SlotSync:
    """What a replica needs to keep the primary's failover slots in sync (PostgreSQL
    17+): a database in primary_conninfo for the slot sync worker."""

    dbname: str


@dataclass(frozen=True, slots=True)
class Repoint:
    """Make replica ``node`` stream from ``primary`` (through member slot ``slot``,
    created on the primary first; None: without a slot)."""

    node: str
    primary: str
    reason: str
    slot: str | None = None
    # Set: also sync_replication_slots and hot_standby_feedback on, dbname in the
    # conninfo (PostgreSQL 17+ with logical slots configured).
    slot_sync: SlotSync | None = None


@dataclass(frozen=True, slots=True)
class ManageSlots:
    """Bring the replication slots of ``node`` (the primary, or a replica left with
    stale member slots) to what the rules want. Runs beside the loop: creating a
    logical slot waits for the writing transactions running at that moment."""

    node: str
    reason: str
    create: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    logical: tuple[LogicalSlotSpec, ...] = ()
    # With logical: create them as failover slots (PostgreSQL 17+).
    failover: bool = False
    # synchronized_standby_slots to set (None: leave it).
    standby_slots: str | None = None
    # Configured logical slots this node should have had (lost in a failover).
    lost: tuple[str, ...] = ()
    # Stale slots on a replica: dropped only while it is still one (a promote may
    # have landed since, and then they are the new primary's).
    on_replica: bool = False


@dataclass(frozen=True, slots=True)
class Fence:
    """Stop ``node`` from taking writes (read-only, sessions ended, fence hook).

    ``then``: a fence of an unreachable old primary before its failover; the
    Promote follows only once the fence succeeded (see ``apply_outcome``).
    """

    node: str
    reason: str
    then: Promote | None = None


@dataclass(frozen=True, slots=True)
class RunHook:
    """Run the operator's hook for ``event`` (e.g. ``on_role_change``)."""

    event: str
    node: str
    reason: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Switchover:
    """Planned, zero-data-loss change of primary from ``old_primary`` to ``target``.

    The shell runs the whole procedure and reports one outcome: fence the old
    primary, wait until the target has replayed its final LSN, promote the target,
    repoint the others, rejoin the old primary as a replica — or, if the target
    does not catch up in time, roll back (un-fence the old primary).
    """

    old_primary: str
    target: str
    reason: str
    candidates: tuple[CandidateInfo, ...] = ()

    @property
    def node(self) -> str:
        """The node being promoted (every action names one node)."""
        return self.target


@dataclass(frozen=True, slots=True)
class ConfigureSync:
    """Set ``synchronous_standby_names`` on the primary ``node`` (ALTER SYSTEM + reload)."""

    node: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rejoin:
    """Bring the fenced ``node`` back as a streaming replica of ``primary`` with its
    driver (stop, rewind, standby configuration, start, verify). The shell runs it in
    the background and reports one outcome; SUCCEEDED lifts the fence."""

    node: str
    primary: str
    reason: str
    # Started by the controller itself after a failover (False: an operator asked).
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class Unfence:
    """Lift the controller's own fence from ``node`` (RESET default_transaction_read_only):
    the old primary of a switchover whose target was never promoted."""

    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class CancelPromote:
    """Withdraw a promote request ``node`` may still hold (its replay held back): stop
    its server with its driver, remove the request (promote.signal, which survives a
    restart) and start it again as a replica, so the request can never land."""

    node: str
    reason: str


Action = (
    Promote
    | Repoint
    | Fence
    | RunHook
    | Switchover
    | ConfigureSync
    | Rejoin
    | Unfence
    | CancelPromote
    | ManageSlots
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of one round, of one reported outcome, or of one operator request.

    The shell's contract, in this order: (1) take ``state`` as the new state; (2)
    journal every event durably (fsync'd) before (3) carrying out any action, in
    order, and folding each action's outcome back with ``apply_outcome``. So a
    ``failover_started`` is on disk before its Promote is sent, and a restarted
    controller always knows of a promote that may have landed.
    """

    state: ControllerState
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    # Set only for a refused operator request (then there are no actions).
    refused: Refusal | None = None


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """The shell's report on one action."""

    action: Action
    status: OutcomeStatus
    detail: str = ""
    # Nodes the action left streaming as replicas of the new primary, so they need
    # no rejoin (a Switchover that rejoined the old primary reports it here).
    rejoined: frozenset[str] = frozenset()
    # False: the shell certainly did not carry the action out (no connection, or a
    # step before it failed), so a FAILED outcome changed nothing on the node.
    attempted: bool = True
    # ManageSlots: the LSN each logical slot it created starts at.
    slot_lsns: Mapping[str, int] = field(default_factory=dict)
