"""Following a change of primary in flight: completed, re-driven, settled or abandoned."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hacontrol.core.actions import (
    ActionOutcome,
    CancelPromote,
    Decision,
    Promote,
    Repoint,
    RunHook,
    Unfence,
)
from hacontrol.core.detect import set_primary
from hacontrol.core.draft import Round
from hacontrol.core.events import ROLE_CHANGE_HOOK, Event, EventKind, Severity, role_change_env
from hacontrol.core.failover import fence_first
from hacontrol.core.model import Observation, Role
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slot_names import promote_slots, repoint_slot, slot_sync_for
from hacontrol.core.state import ControllerState, FailoverInFlight, NodeHealth
from hacontrol.core.sync import post_failover_standbys, quorum_mode
from hacontrol.core.topology import is_primary, is_replica, reachable, writable

__all__ = [
    "abandon",
    "cancel_promote_outcome",
    "complete",
    "follow_in_flight",
    "follow_switchover",
    "redrive",
    "repoint_to",
    "role_change_hook",
    "settle_switchover",
]


def follow_in_flight(r: Round) -> None:
    """A failover or switchover in flight: is its candidate the primary yet?"""
    flight = r.in_flight
    if flight is None:
        return
    obs = r.obs(flight.candidate)
    promoted = (
        is_primary(obs)
        and obs is not None
        and obs.timeline is not None
        and (flight.old_timeline is None or obs.timeline > flight.old_timeline)
    )
    if flight.planned:
        if flight.resumed:
            settle_switchover(r, flight, obs if promoted else None)
        else:
            follow_switchover(r, flight, obs if promoted else None)
        return
    if promoted and obs is not None:
        complete(r, flight, obs)
        return
    if writable(r.obs(flight.old_primary)):
        # Once the promote is sent the old primary must not take writes: the
        # candidate will soon be writable on a higher timeline.
        r.mark_fenced(flight.old_primary, "returned while a failover away from it runs")
    if flight.resumed:
        # Promoting the same candidate again is safe (the shell re-reads its role);
        # waiting out the promote timeout is only needed before choosing another.
        redrive(r, flight, "the previous controller stopped before this failover finished")
    elif r.at - flight.started_at > r.settings.promote_timeout_s:
        why = (
            f"{flight.candidate} not seen as primary on a higher timeline within"
            f" {r.settings.promote_timeout_s:g} s"
        )
        if flight.redriven or not redrive(r, flight, why + ": promoting it again"):
            abandon(r, flight, why)


def redrive(r: Round, flight: FailoverInFlight, why: str) -> bool:
    """Send the in-flight failover's Promote to the same candidate again, if it is
    still a fit replica and nothing else accepts writes; True when sent. The
    shell's promote also ends the sessions that hold back the candidate's replay."""
    candidate = flight.candidate
    spec = r.specs[candidate]
    fit = (
        is_replica(r.obs(candidate))
        and candidate not in r.draft.fenced
        and (flight.forced or (candidate not in r.old.maintenance and spec.priority > 0))
    )
    others = [n for n in r.names if n != candidate and writable(r.obs(n))]
    if not fit or others:
        return False
    old = flight.old_primary
    sync_standbys: str | None = None
    if quorum_mode(r.settings) and old:
        sync_standbys = post_failover_standbys(
            candidate, old, r.view, r.state(), r.names, r.settings
        ).value
    promote = Promote(candidate, f"{flight.kind} to {candidate}: {why}", old,
                      sync_standbys=sync_standbys,
                      slots=promote_slots(r.settings, r.names, candidate))
    # Not while paused, even for an operator's failover: paused means no promotes.
    if not r.act(fence_first(promote, old, r.view, r.settings)):
        return False
    r.set_flight(replace(flight, resumed=False, redriven=True, started_at=r.at))
    r.emit(
        EventKind.FAILOVER_REDRIVEN,
        candidate,
        f"{flight.kind} to {candidate} re-driven: {why}",
        Severity.WARNING,
        old_primary=old or None,
    )
    return True


def _settled_promoted(r: Round, flight: FailoverInFlight, promoted: Observation) -> None:
    target, old = flight.candidate, flight.old_primary
    r.set_flight(None)
    set_primary(r, target)
    if old in r.specs and old != target:
        r.mark_fenced(old, f"switched over to {target} (settled after a restart)")
    r.emit(
        EventKind.SWITCHOVER_SETTLED,
        target,
        f"the {flight.kind} from {old} to {target}, left unfinished by the previous"
        f" controller, stands: {target} is the primary on timeline {promoted.timeline}",
        Severity.CRITICAL,
        old_primary=old,
        outcome="promoted",
        operation=str(flight.kind),
    )
    operator = flight.by_operator
    repoint_to(r, target, f"{flight.kind} settled: {target} replaced {old}", operator)
    role_change_hook(r, target, old, promoted.timeline, str(flight.kind), operator=operator)


def _settled_not_promoted(r: Round, flight: FailoverInFlight) -> None:
    target, old = flight.candidate, flight.old_primary
    r.set_flight(None)
    old_obs = r.obs(old)
    if is_primary(old_obs) and old_obs is not None and old_obs.read_only:
        r.act(
            Unfence(old, f"the {flight.kind} to {target} never promoted it: lift the"
                         f" fence the previous controller put on {old}"),
            operator=True,
        )
        outcome = f"{target} was not promoted: the fence on {old} is lifted"
    elif is_primary(old_obs):
        outcome = f"{target} was not promoted: {old} stays the primary"
    else:
        outcome = (
            f"{target} was not promoted and {old} is not reachable as a primary: the"
            " failover rules take over"
        )
    r.emit(
        EventKind.SWITCHOVER_SETTLED,
        target,
        f"the {flight.kind} from {old} to {target}, left unfinished by the previous"
        f" controller: {outcome}",
        Severity.CRITICAL,
        old_primary=old,
        outcome="not_promoted",
        operation=str(flight.kind),
    )


def settle_switchover(r: Round, flight: FailoverInFlight, promoted: Observation | None) -> None:
    """A switchover the previous controller left unfinished (its procedure died with
    it). The target seen promoted: it stands. The target seen still a replica: the
    old primary's fence is lifted (it stays the primary). Otherwise wait, up to the
    usual switchover limit."""
    if promoted is not None:
        _settled_promoted(r, flight, promoted)
    elif is_replica(r.obs(flight.candidate)):
        _settled_not_promoted(r, flight)
    else:
        follow_switchover(r, flight, None)


def follow_switchover(r: Round, flight: FailoverInFlight, promoted: Observation | None) -> None:
    """A planned switchover runs in the shell, which reports its outcome; here the
    state only follows what is seen. The deliberately fenced (read-only) old primary
    still counts as the primary until the target is seen promoted, so nothing is
    failed over or fenced meanwhile; once the target is writable on a higher
    timeline it is the primary, and a writable old primary gets fenced."""
    target = flight.candidate
    if promoted is not None and r.primary != target:
        set_primary(r, target)
        r.emit(
            EventKind.SWITCHOVER_PROMOTED,
            target,
            f"{target} is the primary on timeline {promoted.timeline}; the switchover"
            f" from {flight.old_primary} is finishing",
            old_primary=flight.old_primary,
            timeline=promoted.timeline,
            operation=str(flight.kind),
        )
        role_change_hook(
            r, target, flight.old_primary, promoted.timeline, str(flight.kind),
            operator=flight.by_operator,
        )
    elapsed = r.at - flight.started_at
    limit = r.settings.switchover_timeout_s
    if elapsed > 2 * limit:
        abandon(r, flight, f"no outcome from the switchover procedure within {2 * limit:g} s")
    elif elapsed > limit and not flight.overdue_reported:
        r.set_flight(replace(flight, overdue_reported=True))
        r.emit(
            EventKind.SWITCHOVER_OVERDUE,
            target,
            f"switchover from {flight.old_primary} to {target} is still running after"
            f" {elapsed:.1f} s (limit {limit:g} s)",
            Severity.CRITICAL,
            old_primary=flight.old_primary,
            elapsed_s=round(elapsed, 3),
        )


def complete(r: Round, flight: FailoverInFlight, obs: Observation) -> None:
    """The candidate is seen promoted: it is the primary, its old one is fenced."""
    new = flight.candidate
    r.set_flight(None)
    # A forced manual failover may promote a fenced node: as the primary it is not.
    set_primary(r, new)
    old = flight.old_primary
    r.emit(
        EventKind.FAILOVER_COMPLETED,
        new,
        f"{new} is the primary on timeline {obs.timeline} (was {old or 'unknown'})",
        Severity.CRITICAL,
        old_primary=old or None,
        timeline=obs.timeline,
        duration_s=round(r.at - flight.started_at, 3),
        operation=str(flight.kind),
    )
    if old in r.specs and old != new:
        r.mark_fenced(old, f"failed over to {new}")
    operator = flight.by_operator
    repoint_to(r, new, f"{flight.kind}: {new} replaced {old or '-'} as primary", operator)
    role_change_hook(r, new, old or None, obs.timeline, str(flight.kind), operator=operator)


def repoint_to(r: Round, new: str, reason: str, operator: bool) -> None:
    """Repoint every other fit replica to the new primary ``new``."""
    for name in r.names:
        if name == new or name in r.draft.fenced or name in r.old.maintenance:
            continue
        repoint = Repoint(name, new, reason, slot=repoint_slot(r.settings, name),
                          slot_sync=slot_sync_for(r.settings, r.obs(name)))
        if is_replica(r.obs(name)) and r.act(repoint, operator=operator):
            r.set_health(
                name, replace(r.health(name), last_repoint_at=r.at, misrouted_since=None)
            )


def role_change_hook(
    r: Round,
    new: str,
    old: str | None,
    timeline: int | None,
    why: str,
    *,
    operator: bool = False,
) -> None:
    """Run the operator's role-change hook for the new primary."""
    env = role_change_env(new, old, timeline, why)
    r.act(
        RunHook(ROLE_CHANGE_HOOK, new, f"{why}: {old or '-'} -> {new}", env), operator=operator
    )


