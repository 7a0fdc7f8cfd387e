"""One round's draft: the next state as it is being decided, and what the round says.

A :class:`Round` lives only inside :func:`hacontrol.core.round.decide`. The steps
(free functions in the topic modules) read ``r.old`` and ``r.view`` and update
``r.draft``, one ``ControllerState``, with ``dataclasses.replace``; they queue
actions with :meth:`Round.act` and report with :meth:`Round.emit` (once) and
:meth:`Round.condition` (while it lasts, reported when it starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hacontrol.core.actions import Action, Decision
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.identity import cluster_identity, learn_identity, screen_foreign
from hacontrol.core.model import ClusterView, NodeSpec, Observation
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import (
    BlockReason,
    ControllerState,
    FailoverBlock,
    FailoverInFlight,
    NodeHealth,
)

__all__ = ["BLOCKING_KINDS", "WAY_OUT", "Round"]

# Condition kinds that mean a needed failover is held back (see FailoverBlock).
BLOCKING_KINDS = frozenset({
    EventKind.FAILURE_NOT_CONFIRMED, EventKind.FAILOVER_BLOCKED,
    EventKind.MANUAL_FAILOVER_NEEDED, EventKind.QUORUM_NOT_REACHABLE,
    EventKind.NO_CANDIDATE, EventKind.NO_PRIMARY,
})
# What an operator can do about each reason (the primary's name is filled in).
WAY_OUT = {
    BlockReason.NOT_CONFIRMED: "if {primary} is really down (the replicas may be cut off from"
    " it too), fail over by hand: hacontrol failover --to NODE --force",
    BlockReason.NO_REPLICA: "make a replica reachable, or, if {primary} is really down:"
    " hacontrol failover --to NODE --force",
    BlockReason.PAUSED: "hacontrol resume",
    BlockReason.MAINTENANCE: "hacontrol maintenance {primary} off, or hacontrol failover"
    " --to NODE",
    BlockReason.MANUAL: "hacontrol failover --to NODE",
    BlockReason.ABANDONED_CANDIDATE: "let the abandoned candidate finish its promote, or stop"
    " it and remove its promote.signal, then hacontrol failover --to NODE --force",
    BlockReason.FENCE_FAILED: "fix the fence hook, or make sure {primary} is down and run"
    " hacontrol failover --to NODE --force",
    BlockReason.COOLDOWN: "wait for the cool-down to end, or hacontrol failover --to NODE",
    BlockReason.WRITABLE: "rejoin or stop the other primary (hacontrol rejoin NODE)",
    BlockReason.QUORUM_NOT_REACHABLE: "bring the missing synchronous replicas back; forcing a"
    " failover (hacontrol failover --to NODE --force) may lose acknowledged commits",
    BlockReason.NO_MAJORITY: "if {primary} is really down: hacontrol failover --to NODE --force",
    BlockReason.NO_CANDIDATE: "fix a candidate (lag, maintenance, priority, health), or"
    " hacontrol failover --to NODE --force",
    BlockReason.NO_PRIMARY: "hacontrol failover --to NODE (--force if it is refused)",
    BlockReason.LOGICAL_SLOTS: "wait until a candidate has synced the logical slots, or set"
    " [failover] require_logical_slots = false, or hacontrol failover --to NODE --force",
}


def _starting_draft(
    state: ControllerState, names: Sequence[str], identity: int | None
) -> ControllerState:
    """``state`` cut down to the configured nodes: what the round starts from."""
    configured = set(names)
    # A fenced node is never the primary (see Round.mark_fenced).
    primary = (
        state.primary
        if state.primary in configured and state.primary not in state.fenced
        else None
    )
    flight = state.in_flight
    if flight is not None and flight.candidate not in configured:
        flight = None
    known = primary is not None
    return replace(
        state,
        nodes={n: state.health(n) for n in names},
        primary=primary,
        primary_timeline=state.primary_timeline if known else None,
        primary_lsn=state.primary_lsn if known else None,
        fenced=state.fenced & configured,
        in_flight=flight,
        rejoining=state.rejoining & configured,
        rejoin_tried=state.rejoin_tried & configured,
        sync_in_force=state.sync_in_force if known else None,
        sync_pending=state.sync_pending if known else (),
        sync_requested=state.sync_requested if known else None,
        sync_requested_at=state.sync_requested_at if known else None,
        system_identifier=identity,
    )


class Round:
    """Scratch space for computing one Decision; never escapes ``decide``."""

    def __init__(
        self,
        state: ControllerState,
        view: ClusterView,
        specs: Sequence[NodeSpec],
        settings: DecisionSettings,
    ) -> None:
        self.old = state
        self.at = view.at
        self.specs = {s.name: s for s in sorted(specs, key=lambda s: s.name)}
        self.names = list(self.specs)
        self.settings = settings
        identity = cluster_identity(state, settings)
        self.learnt_identity = False
        if identity is None:
            identity = learn_identity(view, self.names)
            self.learnt_identity = identity is not None
        self.identity = identity
        self.view, self.foreign = screen_foreign(view, identity)
        self.draft = _starting_draft(state, self.names, identity)
        # Condition keys carried over unchanged from the last round (a step that
        # could not be evaluated this round keeps its conditions quiet).
        self.kept_conditions: set[str] = set()
        self.actions: list[Action] = []
        # Every event in the order the round produced it; a condition's key rides
        # along so it can be dropped when it was already active last round.
        self._ordered: list[tuple[str | None, Event]] = []
        self.conditions: dict[str, Event] = {}
        self.primary_changed = False
        self.blocked: FailoverBlock | None = None

    # -- reading

    def obs(self, name: str | None) -> Observation | None:
        """This round's observation of ``name`` (None: not probed, or no name)."""
        return self.view.get(name) if name is not None else None

    @property
    def primary(self) -> str | None:
        """The primary as decided so far."""
        return self.draft.primary

    @property
    def in_flight(self) -> FailoverInFlight | None:
        """The change of primary in flight as decided so far."""
        return self.draft.in_flight

    def health(self, name: str) -> NodeHealth:
        """The probe history of ``name`` as updated so far."""
        return self.draft.health(name)

    def state(self) -> ControllerState:
        """The draft as the rules consult it mid-round (and as the round ends)."""
        draft = self.draft
        # A node out of the fenced set starts afresh the next time it is fenced.
        nodes = {
            name: health if name in draft.fenced or not health.rejoin_failures
            else replace(health, rejoin_failures=0, rejoin_retry_at=None)
            for name, health in draft.nodes.items()
        }
        return replace(
            draft,
            nodes=nodes,
            conditions=self.old.conditions,
            # A node that left the fenced set gets a fresh automatic attempt the
            # next time it is fenced.
            rejoin_tried=draft.rejoin_tried & draft.fenced,
            failover_blocked=self.blocked,
        )

    # -- writing

    def set_health(self, name: str, health: NodeHealth) -> None:
        """Replace the probe history of ``name``."""
        self.draft = replace(self.draft, nodes={**self.draft.nodes, name: health})

    def set_flight(self, flight: FailoverInFlight | None) -> None:
        """Replace the change of primary in flight."""
        self.draft = replace(self.draft, in_flight=flight)

    def unfence(self, name: str) -> None:
        """Take ``name`` out of the fenced set (it is the primary now)."""
        self.draft = replace(self.draft, fenced=self.draft.fenced - {name})

    def emit(
        self,
        kind: EventKind,
        node: str | None,
        message: str,
        severity: Severity = Severity.INFO,
        **details: Any,
    ) -> None:
        """Report something that happened this round."""
        self._ordered.append((None, Event(kind, node, message, details, severity)))

    def condition(
        self,
        key: str,
        kind: EventKind,
        node: str | None,
        message: str,
        severity: Severity = Severity.INFO,
        **details: Any,
    ) -> None:
        """An ongoing condition: reported once, when it starts."""
        event = Event(kind, node, message, details, severity)
        if key not in self.conditions:
            self._ordered.append((key, event))
        self.conditions[key] = event
        if kind in BLOCKING_KINDS:
            reason = BlockReason(key.split(":", 1)[0])
            way_out = WAY_OUT[reason].format(primary=node or "the primary")
            self.blocked = FailoverBlock(reason, message, way_out)

    def act(self, action: Action, *, operator: bool = False) -> bool:
        """Queue ``action`` unless paused (``operator``: a step of an operator's own
        request, allowed while paused); True when queued."""
        if self.old.paused and not operator:
            return False
        self.actions.append(action)
        return True

    def mark_fenced(self, name: str, why: str) -> None:
        """Put ``name`` in the fenced set (a fenced node is never the primary); the
        Fence action itself comes from ``arbitrate``, every round it is seen writable."""
        if name in self.draft.fenced:
            return
        primary = None if self.draft.primary == name else self.draft.primary
        self.draft = replace(self.draft, fenced=self.draft.fenced | {name}, primary=primary)
        self.emit(
            EventKind.NODE_FENCED,
            name,
            f"{name} fenced — needs rejoin: {why}",
            Severity.CRITICAL,
            reason=why,
        )

    def finish(self) -> Decision:
        """The Decision: the draft with this round's condition keys, actions, events."""
        if self.in_flight is not None and not self.primary_changed:
            # While a failover runs, keep what was reported so nothing repeats after it.
            keys = set(self.old.conditions) | set(self.conditions)
        else:
            keys = set(self.conditions)
        keys |= self.kept_conditions
        # Chronological: a condition's event stands where it first arose this round.
        ordered = [
            self.conditions[key] if key is not None else event
            for key, event in self._ordered
            if key is None or (key in self.conditions and key not in self.old.conditions)
        ]
        state = replace(self.state(), conditions=frozenset(keys))
        return Decision(state, tuple(self.actions), tuple(ordered))
