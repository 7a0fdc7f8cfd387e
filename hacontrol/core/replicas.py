"""Replicas: repointing to the primary, rejoining fenced nodes, and their outcomes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hacontrol.core.actions import ActionOutcome, Decision, Rejoin, Repoint
from hacontrol.core.ask import Asked, refuse, unknown_node
from hacontrol.core.draft import Round
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.model import Observation, WalReceiver
from hacontrol.core.requests import NodeRejoined, RejoinRequest
from hacontrol.core.results import OutcomeStatus, RefusalCode
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slot_names import SLOT_PREFIX, repoint_slot, slot_sync_for
from hacontrol.core.state import (
    REJOIN_ATTEMPTS,
    REJOIN_BACKOFF_S,
    REJOIN_MAX_WAIT_S,
    ControllerState,
    NodeHealth,
)
from hacontrol.core.topology import (
    is_primary,
    is_replica,
    node_endpoints,
    reachable,
    receiver_matches,
    streaming,
    streaming_problem,
    writable,
)

__all__ = [
    "consider_rejoin",
    "node_rejoined",
    "rejoin_outcome",
    "rejoin_request",
    "repoint",
]


# --------------------------------------------------------------------------- repoint


def _misrouted_now(receiver: WalReceiver | None) -> str:
    if receiver is None:
        return "has no WAL receiver"
    if receiver.status != "streaming":
        return f"WAL receiver is {receiver.status}"
    return f"streams from {receiver.sender_host}:{receiver.sender_port}"


def _slot_drift(r: Round, name: str, obs: Observation) -> str | None:
    """Why a replica streaming from the primary is not set up as the slot rules want
    (None: it is, or its settings were not read)."""
    wanted = repoint_slot(r.settings, name) or ""
    seen = obs.primary_slot_name
    if seen is not None and seen != wanted and (wanted or seen.startswith(SLOT_PREFIX)):
        return f"{name} streams through slot {seen or '(none)'}, not {wanted or '(none)'}"
    if slot_sync_for(r.settings, obs) is not None and obs.slot_sync is False:
        return f"{name} does not sync the primary's failover slots"
    return None


def _repoint_slot_drift(r: Round, name: str, primary: str, obs: Observation) -> None:
    """A streaming replica whose slot settings drifted: set them (a reload), at most
    once per repoint_retry."""
    health = r.health(name)
    why = _slot_drift(r, name, obs)
    due = _repoint_due(r, health)
    if why is not None and due and r.act(_repoint(r, name, primary, why)):
        health = replace(health, last_repoint_at=r.at)
    r.set_health(name, replace(health, misrouted_since=None))


def _repoint_due(r: Round, health: NodeHealth) -> bool:
    """At most one repoint of a replica per repoint_retry."""
    return health.last_repoint_at is None or (
        r.at - health.last_repoint_at >= r.settings.repoint_retry_s
    )


def _repoint(r: Round, name: str, primary: str, reason: str) -> Repoint:
    return Repoint(name, primary, reason, slot=repoint_slot(r.settings, name),
                   slot_sync=slot_sync_for(r.settings, r.obs(name)))


def _repoint_one(r: Round, name: str, primary: str, obs: Observation) -> None:
    """A replica not streaming from the primary: repoint it once that has lasted."""
    health = r.health(name)
    receiver = obs.wal_receiver
    if (
        receiver is not None
        and streaming(receiver)
        and receiver_matches(receiver, node_endpoints(r.specs[primary]))
    ):
        _repoint_slot_drift(r, name, primary, obs)
        return
    since = health.misrouted_since if health.misrouted_since is not None else obs.at
    health = replace(health, misrouted_since=since)
    due = _repoint_due(r, health)
    if r.at - since >= r.settings.detection_window_s and due and r.act(
        _repoint(
            r,
            name,
            primary,
            f"{name} {_misrouted_now(receiver)} for {r.at - since:.1f} s, not from primary"
            f" {primary}",
        )
    ):
        health = replace(health, last_repoint_at=r.at)
    r.set_health(name, health)


def repoint(r: Round) -> None:
    """Every fit replica streams from the settled primary; repoint one that does not."""
    primary = r.primary
    ready = primary is not None and r.in_flight is None and is_primary(r.obs(primary))
    for name in r.names:
        obs = r.obs(name)
        if (
            not ready
            or primary is None
            or name == primary
            or name in r.draft.fenced
            or name in r.old.maintenance
            or not is_replica(obs)
            or obs is None
        ):
            health = r.health(name)
            if health.misrouted_since is not None:
                r.set_health(name, replace(health, misrouted_since=None))
            continue
        _repoint_one(r, name, primary, obs)


# --------------------------------------------------------------------------- automatic rejoin


def _rejoin_settled(r: Round) -> str | None:
    """The primary to rejoin fenced nodes to, when automatic rejoin may run now."""
    primary = r.primary
    if (
        not r.settings.rejoin_automatic
        or r.old.paused
        or primary is None
        or primary in r.draft.fenced
        or r.in_flight is not None
        or r.old.in_flight is not None
        or r.primary_changed
        or not is_primary(r.obs(primary))
    ):
        return None
    return primary


def _rejoin_due(r: Round, name: str, primary: str) -> bool:
    retry_at = r.health(name).rejoin_retry_at
    return not (
        name == primary
        or name not in r.settings.rejoin_nodes
        or name in r.old.maintenance
        or name in r.draft.rejoining
        or name in r.draft.rejoin_tried
        or (retry_at is not None and r.at < retry_at)
    )


def consider_rejoin(r: Round) -> None:
    """Automatic rejoin: a fenced node whose driver can rejoin it is brought back as
    a replica of the primary (a failed attempt again after a back-off, at most
    REJOIN_ATTEMPTS in a row), when the primary is settled (no
    change of primary in flight or just made) and reachable. Not while paused,
    nor for a node in maintenance (an operator is working on it)."""
    primary = _rejoin_settled(r)
    if primary is None:
        return
    for name in sorted(r.draft.fenced):
        if not _rejoin_due(r, name, primary):
            continue
        reason = (
            f"{name} is fenced (needs rejoin) and its driver can rejoin it: rejoining it"
            f" as a replica of {primary} automatically"
        )
        attempt = r.health(name).rejoin_failures + 1
        if attempt > 1:
            reason += f" (attempt {attempt} of {REJOIN_ATTEMPTS})"
        if r.act(Rejoin(name, primary, reason, automatic=True)):
            r.draft = replace(r.draft, rejoining=r.draft.rejoining | {name})
            r.emit(EventKind.REJOIN_SCHEDULED, name, reason, Severity.WARNING, primary=primary,
                   automatic=True, attempt=attempt)


# --------------------------------------------------------------------------- requests


def node_rejoined(a: Asked, request: NodeRejoined) -> Decision:
    """``node`` was rejoined as a replica: lift its fence once it runs as one."""
    state, node = a.state, request.node
    if node not in a.specs:
        return unknown_node(state, request, node, a.specs)
    obs = a.view.get(node)
    if node != state.primary and writable(obs):
        return refuse(
            state, request, node, RefusalCode.NOT_FENCED_WRITABLE,
            f"{node} still accepts writes as a primary: rejoin it as a replica of"
            f" {state.primary or 'the primary'} first",
        )
    if node in state.fenced and not is_replica(obs):
        # Read-only is no proof: a fenced primary's sessions can turn read-write.
        seen = "unreachable" if not reachable(obs) else f"seen as {obs.role if obs else '?'}"
        return refuse(
            state, request, node, RefusalCode.NOT_A_REPLICA,
            f"{node} is {seen}, not a replica: a fenced node is taken back only once it"
            f" runs as a replica of {state.primary or 'the primary'}",
        )
    changed = node in state.fenced
    message = f"{node} rejoined: no longer fenced" if changed else f"{node} was not fenced"
    event = Event(EventKind.NODE_REJOINED, node, message, {"changed": changed})
    fenced = state.fenced - {node}
    new_state = replace(state, fenced=fenced, rejoin_tried=state.rejoin_tried & fenced)
    return Decision(new_state, (), (event,))


def _rejoined_by_hand(a: Asked, node: str) -> Decision:
    by_hand = node_rejoined(a, NodeRejoined(node))
    if by_hand.refused is not None:
        return by_hand
    note = f" (no driver that can rejoin {node}: taken as rejoined by hand)"
    events = tuple(replace(e, message=e.message + note) for e in by_hand.events)
    return replace(by_hand, events=events)


def _rejoin_refusal(a: Asked, request: RejoinRequest) -> Decision | None:
    state, node, primary = a.state, request.node, a.state.primary
    if node == primary:
        return refuse(
            state, request, node, RefusalCode.IS_PRIMARY,
            f"{node} is the primary; a rejoin makes a node a replica of the primary (switch"
            " over first if it must become one)",
        )
    if node in state.rejoining:
        return refuse(
            state, request, node, RefusalCode.REJOINING,
            f"a rejoin of {node} is already running; its outcome is journaled (rejoin_finished)",
        )
    if state.in_flight is not None:
        flight = state.in_flight
        return refuse(
            state, request, node, RefusalCode.IN_FLIGHT,
            f"a {flight.kind} to {flight.candidate} is in flight; rejoin once it has finished",
        )
    if primary is None or not is_primary(a.view.get(primary)):
        return refuse(
            state, request, node, RefusalCode.NO_PRIMARY,
            f"no reachable primary to rejoin {node} to"
            + (f" ({primary} is not seen as a primary)" if primary else "")
            + "; fail over first (failover --to NODE)",
        )
    return None


def rejoin_request(a: Asked, request: RejoinRequest) -> Decision:
    """An operator's rejoin: the procedure when the node's driver can run it (allowed
    while paused: the operator asked), else a report that it was rejoined by hand."""
    state, node = a.state, request.node
    if node not in a.specs:
        return unknown_node(state, request, node, a.specs)
    if node not in a.settings.rejoin_nodes:
        return _rejoined_by_hand(a, node)
    refused = _rejoin_refusal(a, request)
    if refused is not None:
        return refused
    primary = state.primary
    assert primary is not None
    streams = streaming_problem(node, primary, a.view, a.specs, a.settings) is None
    if node not in state.fenced and streams:
        event = Event(
            EventKind.REJOIN_NOT_NEEDED, node,
            f"{node} is not fenced and streams from {primary}: nothing to rejoin",
            {"primary": primary},
        )
        return Decision(state, (), (event,))
    reason = (
        f"operator requested a rejoin of {node} as a replica of {primary}"
        + (" (fenced: needs rejoin)" if node in state.fenced else "")
    )
    event = Event(
        EventKind.REJOIN_SCHEDULED, node, reason,
        {"primary": primary, "automatic": False, "requested_by": "operator"},
        Severity.WARNING,
    )
    new_state = replace(state, rejoining=state.rejoining | {node})
    return Decision(new_state, (Rejoin(node, primary, reason),), (event,))


# --------------------------------------------------------------------------- the outcome


def _failure_text(state: ControllerState, node: str, detail: str) -> str:
    # The shell's rejoin procedure already names the node in its own words.
    text = detail
    if not text.startswith(f"rejoin of {node}"):
        text = f"rejoin of {node} failed: {text}"
    if "fenced" not in text:
        text += "; it stays fenced" if node in state.fenced else "; it is not in service"
    return text


def _rejoin_failed(
    state: ControllerState, action: Rejoin, text: str, at: float, details: dict[str, Any]
) -> Decision:
    node = action.node
    rejoining = state.rejoining - {node}
    health: NodeHealth = state.health(node)
    failures = health.rejoin_failures + 1
    if action.automatic and node in state.fenced and failures < REJOIN_ATTEMPTS:
        wait = min(REJOIN_BACKOFF_S * 2 ** (failures - 1), REJOIN_MAX_WAIT_S)
        nodes = {**state.nodes, node: replace(health, rejoin_failures=failures,
                                              rejoin_retry_at=at + wait)}
        event = Event(
            EventKind.REJOIN_FAILED, node,
            f"{text}; attempt {failures} of {REJOIN_ATTEMPTS}, trying again in {wait:g} s",
            {**details, "attempt": failures, "retry_in_s": wait},
            Severity.WARNING,
        )
        return Decision(replace(state, rejoining=rejoining, nodes=nodes), (), (event,))
    tried = state.rejoin_tried | ({node} if action.automatic and node in state.fenced else set())
    if action.automatic:
        text += f" (automatic attempt {failures} of {REJOIN_ATTEMPTS}: no more)"
    event = Event(
        EventKind.REJOIN_FAILED, node,
        f"{text} — fix the cause, then 'hacontrol rejoin {node}'",
        {**details, "attempt": failures},
        Severity.CRITICAL,
    )
    nodes = {**state.nodes, node: replace(health, rejoin_failures=failures, rejoin_retry_at=None)}
    return Decision(replace(state, rejoining=rejoining, rejoin_tried=tried, nodes=nodes), (),
                    (event,))


def rejoin_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """SUCCEEDED: the node streams from the primary, its fence is lifted. Otherwise it
    stays fenced (the procedure left it stopped); an automatic rejoin is tried again
    after a back-off (a killed postmaster may not be gone yet), at most
    REJOIN_ATTEMPTS times in a row, then it waits for an operator."""
    action = outcome.action
    assert isinstance(action, Rejoin)
    node = action.node
    details: dict[str, Any] = {
        "status": str(outcome.status),
        "detail": outcome.detail,
        "primary": action.primary,
        "automatic": action.automatic,
    }
    if outcome.status is not OutcomeStatus.SUCCEEDED:
        return _rejoin_failed(state, action, _failure_text(state, node, outcome.detail), at,
                              details)
    fenced = state.fenced - {node}
    event = Event(
        EventKind.NODE_REJOINED, node,
        f"{node} rejoined as a replica of {action.primary}; no longer fenced",
        {**details, "changed": node in state.fenced},
    )
    new_state = replace(
        state, rejoining=state.rejoining - {node}, fenced=fenced,
        rejoin_tried=state.rejoin_tried & fenced,
    )
    return Decision(new_state, (), (event,))