def abandon(r: Round, flight: FailoverInFlight, why: str) -> None:
    """Give up on the change in flight; its candidate is backed off and, unless seen
    a primary, may still be promoted out of sight."""
    r.set_flight(None)
    candidate = flight.candidate
    # Unless it is seen as a primary now, its promote may still land: out of
    # sight, or later on a replica whose replay is held back (a pending promote
    # completes once replay catches up). A later failover must not make two
    # primaries, whatever the cool-down: none until it is proven unable to (seen
    # restarted, or stopped by its driver).
    seen = r.obs(candidate)
    if flight.planned:
        # The switchover procedure owns its promote; only an unseen target may
        # have been promoted out of sight.
        pending = False
        maybe = not (reachable(seen) and seen is not None and seen.role is not Role.UNKNOWN)
    else:
        pending = maybe = not is_primary(seen)
    r.set_health(candidate, replace(
        r.health(candidate),
        backoff_until=r.at + r.settings.candidate_backoff_s,
        maybe_promoted=maybe,
    ))
    if pending and candidate in r.settings.rejoin_nodes and reachable(seen):
        # Its driver can withdraw the request (stop, remove it, start as a replica):
        # then the next candidate may be tried, and the node still confirms.
        r.act(
            CancelPromote(
                candidate,
                f"the abandoned promote of {candidate} may still land: withdraw it so"
                " that another candidate can be promoted safely",
            )
        )
    kind = EventKind.FAILOVER_ABANDONED
    if flight.planned:
        kind = EventKind.SWITCHOVER_ABANDONED
        why += (
            f"; if {flight.old_primary} was fenced by it and {flight.candidate} not promoted,"
            " no node may accept writes: check both"
        )
    r.emit(
        kind,
        flight.candidate,
        f"{flight.kind} to {flight.candidate} abandoned: {why}",
        Severity.CRITICAL,
        old_primary=flight.old_primary or None,
        started_at=flight.started_at,
    )


def cancel_promote_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """An abandoned candidate's promote request withdrawn: it can no longer land, so
    the next failover may go to another node."""
    node = outcome.action.node
    details: dict[str, Any] = {"status": str(outcome.status), "detail": outcome.detail}
    if outcome.status is not OutcomeStatus.SUCCEEDED:
        event = Event(
            EventKind.PROMOTE_CANCEL_FAILED,
            node,
            f"could not withdraw the abandoned promote of {node}: {outcome.detail}; no"
            f" failover to another node until {node} is seen as a primary, or stopped with"
            " its promote.signal removed",
            details,
            Severity.CRITICAL,
        )
        return Decision(state, (), (event,))
    nodes = dict(state.nodes)
    nodes[node] = replace(nodes.get(node, NodeHealth()), maybe_promoted=False)
    event = Event(
        EventKind.PROMOTE_CANCELLED,
        node,
        f"the abandoned promote of {node} is withdrawn ({outcome.detail}): it can no longer"
        " land; another candidate may be promoted",
        details,
        Severity.WARNING,
    )
    return Decision(replace(state, nodes=nodes), (), (event,))
