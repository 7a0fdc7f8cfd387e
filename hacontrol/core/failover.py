"""Automatic failover: a confirmed failure of the primary, the checks that hold it
back, the fence-first promote, and the outcomes of the promote and of that fence."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hacontrol.core.actions import (
    Action,
    ActionOutcome,
    CandidateInfo,
    Decision,
    Fence,
    Promote,
)
from hacontrol.core.candidates import promote_reason, rank_candidates
from hacontrol.core.confirm import Confirmation, ConfirmStatus, confirm_failure, controllers_confirm
from hacontrol.core.draft import Round
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.model import ClusterView
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings, FailoverMode
from hacontrol.core.slot_names import promote_slots
from hacontrol.core.slots import logical_slots_ranking
from hacontrol.core.state import ControllerState, FailoverInFlight, NodeHealth, Operation
from hacontrol.core.sync import QuorumVerdict, failover_quorum, post_failover_standbys, quorum_mode
from hacontrol.core.topology import is_primary, reachable, writable

__all__ = ["blocked_by", "consider_failover", "fence_first", "fence_first_outcome",
           "promote_outcome"]


def fence_first(
    promote: Promote, old: str, view: ClusterView, settings: DecisionSettings
) -> Action:
    """The Promote, or — with a fence hook configured and the old primary unreachable
    (dead, or only hung and able to wake up) — a Fence of the old primary that the
    Promote follows only once the fence succeeded."""
    if not settings.fence_before_promote or not old or reachable(view.get(old)):
        return promote
    return Fence(
        old,
        f"{old} is unreachable and may only be hung: fence it before promoting {promote.node}",
        then=promote,
    )


@dataclass(slots=True)
class _Candidates:
    """The ranking a failover chooses from, as narrowed by the quorum rule."""

    ranking: tuple[CandidateInfo, ...]
    verdict: QuorumVerdict | None = None
    note: dict[str, Any] = field(default_factory=dict)

    @property
    def figures(self) -> list[dict[str, Any]]:
        return [c.as_dict() for c in self.ranking]

    @property
    def eligible(self) -> list[CandidateInfo]:
        return [c for c in self.ranking if c.eligible]


def consider_failover(r: Round) -> None:
    """The primary failed: fail over to the best candidate if nothing holds it back.

    A round that began with a failover in flight never starts another, even if that
    one was abandoned just now: its promote may still land."""
    primary = r.primary
    if r.old.in_flight is not None or primary is None or r.primary_changed:
        return
    if not _failed(r, primary):
        return
    confirmation = _confirmed(r, primary)
    if confirmation is None:
        return
    candidates = _Candidates(rank_candidates(r.state(), r.view, r.specs, r.settings))
    if _blocked(r, primary, candidates):
        return
    if quorum_mode(r.settings) and not _restrict_by_quorum(r, primary, candidates):
        return
    if not _majority_or_quorum_holds(r, primary, confirmation, candidates.verdict):
        return
    if not candidates.eligible:
        r.condition(
            f"no_candidate:{primary}",
            EventKind.NO_CANDIDATE,
            primary,
            f"no replica can be promoted in place of {primary}: "
            + "; ".join(c.describe() for c in candidates.ranking),
            Severity.CRITICAL,
            candidates=candidates.figures,
            **candidates.note,
        )
        return
    if (ranking := logical_slots_ranking(r, primary, candidates.ranking)) is None:
        return
    candidates.ranking = ranking
    _start_failover(r, primary, candidates, dict(confirmation.replicas))


def _failed(r: Round, primary: str) -> bool:
    """True when the primary's failure is sustained (reported as a condition)."""
    settings = r.settings
    health = r.health(primary)
    if not health.sustained_failure(settings.failure_threshold, settings.detection_window_s):
        if f"primary_failed:{primary}" in r.old.conditions and is_primary(r.obs(primary)):
            r.emit(EventKind.PRIMARY_RECOVERED, primary, f"primary {primary} answers again")
        return False
    obs = r.obs(primary)
    span = (health.last_failure_at or 0.0) - (health.first_failure_at or 0.0)
    r.condition(
        f"primary_failed:{primary}",
        EventKind.PRIMARY_FAILED,
        primary,
        f"primary {primary} failed {health.consecutive_failures} probes over {span:.2f} s",
        Severity.CRITICAL,
        failures=health.consecutive_failures,
        span_s=round(span, 3),
        error=obs.error if obs is not None else "not probed",
    )
    return True


