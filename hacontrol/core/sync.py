"""Synchronous quorum replication rules. Pure: no I/O, no clocks.

Two questions, answered from the probe round, the decision state and the settings:

* what ``synchronous_standby_names`` the primary should have
  (:func:`desired_standbys`, and :func:`post_failover_standbys` for a candidate
  about to be promoted), with the reason and whether that is a degradation;
* whether a failover may promote anyone without losing an acknowledged commit,
  and whom (:func:`failover_quorum`): with ``ANY k`` of ``N`` members, every
  acknowledged commit is on at least k members, so once at least ``N - k + 1``
  members are reachable one of them holds it, and the reachable member with the
  most WAL holds every one.

A change of the set is safe because the set the primary used before stays a set a
failover must consult (``ControllerState.sync_pending``) until the new set provably
covers it (:func:`track_in_force`). The reasoning is in docs/synchronous.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hacontrol.core.fitness import sync_exclusion
from hacontrol.core.model import ClusterView, Observation, ReplicationClient
from hacontrol.core.settings import DecisionSettings, SyncMode
from hacontrol.core.standby_names import ASYNC, format_standby_names, same_set
from hacontrol.core.state import ControllerState, SyncQuorum
from hacontrol.core.topology import is_replica

__all__ = [
    "QuorumVerdict",
    "SyncTarget",
    "covered",
    "desired_standbys",
    "failover_quorum",
    "member_candidates",
    "post_failover_standbys",
    "quorum_mode",
    "requested",
    "track_in_force",
]


def quorum_mode(settings: DecisionSettings) -> bool:
    """True when the controller manages a synchronous quorum."""
    return settings.synchronous is SyncMode.QUORUM


# --------------------------------------------------------------------------- membership


def _streaming_names(
    primary_obs: Observation | None, nodes: Iterable[str]
) -> dict[str, ReplicationClient]:
    """Configured nodes the primary's pg_stat_replication shows streaming, by name."""
    if primary_obs is None:
        return {}
    by_lower = {n.lower(): n for n in nodes}
    found: dict[str, ReplicationClient] = {}
    for row in primary_obs.replication:
        name = by_lower.get(row.application_name.lower())
        if name is not None and row.state == "streaming":
            found[name] = row
    return found


