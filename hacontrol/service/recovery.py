"""A restarted controller's state, from its journal; and the check that the journal
belongs to this cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import structlog

from hacontrol.core.identity import learn_identity
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.recovery import restart_state
from hacontrol.core.state import ControllerState
from hacontrol.io.journal import Journal

log = structlog.get_logger("hacontrol")


class ForeignJournalError(Exception):
    """The journal belongs to another cluster: the controller must not use it."""


def recover_state(
    journal: Journal,
    specs: Sequence[NodeSpec],
    *,
    pinned: int | None,
    clock: Callable[[], float],
    wall: Callable[[], float] = time.time,
) -> tuple[ControllerState, int | None]:
    """The state the journal leaves this controller in, and the system identifier the
    journal was written for (None: unknown), to be checked against the nodes."""
    recovered = journal.recover()
    if (
        pinned is not None
        and recovered.system_identifier is not None
        and recovered.system_identifier != pinned
    ):
        raise ForeignJournalError(
            f"journal {journal.path} was written for the cluster with system"
            f" identifier {recovered.system_identifier}, but system_identifier ="
            f" {pinned} is pinned: give this cluster its own journal path"
        )
    if recovered.records:
        journal.append(
            "controller_recovered",
            primary=recovered.primary,
            paused=recovered.paused,
            maintenance=sorted(recovered.maintenance),
            fenced=sorted(recovered.fenced),
            unresolved_failover=recovered.unresolved_failover,
            system_identifier=recovered.system_identifier,
        )
    state = restart_state(recovered, specs, pinned=pinned, now=clock(), wall_now=wall())
    flight = state.in_flight
    if flight is not None:
        log.warning(
            "unresolved_operation",
            message=f"the previous controller stopped during a {flight.kind} to"
            f" {flight.candidate}: a failover is re-driven to the same candidate, a"
            " switchover settled from what the nodes show",
            **(recovered.unresolved_failover or {}),
        )
    return state, recovered.system_identifier


def refuse_foreign_journal(journal: Journal, expected: int, seen: int) -> None:
    """Refuse to go on with a journal written for another cluster (a leftover file
    must never fence this cluster's primary): ``seen``, the identifier a majority of
    the nodes agree on, must be the journal's."""
    if seen != expected:
        journal.append("foreign_journal", severity="critical",
                       journal_system_identifier=expected, nodes_system_identifier=seen)
        raise ForeignJournalError(
            f"journal {journal.path} was written for the cluster with system"
            f" identifier {expected}, but the nodes report {seen}: give this cluster its"
            " own journal path (or move the old journal away)"
        )


def check_journal_identity(
    journal: Journal, expected: int | None, view: ClusterView, names: Iterable[str]
) -> int | None:
    """Once a majority of the nodes agree on the cluster's identifier, it must be
    ``expected``, the one the journal was written for. Returns what is still to be
    checked: ``expected`` until a majority agrees, then None (checked once)."""
    if expected is None:
        return None
    seen = learn_identity(view, names)
    if seen is None:
        return expected
    refuse_foreign_journal(journal, expected, seen)
    return None
