"""Planned switchovers: the operator's request, failback, the plan and the outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hacontrol.core.actions import (
    Action,
    ActionOutcome,
    CandidateInfo,
    Decision,
    RunHook,
    Switchover,
)
from hacontrol.core.ask import Asked, refuse, unknown_node
from hacontrol.core.candidates import preferred_node, rank_candidates
from hacontrol.core.draft import Round
from hacontrol.core.events import ROLE_CHANGE_HOOK, Event, EventKind, Severity, role_change_env
from hacontrol.core.fitness import size
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.requests import SwitchoverRequest
from hacontrol.core.results import OutcomeStatus, Refusal, RefusalCode
from hacontrol.core.settings import DecisionSettings, FailoverMode
from hacontrol.core.slots import logical_loss_event
from hacontrol.core.state import ControllerState, FailoverInFlight, NodeHealth, Operation
from hacontrol.core.topology import is_primary, reachable, streaming_problem, writable

__all__ = [
    "SwitchoverPlan",
    "consider_failback",
    "plan_switchover",
    "start_switchover",
    "switchover_outcome",
    "switchover_request",
]


@dataclass(frozen=True, slots=True)
class SwitchoverPlan:
    """A switchover that may start: from whom, to whom, and the figures behind it."""

    primary: str
    primary_timeline: int | None
    target: CandidateInfo
    ranking: tuple[CandidateInfo, ...]

    def flight(
        self, at: float, last_failover_at: float | None, kind: Operation
    ) -> FailoverInFlight:
        """The switchover in flight once started at ``at``."""
        return FailoverInFlight(
            candidate=self.target.node,
            old_primary=self.primary,
            started_at=at,
            old_timeline=self.primary_timeline,
            previous_failover_at=last_failover_at,
            kind=kind,
        )


def _primary_problem(state: ControllerState, view: ClusterView, primary: str) -> str:
    """Why the primary cannot hand over ("": it can)."""
    obs = view.get(primary)
    health = state.health(primary)
    if not reachable(obs):
        return "unreachable"
    if not is_primary(obs):
        return "not a primary any more"
    if not writable(obs):
        return "read-only"
    if health.consecutive_failures or health.down:
        return "failing probes"
    return ""


def _target_problem(
    info: CandidateInfo, primary: str, view: ClusterView, specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
) -> str:
    """Why the requested target cannot take over ("": it can)."""
    to = info.node
    lag = info.lag_bytes
    if lag is not None and info.excluded and lag > settings.max_lag_bytes:
        return (
            f"{to} is {size(lag)} behind (max {size(settings.max_lag_bytes)});"
            " wait until it catches up"
        )
    if info.excluded:
        return (
            f"{to} cannot take over: {info.excluded}; a switchover needs a healthy"
            f" replica streaming from {primary}, priority > 0, not in maintenance or"
            " fenced, within max lag"
        )
    problem = streaming_problem(to, primary, view, specs, settings)
    return f"{problem}; wait until it streams from {primary}" if problem else ""


def plan_switchover(
    state: ControllerState,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    to: str | None,
) -> SwitchoverPlan | Refusal:
    """Check a planned switchover to ``to`` (None: the best candidate). In flight and
    paused are the caller's checks."""
    primary = state.primary
    if primary is None or primary not in specs:
        return Refusal(
            RefusalCode.NO_PRIMARY,
            "no known primary to switch over from; if the primary is down use a manual"
            " failover (failover --to NODE)",
        )
    problem = _primary_problem(state, view, primary)
    if problem:
        return Refusal(
            RefusalCode.NO_PRIMARY,
            f"primary {primary} is {problem}: a switchover needs a healthy writable primary;"
            " if it is down use a manual failover (failover --to NODE)",
        )
    if to == primary:
        return Refusal(RefusalCode.NOT_ELIGIBLE, f"{to} is already the primary")
    if to is not None and to not in specs:
        return Refusal(
            RefusalCode.UNKNOWN_NODE, f"{to} is not a configured node ({', '.join(specs)})"
        )
    ranking = rank_candidates(state, view, specs, settings, old_primary=primary)
    obs = view.get(primary)
    timeline = obs.timeline if obs is not None else None
    if to is not None:
        info = next(c for c in ranking if c.node == to)
        why = _target_problem(info, primary, view, specs, settings)
        if why:
            return Refusal(RefusalCode.NOT_ELIGIBLE, why)
        return SwitchoverPlan(primary, timeline, info, ranking)
    for info in ranking:
        if info.eligible and streaming_problem(info.node, primary, view, specs, settings) is None:
            return SwitchoverPlan(primary, timeline, info, ranking)
    figures = "; ".join(
        c.describe()
        if not c.eligible
        else f"{c.describe()} ({streaming_problem(c.node, primary, view, specs, settings)})"
        for c in ranking
    )
    return Refusal(RefusalCode.NO_CANDIDATE, f"no replica can take over from {primary}: {figures}")


# --------------------------------------------------------------------------- failback