def _confirmed(r: Round, primary: str) -> Confirmation | None:
    """The replicas' confirmation that the primary is down (None: they do not confirm)."""
    confirmation = confirm_failure(primary, r.view, r.specs, r.settings, r.draft.nodes)
    replicas = dict(confirmation.replicas)
    why = controllers_confirm(primary, r.view, r.settings, confirmation, r.draft.primary_lsn)
    if why is not None:
        r.condition(f"confirmed:{primary}", EventKind.FAILURE_CONFIRMED, primary,
                    f"controllers confirm that {primary} is down: {why}", Severity.CRITICAL,
                    replicas=replicas, confirmed_by="controllers")
        return replace(confirmation, status=ConfirmStatus.CONFIRMED, by_controllers=why)
    if confirmation.status is ConfirmStatus.NOT_CONFIRMED:
        r.condition(
            f"not_confirmed:{primary}",
            EventKind.FAILURE_NOT_CONFIRMED,
            primary,
            f"controller cut off from the primary? replicas still hear {primary}: no failover",
            Severity.WARNING,
            replicas=replicas,
        )
        return None
    if confirmation.status is ConfirmStatus.NO_REPLICA:
        r.condition(
            f"no_replica:{primary}",
            EventKind.FAILURE_NOT_CONFIRMED,
            primary,
            f"no reachable replica can confirm that {primary} is down: no failover",
            Severity.CRITICAL,
            replicas=replicas,
        )
        return None
    r.condition(
        f"confirmed:{primary}",
        EventKind.FAILURE_CONFIRMED,
        primary,
        f"replicas confirm that {primary} is down",
        Severity.CRITICAL,
        replicas=replicas,
    )
    return confirmation


def _blocked(r: Round, primary: str, candidates: _Candidates) -> bool:
    """True when a rule forbids a failover now (reported as a condition)."""
    blocked = blocked_by(r, primary)
    if blocked is None:
        return False
    key, message = blocked
    eligible = candidates.eligible
    r.condition(
        f"{key}:{primary}",
        EventKind.MANUAL_FAILOVER_NEEDED if key == "manual" else EventKind.FAILOVER_BLOCKED,
        primary,
        message,
        Severity.CRITICAL,
        blocked_by=key,
        best_candidate=eligible[0].node if eligible else None,
        candidates=candidates.figures,
    )
    return True


def _restrict_by_quorum(r: Round, primary: str, candidates: _Candidates) -> bool:
    """Quorum mode: False when too little of the synchronous set is reachable; else
    the candidates that might lack an acknowledged commit are excluded."""
    verdict = failover_quorum(r.state(), r.view, r.names, primary)
    candidates.verdict = verdict
    candidates.note = {
        "quorum": verdict.reason,
        "quorum_members": sorted(verdict.members),
        "quorum_reachable": list(verdict.reachable),
    }
    if not verdict.ok:
        r.condition(
            f"quorum_not_reachable:{primary}:{','.join(verdict.missing)}",
            EventKind.QUORUM_NOT_REACHABLE,
            primary,
            f"primary {primary} is down, but not enough of its synchronous set is"
            f" reachable: {verdict.reason}; waiting (no failover) until"
            f" {', '.join(verdict.missing)} can be reached",
            Severity.CRITICAL,
            missing=list(verdict.missing),
            reachable=list(verdict.reachable),
            candidates=candidates.figures,
        )
        return False
    if verdict.unrestricted:
        return True
    ranking = candidates.ranking
    for info in candidates.eligible:
        if not verdict.allows(info.node, info.wal_position):
            why = (
                "not a member of the synchronous set"
                if info.node not in verdict.members
                else "behind the most advanced reachable synchronous member"
            )
            ranking = tuple(replace(c, excluded=why) if c.node == info.node else c
                            for c in ranking)
    candidates.ranking = (
        *(c for c in ranking if c.eligible),
        *(c for c in ranking if not c.eligible),
    )
    return True


def _majority_or_quorum_holds(
    r: Round, primary: str, confirmation: Confirmation, verdict: QuorumVerdict | None
) -> bool:
    """A strict majority of confirmations, unless quorum mode's synchronous set
    already keeps the old primary from acknowledging a commit on its own."""
    quorum_holds = verdict is not None and verdict.ok and not verdict.unrestricted
    if confirmation.majority or quorum_holds:
        return True
    shortfall = confirmation.shortfall(primary, len(r.names))
    r.condition(
        f"no_majority:{primary}",
        EventKind.FAILOVER_BLOCKED,
        primary,
        f"primary {primary} looks down, but {shortfall}: the controller may be on"
        " the minority side of a partition, no automatic failover; if"
        f" {primary} is really down, an operator can run"
        " 'hacontrol failover --to NODE --force'",
        Severity.CRITICAL,
        blocked_by="no_majority",
        unreachable=list(confirmation.unreachable),
        confirming=list(confirmation.confirming),
        needed=confirmation.needed,
        replicas=dict(confirmation.replicas),
    )
    return False


