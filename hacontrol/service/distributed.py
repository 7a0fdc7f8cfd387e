"""What the controller does differently with ``[dcs]``: a standby follows the leader's
published facts; a new leader takes them up as a restarted controller takes up its
journal; every batch of actions is preceded by a fenced commit of the facts and
the intent (docs/ha.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from hacontrol.core.actions import Action, ActionOutcome
from hacontrol.core.model import NodeSpec
from hacontrol.core.recovery import SNAPSHOT_KIND, from_snapshot, restart_state, to_snapshot
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.state import ControllerState
from hacontrol.io.journal import Journal
from hacontrol.io.terms import end_older_terms
from hacontrol.service.api import SubmitResult
from hacontrol.service.leader import LeaderLoop

__all__ = [
    "commit_facts",
    "controllers_json",
    "end_older_terms_everywhere",
    "followed_state",
    "intent_of",
    "not_carried_out",
    "standby_refusal",
    "take_up_term",
]


def followed_state(
    leader: LeaderLoop,
    current: ControllerState,
    specs: Sequence[NodeSpec],
    *,
    pinned: int | None,
    clock: Callable[[], float],
    wall: Callable[[], float] = time.time,
) -> ControllerState:
    """A standby's state: the leader's published facts, with this controller's own
    probe history (it is a vantage point of its own)."""
    published = leader.published_state()
    if published is None:
        return current
    state = restart_state(from_snapshot(published), specs, pinned=pinned, now=clock(),
                          wall_now=wall())
    return replace(state, nodes=current.nodes)


def take_up_term(
    leader: LeaderLoop,
    journal: Journal,
    current: ControllerState,
    specs: Sequence[NodeSpec],
    *,
    pinned: int | None,
    clock: Callable[[], float],
    wall: Callable[[], float] = time.time,
) -> ControllerState:
    """The state a new leader starts its term from: what the last leader committed to
    etcd (or, for the scope's first term, this controller's own journal), settled
    as after a restart: an unfinished failover is driven again to the same
    candidate, never to another beside it. The own journal is brought to the same
    facts (a snapshot record), so that what it commits next continues them."""
    leader.new_term = None
    published = leader.published_state()
    if published is None:
        recovered = journal.recover()
    else:
        recovered = from_snapshot(published)
        journal.append(SNAPSHOT_KIND, snapshot=to_snapshot(recovered),
                       message=f"facts taken over from etcd in epoch {leader.state.epoch}")
    state = restart_state(recovered, specs, pinned=pinned, now=clock(), wall_now=wall())
    journal.append("term_taken_up", epoch=leader.state.epoch, primary=recovered.primary,
                   paused=recovered.paused, fenced=sorted(recovered.fenced),
                   unresolved_failover=recovered.unresolved_failover)
    return replace(state, nodes=current.nodes)


def intent_of(actions: Sequence[Action]) -> dict[str, Any]:
    """The actions about to be carried out, as the intent record holds them."""
    return {
        "actions": [
            {"action": type(a).__name__, "node": a.node, "reason": a.reason} for a in actions
        ]
    }


async def commit_facts(
    leader: LeaderLoop, journal: Journal, actions: Sequence[Action] = ()
) -> bool:
    """Commit the journal's facts (and the intent of ``actions``) fenced by the term.
    Without actions, only when the facts changed since the last commit."""
    snapshot = to_snapshot(journal.recover())
    published = leader.published_state()
    # Most records (a failed probe, an action's start) change no fact: a round on the
    # way to a failover then writes nothing, and etcd stays off that path.
    if not actions and published is not None and _facts(published) == _facts(snapshot):
        return True
    return await leader.commit(snapshot, intent_of(actions) if actions else None)


def _facts(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    # As the published JSON reads back (tuples become lists), without the count of
    # records it stands for.
    loaded: dict[str, Any] = json.loads(json.dumps(dict(snapshot), default=str))
    loaded.pop("records", None)
    return loaded


def standby_refusal(leader: LeaderLoop | None) -> SubmitResult | None:
    """409 for a command sent to a standby controller (None: this one leads, or
    runs alone). Commands are not forwarded: the operator sees where they go."""
    if leader is None or leader.leading():
        return None
    who, api = leader.leader_name(), leader.leader_api()
    if who is None:
        message = (f"this controller ({leader.name}) is a standby and no controller leads "
                   f"now (etcd: {leader.detail}); try again once one does")
    else:
        where = f" at http://{api}" if api else ""
        message = (f"this controller ({leader.name}) is a standby; send commands to the "
                   f"leader {who}{where}")
    return SubmitResult(False, 409, message, {"leader": who, "leader_api": api,
                                                "code": "not_leader"})


def controllers_json(leader: LeaderLoop, wall: Callable[[], float] = time.time) -> dict[str, Any]:
    """The controllers of the scope, for ``GET /status``."""
    now = wall()
    members = []
    for name, member in sorted(leader.members().items()):
        seen = member.get("wall")
        members.append({
            "name": name,
            "role": "leader" if name == leader.leader_name() else "standby",
            "epoch": member.get("epoch"),
            "api": member.get("api"),
            "host": member.get("host"),
            "last_seen_s": round(now - float(seen), 1) if isinstance(seen, int | float) else None,
        })
    return {
        "name": leader.name,
        "role": leader.state.role.value if leader.leading() else "standby",
        "epoch": leader.state.epoch if leader.leading() else None,
        "leader": leader.leader_name(),
        "leader_api": leader.leader_api(),
        "dcs_up": leader.state.dcs_up,
        "dcs": leader.detail,
        "members": members,
    }


async def end_older_terms_everywhere(
    specs: Sequence[NodeSpec], epoch: int, journal: Journal, *, timeout: float
) -> None:
    """On every node at once, end the sessions older terms left open; journaled."""
    results = await asyncio.gather(*(end_older_terms(s, epoch, timeout=timeout) for s in specs))
    journal.append("older_terms_ended", epoch=epoch,
                   nodes={s.name: detail for s, (_, detail) in zip(specs, results, strict=True)})


def not_carried_out(action: Action, leader: LeaderLoop) -> ActionOutcome:
    """The outcome of an action a controller that is not (or no longer) the leader
    holds back: nothing reached a node."""
    who = leader.leader_name()
    detail = (
        "not carried out: this controller is not the leader"
        + (f" ({who} is)" if who and who != leader.name else "")
        + f"; etcd: {leader.detail}"
    )
    return ActionOutcome(action, OutcomeStatus.FAILED, detail, attempted=False)
