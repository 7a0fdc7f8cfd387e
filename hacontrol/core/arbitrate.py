"""Exactly one writable primary: adopt it, let a higher timeline outrank, fence the rest."""

from __future__ import annotations

from hacontrol.core.actions import Fence
from hacontrol.core.detect import set_primary
from hacontrol.core.draft import Round
from hacontrol.core.events import EventKind, Severity
from hacontrol.core.inflight import abandon, role_change_hook
from hacontrol.core.model import Observation, format_lsn
from hacontrol.core.sync import quorum_mode
from hacontrol.core.topology import is_primary, is_replica, writable

__all__ = ["adopt", "adoption_problem", "arbitrate", "quorum_adoption_problem"]


def _timeline(r: Round, name: str) -> int:
    obs = r.obs(name)
    return obs.timeline if obs is not None and obs.timeline is not None else -1


def _split_brain(r: Round, winners: list[str], top: int, above: str | None) -> None:
    tail = (
        f" above {above}'s: fenced, an operator must decide"
        if above is not None
        else ": all fenced, an operator must decide"
    )
    r.condition(
        "split_brain:" + ",".join(winners),
        EventKind.SPLIT_BRAIN,
        None,
        f"writable primaries {', '.join(winners)} on the same timeline {top}{tail}",
        Severity.CRITICAL,
        nodes=winners,
        timeline=top,
    )


def _adopt_first(r: Round, contenders: list[str]) -> None:
    """No primary known: the one writable primary with the highest timeline."""
    if not contenders:
        return
    top = max(_timeline(r, n) for n in contenders)
    winners = [n for n in contenders if _timeline(r, n) == top]
    if len(winners) == 1:
        adopt(r, winners[0], None, f"the only writable primary with the highest timeline ({top})")
    else:
        _split_brain(r, winners, top, None)


def _stray(r: Round, stray: str, top: int, problem: str) -> None:
    primary = r.primary
    r.mark_fenced(
        stray, f"a stray promotion (timeline {top}) not adopted over {primary}: {problem}"
    )
    r.emit(
        EventKind.STRAY_PRIMARY,
        stray,
        f"{stray} became writable on timeline {top} without this controller,"
        f" but {problem}: it is fenced and {primary} stays the primary;"
        f" rejoin {stray} ('hacontrol rejoin {stray}') to bring it back as a"
        " replica",
        Severity.CRITICAL,
        timeline=top,
        primary=primary,
        reason=problem,
    )


def _outrank(r: Round, primary: str, contenders: list[str]) -> None:
    """A primary known: a writable node on a higher timeline replaces it, if allowed."""
    obs = r.obs(primary)
    own = (
        obs.timeline
        if is_primary(obs) and obs is not None and obs.timeline is not None
        else r.draft.primary_timeline
    )
    outranking = [
        n
        for n in contenders
        if n != primary and _timeline(r, n) >= 0 and (own is None or _timeline(r, n) > own)
    ]
    if not outranking:
        return
    top = max(_timeline(r, n) for n in outranking)
    winners = [n for n in outranking if _timeline(r, n) == top]
    if len(winners) != 1:
        _split_brain(r, winners, top, primary)
        return
    winner = winners[0]
    problem = adoption_problem(r, winner)
    if problem is not None:
        _stray(r, winner, top, problem)
        return
    adopt(r, winner, primary, f"writable on a higher timeline ({top} > {own})")
    r.mark_fenced(primary, f"{winner} is primary on a higher timeline")
    if r.in_flight is not None:
        abandon(r, r.in_flight, f"{winner} became primary instead")


def arbitrate(r: Round) -> None:
    """Keep exactly one writable primary: adopt, outrank by timeline, or fence."""
    candidate = r.in_flight.candidate if r.in_flight else None
    writable_nodes = [n for n in r.names if writable(r.obs(n))]
    contenders = [n for n in writable_nodes if n not in r.draft.fenced and n != candidate]
    if r.primary is None:
        _adopt_first(r, contenders)
    else:
        _outrank(r, r.primary, contenders)
    for name in writable_nodes:
        if name == r.primary or name == candidate:
            continue
        why = (
            "fenced earlier and still accepts writes"
            if name in r.draft.fenced
            else f"a second writable primary (timeline {_timeline(r, name)}); the primary is"
            f" {r.primary or 'undecided'}"
        )
        r.mark_fenced(name, why)
        # Safety before liveness: a fence goes out even while paused (paused stops
        # the controller changing the cluster, not it keeping two primaries apart).
        r.act(Fence(name, f"{name} accepts writes but must not: {why}"), operator=True)