def _start_failover(
    r: Round, primary: str, candidates: _Candidates, replicas: dict[str, str]
) -> None:
    """Promote the best candidate (fence first if configured) and put it in flight."""
    chosen = candidates.eligible[0]
    reason = promote_reason(chosen, candidates.ranking, primary)
    sync_standbys: str | None = None
    if quorum_mode(r.settings):
        target = post_failover_standbys(
            chosen.node, primary, r.view, r.state(), r.names, r.settings
        )
        sync_standbys = target.value
        reason += (
            f"; {candidates.note.get('quorum', '')}; its synchronous set: {target.reason}"
        )
    promote = Promote(
        chosen.node, reason, primary, candidates.ranking, sync_standbys=sync_standbys,
        slots=promote_slots(r.settings, r.names, chosen.node),
    )
    if not r.act(fence_first(promote, primary, r.view, r.settings)):
        return
    timeline = r.draft.primary_timeline
    flight = FailoverInFlight(
        candidate=chosen.node,
        old_primary=primary,
        started_at=r.at,
        old_timeline=timeline,
        previous_failover_at=r.draft.last_failover_at,
    )
    r.draft = replace(r.draft, in_flight=flight, last_failover_at=r.at)
    r.emit(
        EventKind.FAILOVER_STARTED,
        chosen.node,
        reason,
        Severity.CRITICAL,
        old_primary=primary,
        old_timeline=timeline,
        operation=str(Operation.FAILOVER),
        candidates=candidates.figures,
        replicas=replicas,
        **candidates.note,
    )


def _abandoned_candidate(primary: str, unseen: list[str]) -> str:
    return (
        f"primary {primary} is down, but the abandoned promote of"
        f" {', '.join(unseen)} may still land (a pending promote completes once"
        " replay catches up, even after a restart, or it landed out of sight): no"
        " automatic failover to another node until it is seen as a primary or"
        " stopped by its driver; let it finish (end what holds back its replay),"
        " or stop it and remove its promote.signal, then run 'hacontrol failover"
        " --to NODE --force'"
    )


def _other_primaries(r: Round, primary: str) -> tuple[str, str] | None:
    writable_nodes = [n for n in r.names if writable(r.obs(n))]
    if writable_nodes:
        return "writable", (
            f"primary {primary} is down, but {', '.join(writable_nodes)} still accept writes:"
            " waiting for the fence"
        )
    # A read-only (fenced) primary is only softly fenced: a session can still turn
    # read-write and write. Until it is rejoined or stopped it blocks a promotion.
    others = [n for n in r.names if n != primary and is_primary(r.obs(n))]
    if others:
        return "writable", (
            f"primary {primary} is down, but {', '.join(others)} still run as a primary"
            " (read-only, which a session can undo): rejoin or stop"
            f" {'it' if len(others) == 1 else 'them'} first"
        )
    return None


def blocked_by(r: Round, primary: str) -> tuple[str, str] | None:
    """Why no automatic failover may start now, if anything forbids it."""
    settings = r.settings
    if r.old.paused:
        return "paused", f"primary {primary} is down, but the controller is paused"
    if primary in r.old.maintenance:
        return "maintenance", f"primary {primary} is in maintenance: no failover"
    if settings.mode is FailoverMode.MANUAL:
        return "manual", f"primary {primary} is down; manual mode: an operator must fail over"
    unseen = [n for n in r.names if r.health(n).maybe_promoted]
    if unseen:
        return "abandoned_candidate", _abandoned_candidate(primary, unseen)
    fence_failed = r.health(primary).fence_failed_at
    if fence_failed is not None and r.at - fence_failed < settings.candidate_backoff_s:
        left = settings.candidate_backoff_s - (r.at - fence_failed)
        return "fence_failed", (
            f"primary {primary} is down, but fencing it before the promote failed:"
            f" retrying in {left:.0f} s"
        )
    last = r.draft.last_failover_at
    if last is not None and r.at - last < settings.cooldown_s:
        left = settings.cooldown_s - (r.at - last)
        return "cooldown", f"primary {primary} is down, but in cool-down for {left:.0f} s"
    return _other_primaries(r, primary)


# --------------------------------------------------------------------------- outcomes