def member_candidates(
    primary: str,
    view: ClusterView,
    state: ControllerState,
    nodes: Sequence[str],
    settings: DecisionSettings,
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Replicas fit to be synchronous members of ``primary``, and why each other is not.

    A member streams from the primary (its pg_stat_replication row), or is a reachable,
    healthy replica not in maintenance that has not streamed from it for less than
    ``sync_grace_s`` (just repointed after a failover, catching up). A replica the
    controller cannot reach but the primary sees streaming stays a member.
    """
    streaming = _streaming_names(view.get(primary), nodes)
    members: list[str] = []
    why_not: dict[str, str] = {}
    for name in sorted(nodes):
        if name == primary:
            continue
        if name in streaming:
            members.append(name)
            continue
        health = state.health(name)
        excluded = sync_exclusion(name, view, state, settings)
        if excluded is not None:
            why_not[name] = f"{excluded}, not streaming"
        elif health.down:
            why_not[name] = "failed recently, not streaming"
        elif (
            health.misrouted_since is not None
            and view.at - health.misrouted_since >= settings.sync_grace_s
        ):
            why_not[name] = (
                f"not streaming from {primary} for {view.at - health.misrouted_since:.1f} s"
            )
        else:
            members.append(name)
    return tuple(members), why_not


@dataclass(frozen=True, slots=True)
class SyncTarget:
    """What synchronous_standby_names should be, and why."""

    value: str
    quorum: SyncQuorum
    reason: str
    # Fewer than k members are fit: non-strict degraded to fewer names or async ...
    degraded: bool = False
    # ... or strict kept k names although fewer are fit: writes wait.
    blocked: bool = False
    members: tuple[str, ...] = ()


def _target(
    fit: Sequence[str],
    others: Sequence[str],
    why_not: Mapping[str, str],
    settings: DecisionSettings,
    where: str,
) -> SyncTarget:
    k = settings.sync_quorum
    missing = "; ".join(f"{n}: {why}" for n, why in sorted(why_not.items()))
    missing_text = f" ({missing})" if missing else ""
    if len(fit) >= k:
        value = format_standby_names(k, fit)
        reason = f"ANY {k} of the {len(fit)} replica(s) fit to acknowledge on {where}"
        return SyncTarget(value, SyncQuorum(frozenset(fit), k, "any"), reason, members=tuple(fit))
    if settings.sync_strict:
        value = format_standby_names(k, others)
        reason = (
            f"strict quorum: only {len(fit)} of the {k} replica(s) needed can acknowledge on"
            f" {where}{missing_text}; keeping ANY {k} over every configured replica, so writes"
            f" wait until {k} stream"
        )
        quorum = SyncQuorum(frozenset(others), k, "any")
        return SyncTarget(value, quorum, reason, blocked=True, members=tuple(others))
    if fit:
        value = format_standby_names(len(fit), fit)
        reason = (
            f"only {len(fit)} of the {k} replica(s) needed can acknowledge on {where}"
            f"{missing_text}; degraded to ANY {len(fit)} until they return"
        )
        quorum = SyncQuorum(frozenset(fit), len(fit), "any")
        return SyncTarget(value, quorum, reason, degraded=True, members=tuple(fit))
    reason = (
        f"no replica can acknowledge on {where}{missing_text}; degraded to asynchronous"
        " replication (acknowledged commits may be lost if the primary fails) until one"
        " returns"
    )
    return SyncTarget("", ASYNC, reason, degraded=True)


def desired_standbys(
    primary: str,
    view: ClusterView,
    state: ControllerState,
    nodes: Sequence[str],
    settings: DecisionSettings,
) -> SyncTarget:
    """The synchronous set ``primary`` should use now."""
    fit, why_not = member_candidates(primary, view, state, nodes, settings)
    others = [n for n in sorted(nodes) if n != primary]
    return _target(fit, others, why_not, settings, primary)


def post_failover_standbys(
    candidate: str,
    old_primary: str | None,
    view: ClusterView,
    state: ControllerState,
    nodes: Sequence[str],
    settings: DecisionSettings,
) -> SyncTarget:
    """The set to give ``candidate`` before it is promoted: the reachable, healthy
    replicas that will be repointed to it (the old primary and fenced nodes excluded),
    so its first commit already waits for them."""
    fit: list[str] = []
    why_not: dict[str, str] = {}
    for name in sorted(nodes):
        if name in (candidate, old_primary):
            continue
        excluded = sync_exclusion(name, view, state, settings)
        if excluded is not None:
            why_not[name] = excluded
        elif state.health(name).down:
            why_not[name] = "failed recently"
        else:
            fit.append(name)
    others = [n for n in sorted(nodes) if n != candidate]
    return _target(fit, others, why_not, settings, f"{candidate} once promoted")


# --------------------------------------------------------------------------- tracking


def covered(old: SyncQuorum, current: SyncQuorum, replication: Iterable[ReplicationClient]) -> bool:
    """True when ``current`` provably covers every commit acknowledged under ``old``.

    Those commits lie at or below ``old.until_lsn``. Once ``current.k`` members of
    ``current`` have flushed that LSN, any ``N - k + 1`` members of ``current`` include
    one of them, so a failover consulting ``current`` alone finds every such commit.
    An asynchronous ``old`` promised nothing; an asynchronous ``current`` promises
    nothing either (degradation gives the guarantee up).
    """
    if not old.synchronous or not current.synchronous:
        return True
    if old.until_lsn is None:
        return False
    lower = {m.lower(): m for m in current.members}
    flushed = {
        lower[row.application_name.lower()]
        for row in replication
        if row.application_name.lower() in lower
        and row.flush_lsn is not None
        and row.flush_lsn >= old.until_lsn
    }
    return len(flushed) >= current.k


def track_in_force(
    in_force: SyncQuorum | None,
    pending: tuple[SyncQuorum, ...],
    seen: SyncQuorum,
    primary_obs: Observation,
) -> tuple[SyncQuorum, tuple[SyncQuorum, ...]]:
    """Fold the set the primary was just seen using into (in force, pending).

    ``pending`` holds, newest first, sets a failover must still consult: superseded
    sets (``until_lsn`` set) and sets requested but not yet seen in force
    (``until_lsn`` None, see :func:`requested`). A changed set pushes the previous
    one with ``until_lsn`` = the primary's LSN now. A requested set seen in force
    leaves ``pending``, and requests older than it are superseded at this LSN (the
    settings are written in order, so they cannot come back). Superseded sets the
    set in force covers are dropped.
    """
    lsn = primary_obs.current_lsn
    out: list[SyncQuorum] = []
    if in_force is not None and not same_set(in_force, seen):
        out.append(_superseded(in_force, lsn))
    match = next(
        (i for i, p in enumerate(pending) if p.until_lsn is None and same_set(p, seen)), None
    )
    for i, p in enumerate(pending):
        if match is not None and i == match:
            continue
        if match is not None and i > match and p.until_lsn is None:
            out.append(_superseded(p, lsn))
        else:
            out.append(p)
    current = SyncQuorum(seen.members, seen.k, seen.method)
    kept = tuple(p for p in out if not covered(p, current, primary_obs.replication))
    return current, kept


def requested(pending: tuple[SyncQuorum, ...], wanted: SyncQuorum) -> tuple[SyncQuorum, ...]:
    """``pending`` after asking the primary to use ``wanted``: until it is seen in force
    it may already be, so a failover consults it too."""
    entry = SyncQuorum(wanted.members, wanted.k, wanted.method)
    if pending and pending[0].until_lsn is None and same_set(pending[0], entry):
        return pending
    return (entry, *pending)


def _superseded(quorum: SyncQuorum, lsn: int | None) -> SyncQuorum:
    # A primary's probe always carries its LSN; were it missing, the entry would stay
    # unresolved (consulted, never covered) until a later observation supersedes it.
    return SyncQuorum(quorum.members, quorum.k, quorum.method, lsn)


# --------------------------------------------------------------------------- failover


@dataclass(frozen=True, slots=True)
class QuorumVerdict:
    """Whether a failover may proceed under the synchronous sets, and whom it may promote."""

    ok: bool
    # No set in force promised anything (asynchronous): no restriction.
    unrestricted: bool
    # Nodes that may be promoted (members of a consulted set) ...
    members: frozenset[str]
    # ... provided they hold at least this much WAL (the most any reachable member has).
    required_lsn: int | None
    reachable: tuple[str, ...]
    missing: tuple[str, ...]
    reason: str

    def allows(self, node: str, wal_position: int | None) -> bool:
        """True when promoting ``node`` at ``wal_position`` loses no acknowledged commit."""
        if not self.ok:
            return False
        if self.unrestricted:
            return True
        if node not in self.members or wal_position is None:
            return False
        return self.required_lsn is None or wal_position >= self.required_lsn


def _describe_set(quorum: SyncQuorum) -> str:
    method = "FIRST" if quorum.method == "first" else "ANY"
    return f"{method} {quorum.k} ({', '.join(sorted(quorum.members))})"


def _reachable_members(
    quorum: SyncQuorum, view: ClusterView
) -> tuple[set[str], str | None]:
    """The members of ``quorum`` reachable as replicas with a known position, and why
    they are too few (None: N - k + 1 of them are there)."""
    need = max(1, len(quorum.members) - quorum.k + 1)
    here = {
        m for m in quorum.members
        if is_replica(obs := view.get(m)) and obs is not None and obs.wal_position is not None
    }
    if len(here) >= need:
        return here, None
    gone = sorted(quorum.members - here)
    return here, (
        f"{_describe_set(quorum)} needs {need} reachable member(s), has {len(here)};"
        f" missing {', '.join(gone)}"
    )


def failover_quorum(
    state: ControllerState, view: ClusterView, nodes: Sequence[str], primary: str
) -> QuorumVerdict:
    """May a failover away from ``primary`` proceed, and whom may it promote?

    Every consulted set (the one in force, plus superseded ones not yet covered) with
    ``k`` of ``N`` members needs ``N - k + 1`` of its members reachable as replicas.
    When the set in force was never seen, every other configured node counts as a
    member with k = 1: all of them must be reachable. The candidate must be a
    consulted member with at least the WAL of the most advanced reachable member.
    """
    in_force = state.sync_in_force
    assumed = in_force is None
    if in_force is None:
        in_force = SyncQuorum(frozenset(n for n in nodes if n != primary), 1, "any")
    consulted = [q for q in (in_force, *state.sync_pending) if q.synchronous]
    if not consulted:
        return QuorumVerdict(
            True, True, frozenset(), None, (), (),
            "the primary was seen replicating asynchronously (synchronous set degraded):"
            " acknowledged commits it held alone may be lost",
        )
    members: set[str] = set()
    reachable: set[str] = set()
    missing: set[str] = set()
    short: list[str] = []
    for quorum in consulted:
        here, shortfall = _reachable_members(quorum, view)
        members |= quorum.members
        reachable |= here
        if shortfall is not None:
            missing |= quorum.members - here
            short.append(shortfall)
    sets = "; ".join(_describe_set(q) for q in consulted)
    if assumed:
        sets += " (set in force never seen: every replica assumed a member)"
    positions = [
        obs.wal_position
        for m in reachable
        for obs in [view.get(m)]
        if obs is not None and obs.wal_position is not None
    ]
    required = max(positions) if positions else None
    if short:
        reason = (
            f"cannot be certain any reachable replica holds every acknowledged commit of"
            f" {primary}: " + "; ".join(short) + f" (sets consulted: {sets})"
        )
        return QuorumVerdict(
            False, False, frozenset(members), required, tuple(sorted(reachable)),
            tuple(sorted(missing)), reason,
        )
    reason = (
        f"enough of the synchronous set is reachable ({', '.join(sorted(reachable))}; sets"
        f" consulted: {sets}): the most advanced of them holds every acknowledged commit"
    )
    return QuorumVerdict(
        True, False, frozenset(members), required, tuple(sorted(reachable)), (), reason
    )