def _failback_plan(r: Round) -> tuple[str, str, SwitchoverPlan] | None:
    """(preferred, primary, plan) when a failback to the preferred node is possible."""
    settings = r.settings
    preferred = preferred_node(r.specs.values())
    primary = r.primary
    if (
        not settings.failback
        or settings.mode is not FailoverMode.AUTOMATIC
        or preferred is None
        or primary is None
        or preferred == primary
        or r.specs[primary].priority >= r.specs[preferred].priority
    ):
        return None
    plan = plan_switchover(r.state(), r.view, r.specs, settings, preferred)
    return None if isinstance(plan, Refusal) else (preferred, primary, plan)


def _failback_held(r: Round, waited: float) -> bool:
    """True while the failback must still wait."""
    last = r.draft.last_failover_at
    return (
        waited < r.settings.failback_delay_s
        or r.old.paused
        or r.old.in_flight is not None
        or r.in_flight is not None
        or r.primary_changed
        # A node being rejoined would be repointed by the switchover mid-procedure.
        or bool(r.draft.rejoining)
        or (last is not None and r.at - last < r.settings.cooldown_s)
    )


def consider_failback(r: Round) -> None:
    """Automatic mode with failback on: switch back to the preferred node once it has
    been ready (a healthy streaming replica within lag) for ``failback_delay_s``."""
    found = _failback_plan(r)
    if found is None:
        r.draft = replace(r.draft, failback_since=None)
        return
    preferred, primary, plan = found
    settings = r.settings
    since = r.draft.failback_since if r.draft.failback_since is not None else r.at
    r.draft = replace(r.draft, failback_since=since)
    waited = r.at - since
    priority = r.specs[preferred].priority
    r.condition(
        f"failback_pending:{preferred}",
        EventKind.FAILBACK_PENDING,
        preferred,
        f"{preferred} (priority {priority}) is ready to take over from"
        f" {primary} again; failback after {settings.failback_delay_s:g} s of readiness",
        delay_s=settings.failback_delay_s,
    )
    if _failback_held(r, waited):
        return
    reason = (
        f"failback: {preferred} is the preferred node (priority"
        f" {priority} > {r.specs[primary].priority} of {primary})"
        f" and has been a healthy streaming replica within lag for {waited:.1f} s"
        f" (failback_delay_s {settings.failback_delay_s:g})"
    )
    start_switchover(r, plan, reason, Operation.FAILBACK)
    r.draft = replace(r.draft, failback_since=None)


def start_switchover(r: Round, plan: SwitchoverPlan, reason: str, kind: Operation) -> None:
    """Send the Switchover and put it in flight."""
    r.actions.append(Switchover(plan.primary, plan.target.node, reason, plan.ranking))
    r.set_flight(plan.flight(r.at, r.draft.last_failover_at, kind))
    lost = logical_loss_event(r.settings, r.obs(plan.target.node), plan.target.node,
                              plan.primary, f"{kind} of the primary")
    if lost is not None:
        r.emit(lost.kind, lost.node, lost.message, lost.severity, **lost.details)
    r.emit(
        EventKind.SWITCHOVER_STARTED,
        plan.target.node,
        reason,
        Severity.WARNING,
        old_primary=plan.primary,
        old_timeline=plan.primary_timeline,
        operation=str(kind),
        candidates=[c.as_dict() for c in plan.ranking],
    )


# --------------------------------------------------------------------------- the request


def _switchover_refusal(a: Asked, request: SwitchoverRequest) -> Decision | None:
    state = a.state
    if request.to is not None and request.to not in a.specs:
        return unknown_node(state, request, request.to, a.specs)
    if state.in_flight is not None:
        flight = state.in_flight
        return refuse(
            state, request, request.to, RefusalCode.IN_FLIGHT,
            f"a {flight.kind} to {flight.candidate} is in flight; wait for it to finish",
        )
    if state.paused:
        return refuse(
            state, request, request.to, RefusalCode.PAUSED,
            "the controller is paused; resume it first (a manual failover works while paused)",
        )
    if state.rejoining:
        return refuse(
            state, request, request.to, RefusalCode.REJOINING,
            f"a rejoin of {', '.join(sorted(state.rejoining))} is running; wait for it to"
            " finish (hacontrol status)",
        )
    return None