def _details(outcome: ActionOutcome) -> dict[str, Any]:
    return {"status": str(outcome.status), "detail": outcome.detail}


def _promote_failed(
    state: ControllerState,
    outcome: ActionOutcome,
    flight: FailoverInFlight,
    at: float,
    settings: DecisionSettings,
) -> Decision:
    """A promote that certainly did nothing: back the candidate off, lift the cool-down."""
    node = outcome.action.node
    nodes = dict(state.nodes)
    backoff = at + settings.candidate_backoff_s
    nodes[node] = replace(nodes.get(node, NodeHealth()), backoff_until=backoff)
    primary = state.primary if state.primary not in state.fenced else None
    new_state = replace(
        state,
        nodes=nodes,
        in_flight=None,
        primary=primary,
        last_failover_at=flight.previous_failover_at,
    )
    event = Event(
        EventKind.FAILOVER_FAILED,
        node,
        f"promote of {node} failed: {outcome.detail}; it is backed off, another candidate"
        " may be tried",
        {**_details(outcome), "backoff_until": backoff},
        Severity.CRITICAL,
    )
    return Decision(new_state, (), (event,))


def promote_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """SUCCEEDED: wait to observe the candidate as primary. UNCERTAIN: keep it in
    flight up to the promote timeout. FAILED: clear the failover so another candidate
    may be tried, unless an earlier promote of the same flight may still land."""
    node = outcome.action.node
    detail = outcome.detail
    details = _details(outcome)
    flight = state.in_flight
    if flight is None or flight.candidate != node:
        event = Event(
            EventKind.PROMOTE_OUTCOME_IGNORED,
            node,
            f"outcome of a promote of {node} that is not in flight: {detail}",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.SUCCEEDED:
        new_state = replace(state, in_flight=replace(flight, promote_reported=True))
        event = Event(
            EventKind.PROMOTE_SUCCEEDED,
            node,
            f"{node} promoted: {detail}; waiting to observe it as primary",
            details,
        )
        return Decision(new_state, (), (event,))
    if outcome.status is OutcomeStatus.UNCERTAIN:
        event = Event(
            EventKind.PROMOTE_UNCERTAIN,
            node,
            f"promote of {node} may not have taken effect: {detail}; waiting up to"
            " the promote timeout",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if flight.redriven or flight.resumed:
        # Only this attempt certainly did nothing: the earlier promote of the same
        # flight (before the timeout, or before a controller restart) may still
        # land. The flight stays until it is seen or abandoned at the timeout,
        # which withdraws the request before another candidate is tried.
        event = Event(
            EventKind.PROMOTE_REDRIVE_FAILED,
            node,
            f"promote of {node} failed again: {detail}; its earlier promote may"
            " still land, so the failover stays in flight up to the promote timeout",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    return _promote_failed(state, outcome, flight, at, settings)


def fence_first_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """The fence of an unreachable old primary before its failover: succeeded, the
    Promote follows; otherwise nothing is promoted and the failover is cleared (its
    cool-down lifted), to be tried again after ``candidate_backoff_s``."""
    action = outcome.action
    assert isinstance(action, Fence) and action.then is not None
    promote = action.then
    old = action.node
    flight = state.in_flight
    details = _details(outcome)
    if flight is None or flight.candidate != promote.node:
        event = Event(
            EventKind.PROMOTE_OUTCOME_IGNORED,
            promote.node,
            f"fence of {old} for a promote of {promote.node} that is not in flight:"
            f" {outcome.detail}; not promoted",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.SUCCEEDED:
        event = Event(
            EventKind.OLD_PRIMARY_FENCED,
            old,
            f"{old} fenced before the promote of {promote.node}: {outcome.detail}",
            details,
            Severity.WARNING,
        )
        return Decision(state, (promote,), (event,))
    nodes = dict(state.nodes)
    nodes[old] = replace(nodes.get(old, NodeHealth()), fence_failed_at=at)
    new_state = replace(
        state, nodes=nodes, in_flight=None, last_failover_at=flight.previous_failover_at
    )
    event = Event(
        EventKind.FAILOVER_FAILED,
        promote.node,
        f"fencing {old} before the promote of {promote.node} failed: {outcome.detail};"
        f" nothing promoted (a hung {old} could wake up and take writes). Tried again in"
        f" {settings.candidate_backoff_s:g} s; fix the fence hook, or make sure {old} is"
        " down and fail over by hand",
        {**details, "old_primary": old},
        Severity.CRITICAL,
    )
    return Decision(new_state, (), (event,))