def _history_problem(r: Round, primary: str, obs: Observation) -> str | None:
    """Why the newcomer is not proven to hold the primary's WAL up to its last position."""
    timeline, known = r.draft.primary_timeline, r.draft.primary_lsn
    if timeline is None or known is None:
        return None
    if obs.history is None:
        return (
            f"its timeline history cannot be read (the controller's role needs to read"
            f" pg_wal), so it is not proven to hold {primary}'s WAL up to"
            f" {format_lsn(known)}"
        )
    fork = obs.fork_lsn(timeline)
    if fork is None:
        return f"its timeline history does not include {primary}'s timeline {timeline}"
    if fork < known:
        return (
            f"it left timeline {timeline} at {format_lsn(fork)}, before {primary}'s last"
            f" known position {format_lsn(known)}: writes {primary} acknowledged after"
            " that are not on it"
        )
    return None


def adoption_problem(r: Round, name: str) -> str | None:
    """Why the newcomer ``name`` (writable on a higher timeline) must not replace
    the followed primary, if anything forbids it.

    While the followed primary is healthy the newcomer must provably hold the
    primary's history up to its last known position and must not be in
    maintenance; in quorum mode it must also pass the failover quorum rule, even
    with the primary down. Otherwise adopting it would throw away writes the
    primary acknowledged. With the primary down in asynchronous mode it is
    adopted (as a failover would have been).
    """
    primary = r.primary
    assert primary is not None
    healthy = is_primary(r.obs(primary)) and not r.health(primary).down
    quorum = quorum_mode(r.settings)
    obs = r.obs(name)
    assert obs is not None
    if not healthy:
        return quorum_adoption_problem(r, name, obs) if quorum else None
    if name in r.old.maintenance:
        return f"{name} is in maintenance"
    problem = _history_problem(r, primary, obs)
    if problem is not None:
        return problem
    if quorum:
        return quorum_adoption_problem(r, name, obs)
    return None


def quorum_adoption_problem(r: Round, name: str, obs: Observation) -> str | None:
    """Quorum mode: a newcomer stands in for a failover's candidate, so the same rule
    applies: a member of the set in force, with enough of that set reachable, and at
    least the WAL of the most advanced reachable member."""
    quorum = r.draft.sync_in_force
    if quorum is None or not quorum.synchronous:
        return None
    if name not in quorum.members:
        members = ", ".join(sorted(quorum.members))
        return f"it is not a member of the synchronous set ({members})"
    here = [m for m in quorum.members if m == name or is_replica(r.obs(m))]
    need = max(1, len(quorum.members) - quorum.k + 1)
    if len(here) < need:
        return (
            f"only {len(here)} of the synchronous set are reachable ({need} needed to prove"
            " it holds every acknowledged commit)"
        )
    primary_timeline = r.draft.primary_timeline
    fork = obs.fork_lsn(primary_timeline) if primary_timeline is not None else None
    positions = [
        o.wal_position
        for m in quorum.members
        if m != name
        for o in [r.obs(m)]
        if is_replica(o) and o is not None and o.wal_position is not None
    ]
    if positions and (fork is None or fork < max(positions)):
        return (
            f"a reachable synchronous member holds WAL up to {format_lsn(max(positions))},"
            f" past where it left timeline {primary_timeline}"
            f" ({format_lsn(fork)})"
        )
    return None


def adopt(r: Round, name: str, old: str | None, why: str) -> None:
    """Follow ``name`` as the primary (``old``: the one it replaces)."""
    set_primary(r, name)
    r.emit(
        EventKind.PRIMARY_ADOPTED,
        name,
        f"{name} adopted as primary: {why}",
        Severity.WARNING if old else Severity.INFO,
        old_primary=old,
        timeline=r.draft.primary_timeline,
    )
    if old is not None:
        role_change_hook(r, name, old, r.draft.primary_timeline, "primary changed")
