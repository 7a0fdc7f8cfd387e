"""What the decision core asks the shell to do, and what it tells the journal.

Actions are requests: the shell carries them out (idempotently, behind each node's
resilience policy) and reports back with an :class:`ActionOutcome`. Every action
carries a human ``reason`` and the inputs behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hacontrol.model import Role, format_lsn
from hacontrol.state import ControllerState


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


@dataclass(frozen=True, slots=True)
class Repoint:
    """Make replica ``node`` stream from ``primary``."""

    node: str
    primary: str
    reason: str


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
)


class Severity(StrEnum):
    """How loudly an event should be reported."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"  # an operator should look now (alerts)


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth one journal record and one log line."""

    kind: str
    node: str | None
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity = Severity.INFO


# Refusal codes that mean the request itself is wrong (HTTP 400); any other code
# means it conflicts with the cluster's current situation (HTTP 409).
BAD_REQUEST_CODES = frozenset({"unknown_node"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an operator request was refused, as a value (no message parsing needed)."""

    # Machine-readable: unknown_node, in_flight, writable_primary, not_eligible,
    # paused, no_primary, no_candidate, not_fenced_writable, is_primary, rejoining.
    code: str
    # What is wrong and what would allow the request (shown to the operator).
    message: str

    @property
    def bad_request(self) -> bool:
        """True when the request is malformed rather than in conflict with the cluster."""
        return self.code in BAD_REQUEST_CODES


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of one round, of one reported outcome, or of one operator request."""

    state: ControllerState
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    # Set only for a refused operator request (then there are no actions).
    refused: Refusal | None = None


class OutcomeStatus(StrEnum):
    """What the shell knows about an action it carried out."""

    SUCCEEDED = "succeeded"
    # The action certainly changed nothing (e.g. could not connect, node not a replica):
    # for a Promote, another candidate may be tried at once.
    FAILED = "failed"
    # It may or may not have taken effect (e.g. pg_promote did not finish in time).
    # When in doubt, report this.
    UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """The shell's report on one action."""

    action: Action
    status: OutcomeStatus
    detail: str = ""
    # Nodes the action left streaming as replicas of the new primary, so they need
    # no rejoin (a Switchover that rejoined the old primary reports it here).
    rejoined: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Pause:
    """Observe and report only: no actions until :class:`Resume`."""


@dataclass(frozen=True, slots=True)
class Resume:
    """End a pause."""


@dataclass(frozen=True, slots=True)
class SetMaintenance:
    """Put ``node`` in maintenance (never a candidate; its failure starts no failover)."""

    node: str
    on: bool


@dataclass(frozen=True, slots=True)
class ManualFailover:
    """Promote ``to`` now (primary down, manual mode, or a specific node wanted).

    ``force`` overrides the candidate checks (lag, health, priority 0, maintenance,
    fenced, unreachable) but never the two-primaries and one-in-flight rules.
    """

    to: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class SwitchoverRequest:
    """Planned switchover to ``to`` (None: the best candidate by the usual ranking)."""

    to: str | None = None


@dataclass(frozen=True, slots=True)
class NodeRejoined:
    """``node`` was rejoined as a replica (by an operator or the shell): un-fence it."""

    node: str


@dataclass(frozen=True, slots=True)
class RejoinRequest:
    """Rejoin ``node`` as a replica of the primary: with a driver that can, the shell
    runs the procedure (:class:`Rejoin`); without one, the operator did it by hand
    and this reports it like :class:`NodeRejoined`."""

    node: str


Request = (
    Pause
    | Resume
    | SetMaintenance
    | ManualFailover
    | SwitchoverRequest
    | NodeRejoined
    | RejoinRequest
)