def switchover_request(a: Asked, request: SwitchoverRequest) -> Decision:
    """An operator's planned switchover to ``request.to`` (None: the best candidate)."""
    refused = _switchover_refusal(a, request)
    if refused is not None:
        return refused
    state = a.state
    plan = plan_switchover(state, a.view, a.specs, a.settings, request.to)
    if isinstance(plan, Refusal):
        return refuse(state, request, request.to, plan.code, plan.message)
    target = plan.target
    chosen = "requested" if request.to else "best candidate"
    reason = (
        f"operator requested a switchover from {plan.primary} to {target.node} ({chosen}:"
        f" {target.describe()}); others: "
        + ("; ".join(c.describe() for c in plan.ranking if c is not target) or "none")
    )
    action = Switchover(plan.primary, target.node, reason, plan.ranking)
    flight = plan.flight(a.view.at, state.last_failover_at, Operation.SWITCHOVER)
    event = Event(
        EventKind.SWITCHOVER_STARTED,
        target.node,
        reason,
        {
            "old_primary": plan.primary,
            "old_timeline": plan.primary_timeline,
            "operation": str(Operation.SWITCHOVER),
            "requested_by": "operator",
            "candidates": [c.as_dict() for c in plan.ranking],
        },
        Severity.WARNING,
    )
    new_state = replace(state, in_flight=flight, failback_since=None)
    lost = logical_loss_event(a.settings, a.view.get(target.node), target.node, plan.primary,
                              "switchover")
    return Decision(new_state, (action,), (event,) if lost is None else (event, lost))


# --------------------------------------------------------------------------- the outcome


def _switchover_aborted(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings,
    details: dict[str, Any],
) -> Decision:
    action = outcome.action
    assert isinstance(action, Switchover)
    target, old = action.target, action.old_primary
    nodes = dict(state.nodes)
    backoff = at + settings.candidate_backoff_s
    nodes[target] = replace(nodes.get(target, NodeHealth()), backoff_until=backoff)
    event = Event(
        EventKind.SWITCHOVER_ABORTED,
        old,
        f"switchover to {target} aborted and rolled back: {old} stays the primary"
        f" ({outcome.detail}); {target} is backed off",
        {**details, "target": target, "backoff_until": backoff},
        Severity.WARNING,
    )
    new_state = replace(state, in_flight=None, nodes=nodes, failback_since=None)
    return Decision(new_state, (), (event,))


def _switchover_completed(
    state: ControllerState, outcome: ActionOutcome, at: float, flight: FailoverInFlight,
    details: dict[str, Any],
) -> Decision:
    action = outcome.action
    assert isinstance(action, Switchover)
    target, old = action.target, action.old_primary
    actions: list[Action] = []
    if state.primary != target:
        # Not seen promoted yet: the role-change hook was not sent by decide either.
        env = role_change_env(target, old, None, str(flight.kind))
        actions.append(RunHook(ROLE_CHANGE_HOOK, target, f"{flight.kind}: {old} -> {target}", env))
        state = replace(state, primary=target, primary_timeline=None, primary_lsn=None)
    rejoined = outcome.rejoined & set(state.nodes)
    fenced = (state.fenced - rejoined) - {target}
    failed_late = outcome.status is not OutcomeStatus.SUCCEEDED
    message = f"{target} is the primary after a {flight.kind} from {old}"
    if failed_late:
        message += f" (the procedure reported {outcome.status} after the promote: {outcome.detail})"
    events = [
        Event(
            EventKind.SWITCHOVER_COMPLETED,
            target,
            message,
            {
                **details,
                "old_primary": old,
                "operation": str(flight.kind),
                "rejoined": sorted(rejoined),
                "duration_s": round(at - flight.started_at, 3),
            },
            Severity.WARNING if failed_late else Severity.INFO,
        )
    ]
    if old not in rejoined and old != target and old in state.nodes:
        fenced |= {old}
        events.append(
            Event(
                EventKind.NODE_FENCED,
                old,
                f"{old} fenced — needs rejoin: the {flight.kind} did not rejoin it as a replica",
                {"reason": "not rejoined by the switchover"},
                Severity.WARNING,
            )
        )
    for node in sorted(rejoined & state.fenced):
        events.append(
            Event(EventKind.NODE_REJOINED, node, f"{node} rejoined by the {flight.kind}", {})
        )
    new_state = replace(state, in_flight=None, fenced=fenced, failback_since=None)
    return Decision(new_state, tuple(actions), tuple(events))


def switchover_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """SUCCEEDED: the target is the primary; the old primary is fenced unless the shell
    reports it in ``outcome.rejoined``. FAILED (rolled back): the old primary stays.
    UNCERTAIN: stays in flight until seen or overdue. A FAILED report after the target
    was already seen promoted counts as completed (what is seen wins)."""
    action = outcome.action
    assert isinstance(action, Switchover)
    flight = state.in_flight
    details: dict[str, Any] = {"status": str(outcome.status), "detail": outcome.detail}
    target = action.target
    if flight is None or not flight.planned or flight.candidate != target:
        event = Event(
            EventKind.SWITCHOVER_OUTCOME_IGNORED,
            target,
            f"outcome of a switchover to {target} that is not in flight: {outcome.detail}",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.UNCERTAIN and state.primary != target:
        event = Event(
            EventKind.SWITCHOVER_UNCERTAIN,
            target,
            f"switchover to {target} may not have finished: {outcome.detail}; following"
            " what is observed",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.FAILED and state.primary != target:
        return _switchover_aborted(state, outcome, at, settings, details)
    return _switchover_completed(state, outcome, at, flight, details)
