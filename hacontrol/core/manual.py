"""An operator's manual failover: what refuses it, what ``--force`` overrides, the start."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.core.actions import CandidateInfo, Decision, Promote
from hacontrol.core.ask import Asked, refuse, unknown_node
from hacontrol.core.candidates import rank_candidates
from hacontrol.core.confirm import confirm_failure
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.failover import fence_first
from hacontrol.core.fitness import NodeFacts, all_problems
from hacontrol.core.model import format_lsn
from hacontrol.core.requests import ManualFailover
from hacontrol.core.results import RefusalCode
from hacontrol.core.slot_names import promote_slots
from hacontrol.core.slots import logical_loss_event
from hacontrol.core.state import FailoverInFlight, Operation
from hacontrol.core.sync import failover_quorum, post_failover_standbys, quorum_mode
from hacontrol.core.topology import is_primary, is_replica, reachable, writable

__all__ = ["manual_failover", "promotion_problems"]


def _hard_refusal(a: Asked, request: ManualFailover) -> Decision | None:
    """What even ``--force`` does not override."""
    state, to = a.state, request.to
    if to not in a.specs:
        return unknown_node(state, request, to, a.specs)
    if state.in_flight is not None:
        flight = state.in_flight
        return refuse(
            state, request, to, RefusalCode.IN_FLIGHT,
            f"a {flight.kind} to {flight.candidate} is in flight; wait for it to finish",
        )
    writable_nodes = [n for n in a.specs if writable(a.view.get(n))]
    if writable_nodes:
        return refuse(
            state, request, to, RefusalCode.WRITABLE_PRIMARY,
            f"{', '.join(writable_nodes)} {'is' if len(writable_nodes) == 1 else 'are'} a"
            " writable primary: promoting another node would make two primaries; use a"
            " switchover (switchover --to NODE) to move the primary, or stop/fence the"
            " primary first",
        )
    if to == state.primary:
        return refuse(
            state, request, to, RefusalCode.NOT_ELIGIBLE,
            f"{to} is the current primary; bring it back or fail over to another node",
        )
    if is_primary(a.view.get(to)):
        return refuse(
            state, request, to, RefusalCode.NOT_ELIGIBLE,
            f"{to} is a read-only primary, not a replica: promoting cannot help; rejoin it"
            " as a replica, or fail over to another node",
        )
    return None


def promotion_problems(a: Asked, name: str, info: CandidateInfo | None) -> list[str]:
    """Everything that keeps ``name`` from being a normal candidate (empty: nothing)."""
    facts = NodeFacts(
        name, a.specs[name], a.view.get(name), a.state.health(name), a.state, a.view,
        a.specs, a.settings, info.lag_bytes if info is not None else None,
    )
    return all_problems(facts)


def _partition_problem(a: Asked) -> str | None:
    """The controller may be cut off with a minority: promoting there makes a second
    primary beside the one the majority still uses."""
    old = a.state.primary
    if old is None or old not in a.specs or reachable(a.view.get(old)):
        return None
    confirmation = confirm_failure(old, a.view, a.specs, a.settings)
    if confirmation.majority:
        return None
    return (
        confirmation.shortfall(old, len(a.specs))
        + ": the controller may be on the minority side of a partition"
    )


def _quorum_problems(a: Asked, to: str) -> tuple[list[str], str]:
    """Quorum mode: what the synchronous sets say against ``to``, and its own set."""
    state, view = a.state, a.view
    names = sorted(a.specs)
    verdict = failover_quorum(state, view, names, state.primary or "")
    obs = view.get(to)
    position = obs.wal_position if is_replica(obs) and obs is not None else None
    problems: list[str] = []
    if not verdict.ok:
        problems.append(f"the synchronous quorum is not reachable: {verdict.reason}")
    elif not verdict.allows(to, position):
        problems.append(
            f"{to} may lack acknowledged commits: it is not a synchronous member at the"
            f" most advanced reachable member's WAL ({format_lsn(verdict.required_lsn)})"
        )
    standbys = post_failover_standbys(to, state.primary, view, state, names, a.settings)
    return problems, standbys.value


def _start(
    a: Asked, request: ManualFailover, ranking: tuple[CandidateInfo, ...],
    problems: list[str], sync_standbys: str | None,
) -> Decision:
    """Promote ``request.to`` (fence first if configured) and put it in flight."""
    state, to, at = a.state, request.to, a.view.at
    old = state.primary or ""
    obs = a.view.get(to)
    forced = f" (forced over: {'; '.join(problems)})" if problems else ""
    figures = "; ".join(c.describe() for c in ranking)
    reason = f"operator requested a manual failover to {to}{forced}; candidates: {figures}"
    target_tl = obs.timeline if obs is not None else None
    flight = FailoverInFlight(
        candidate=to,
        old_primary=old,
        started_at=at,
        old_timeline=state.primary_timeline if state.primary_timeline is not None else target_tl,
        previous_failover_at=state.last_failover_at,
        kind=Operation.MANUAL_FAILOVER,
        forced=bool(problems),
    )
    event = Event(
        EventKind.FAILOVER_STARTED,
        to,
        reason,
        {
            "old_primary": old or None,
            "old_timeline": flight.old_timeline,
            "operation": str(Operation.MANUAL_FAILOVER),
            "requested_by": "operator",
            "forced": bool(problems),
            "overrides": problems,
            "candidates": [c.as_dict() for c in ranking],
        },
        Severity.CRITICAL,
    )
    new_state = replace(state, in_flight=flight, last_failover_at=at, failback_since=None)
    promote = Promote(to, reason, old, ranking, sync_standbys=sync_standbys,
                      slots=promote_slots(a.settings, a.specs, to))
    first = fence_first(promote, old, a.view, a.settings) if old in a.specs else promote
    lost = logical_loss_event(a.settings, a.view.get(to), to, old, "manual failover")
    return Decision(new_state, (first,), (event,) if lost is None else (event, lost))


def manual_failover(a: Asked, request: ManualFailover) -> Decision:
    """Promote ``request.to`` now, unless that would make two primaries; the candidate
    checks refuse it too unless ``request.force``."""
    refused = _hard_refusal(a, request)
    if refused is not None:
        return refused
    to = request.to
    ranking = rank_candidates(a.state, a.view, a.specs, a.settings)
    info = next((c for c in ranking if c.node == to), None)
    problems = promotion_problems(a, to, info)
    partition = _partition_problem(a)
    if partition is not None:
        problems.append(partition)
    sync_standbys: str | None = None
    if quorum_mode(a.settings):
        quorum, sync_standbys = _quorum_problems(a, to)
        problems.extend(quorum)
    if problems and not request.force:
        return refuse(
            a.state, request, to, RefusalCode.NOT_ELIGIBLE,
            "; ".join(problems) + f"; use --force to promote {to} anyway",
        )
    return _start(a, request, ranking, problems, sync_standbys)
