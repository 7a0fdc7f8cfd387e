"""Replication slots: one member slot per other node on the primary, expired after
``slot_retention``; the configured logical slots, as failover slots where the
server syncs them; and what a failover means for the logical slots' consumers."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.core.actions import ActionOutcome, CandidateInfo, Decision, ManageSlots
from hacontrol.core.draft import Round
from hacontrol.core.events import Event, EventKind, Severity
from hacontrol.core.model import Observation, SlotKind, format_lsn
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slot_names import (
    SLOT_PREFIX,
    member_slot_name,
    missing_synced_slots,
    owned_member_slot,
    syncs_slots,
)
from hacontrol.core.state import ControllerState
from hacontrol.core.topology import is_primary, is_replica

__all__ = ["SLOTS_RETRY_S", "logical_loss_event", "logical_slots_ranking", "manage_slots",
           "slots_outcome"]

# After a failed ManageSlots, the node's slots are left alone this long.
SLOTS_RETRY_S = 30.0


def _track_away(r: Round, primary: str) -> dict[str, float]:
    """Since when each other node has not been a reachable replica (never counted
    for a node in maintenance)."""
    away = dict(r.old.slot_away_since)
    for name in r.names:
        # A node in maintenance is expected to be away: its slot waits for it.
        if name == primary or is_replica(r.obs(name)) or name in r.old.maintenance:
            away.pop(name, None)
        else:
            away.setdefault(name, r.at)
    for name in list(away):
        if name not in r.names:
            del away[name]
    r.draft = replace(r.draft, slot_away_since=away)
    return away


def _member_changes(
    r: Round, primary: str, obs: Observation, away: dict[str, float]
) -> tuple[list[str], list[str], list[Event]]:
    """Member slots to create and to drop on the primary, and the events that report
    the drops (emitted once the drop is asked for)."""
    retention = r.settings.slot_retention_s
    wanted: set[str] = set()
    expired: dict[str, str] = {}
    if r.settings.member_slots:
        for name in r.names:
            if name == primary:
                continue
            since = away.get(name)
            if since is not None and r.at - since >= retention:
                expired[member_slot_name(name)] = name
            else:
                wanted.add(member_slot_name(name))
    owned = [s for s in obs.slots or () if owned_member_slot(s)]
    # An invalidated slot (max_slot_wal_keep_size) serves no one: replaced.
    invalid = {s.name for s in owned if not s.valid and not s.active}
    have = {s.name for s in owned} - invalid
    create = sorted(wanted - have)
    drop = sorted(s.name for s in owned if (s.name not in wanted or s.name in invalid)
                  and not s.active)
    events: list[Event] = []
    for slot in drop:
        node = expired.get(slot)
        if slot in invalid and slot in wanted:
            why = "PostgreSQL invalidated it (max_slot_wal_keep_size); a new one replaces it"
        elif node is not None:
            why = (f"{node} has been away for {r.at - away[node]:.0f} s (slot_retention"
                   f" {retention:.0f} s)")
        else:
            why = "its node is not configured"
        found = obs.slot(slot)
        events.append(Event(
            EventKind.SLOT_EXPIRED, primary, f"member slot {slot} on {primary} dropped: {why}",
            {"slot": slot, "member": node,
             "retained_bytes": obs.retained_bytes(found) if found else None},
            Severity.WARNING,
        ))
    return create, drop, events


def _logical_changes(r: Round, primary: str, obs: Observation) -> tuple[list[str], list[str]]:
    """Configured logical slots missing on the primary, and those of them it lost."""
    missing: list[str] = []
    for spec in r.settings.logical_slots:
        slot = obs.slot(spec.name)
        if slot is None:
            missing.append(spec.name)
        elif slot.kind is not SlotKind.LOGICAL or slot.plugin != spec.plugin or (
            slot.database != spec.database
        ):
            r.condition(
                f"logical_slot_mismatch:{primary}:{spec.name}", EventKind.LOGICAL_SLOT_MISMATCH,
                primary,
                f"slot {spec.name} on {primary} is a {slot.kind} slot of database"
                f" {slot.database or '-'} with plugin {slot.plugin or '-'}, not the configured"
                f" {spec.plugin} slot of {spec.database}: left alone",
                Severity.WARNING,
            )
    seen = {s.name for s in r.settings.logical_slots} - set(missing)
    r.draft = replace(r.draft, logical_seen=r.draft.logical_seen | seen)
    return missing, [n for n in missing if n in r.old.logical_seen]


def _standby_slots(r: Round, primary: str) -> str | None:
    """synchronized_standby_slots for the primary: the member slots of the replicas
    that stream and may take over (None: leave the setting alone)."""
    obs = r.obs(primary)
    if obs is None or not syncs_slots(obs):
        return None
    current = obs.synchronized_standby_slots
    if not r.settings.logical_slots or not r.settings.member_slots:
        # Left over from when they were on: it would name slots that are dropped,
        # and logical senders wait for a missing slot for ever. Only ours is reset.
        names = [n.strip() for n in (current or "").split(",") if n.strip()]
        ours = names and all(n.startswith(SLOT_PREFIX) for n in names)
        return "" if ours else None
    names = sorted(
        member_slot_name(n) for n in r.names
        if n != primary and n not in r.old.maintenance and n not in r.draft.fenced
        and r.specs[n].priority > 0
        for slot in [obs.slot(member_slot_name(n))] if slot is not None and slot.active
    )
    value = ", ".join(names)
    return None if current in (None, value) else value


def _may_retry(r: Round, node: str) -> bool:
    """False within SLOTS_RETRY_S of a failed ManageSlots on ``node``."""
    after = r.old.slots_retry_at.get(node)
    return after is None or r.at >= after


def _warn_unlimited(r: Round, primary: str, obs: Observation) -> None:
    if obs.max_slot_wal_keep_mb == -1 and (r.settings.member_slots or r.settings.logical_slots):
        r.condition(
            f"slot_wal_unlimited:{primary}", EventKind.SLOT_WAL_UNLIMITED, primary,
            f"max_slot_wal_keep_size is unlimited on {primary}: a slot whose consumer stays"
            " away keeps WAL until pg_wal fills the disk; set a limit (docs/slots.md)",
            Severity.WARNING,
        )


def _stale_on_replicas(r: Round, primary: str) -> None:
    """A replica keeps no inactive member slots (left from a term as primary): on a
    standby they hold its WAL for ever."""
    flight = r.in_flight
    for name in r.names:
        obs = r.obs(name)
        if (
            name == primary or not is_replica(obs) or obs is None
            or name in r.old.slots_pending or name in r.old.maintenance
            or not _may_retry(r, name)
        ):
            continue
        if flight is not None and flight.candidate == name:
            continue
        stale = tuple(sorted(s.name for s in obs.slots or () if owned_member_slot(s)
                             and not s.active))
        why = f"replica {name} holds stale member slots"
        if stale and r.act(ManageSlots(name, why, drop=stale, on_replica=True)):
            r.draft = replace(r.draft, slots_pending=r.draft.slots_pending | {name})


def manage_slots(r: Round) -> None:
    """The settled primary holds the wanted slots; replicas hold no stale ones."""
    primary = r.primary
    obs = r.obs(primary)
    if (
        primary is None or obs is None or r.in_flight is not None or not is_primary(obs)
        or obs.slots is None or primary in r.draft.fenced
    ):
        return
    away = _track_away(r, primary)
    _warn_unlimited(r, primary, obs)
    create, drop, expiries = _member_changes(r, primary, obs, away)
    missing, lost = _logical_changes(r, primary, obs)
    standby_slots = _standby_slots(r, primary)
    _stale_on_replicas(r, primary)
    if (
        primary in r.old.slots_pending or not _may_retry(r, primary)
        or not (create or drop or missing or standby_slots is not None)
    ):
        return
    specs = tuple(s for s in r.settings.logical_slots if s.name in missing)
    parts = [f"create {', '.join(create)}" if create else "", f"drop {', '.join(drop)}"
             if drop else "", f"create logical {', '.join(missing)}" if missing else "",
             f"synchronized_standby_slots = '{standby_slots}'" if standby_slots is not None
             else ""]
    action = ManageSlots(
        primary, f"slots on {primary}: " + "; ".join(p for p in parts if p),
        create=tuple(create), drop=tuple(drop), logical=specs, failover=syncs_slots(obs),
        standby_slots=standby_slots, lost=tuple(lost),
    )
    if r.act(action):
        r.draft = replace(r.draft, slots_pending=r.draft.slots_pending | {primary})
        for event in expiries:
            r.emit(event.kind, event.node, event.message, event.severity, **event.details)


def logical_slots_ranking(
    r: Round, primary: str, ranking: tuple[CandidateInfo, ...]
) -> tuple[CandidateInfo, ...] | None:
    """The ranking a failover promotes from, as the configured logical slots allow.

    With ``require_logical_slots`` the best eligible candidate holding them all synced
    goes first, and with none the failover waits (None, reported). Otherwise the best
    candidate is promoted; if it lacks them, the loss is reported."""
    names = [s.name for s in r.settings.logical_slots]
    eligible = [c for c in ranking if c.eligible]
    if not names or not eligible:
        return ranking
    missing = {c.node: missing_synced_slots(r.obs(c.node), names) for c in eligible}
    chosen = eligible[0]
    if not missing[chosen.node]:
        return ranking
    if r.settings.require_logical_slots:
        ready = next((c for c in eligible if not missing[c.node]), None)
        if ready is not None:
            return (ready, *(c for c in ranking if c is not ready))
        why = _why_missing(r.obs(chosen.node), chosen.node, missing[chosen.node])
        r.condition(
            f"logical_slots:{primary}", EventKind.FAILOVER_BLOCKED, primary,
            f"primary {primary} is down, but no candidate holds the synced logical slot(s)"
            f" {', '.join(names)} ({why}), and"
            " [failover] require_logical_slots is set: waiting (no failover)",
            Severity.CRITICAL, blocked_by="logical_slots", missing=missing[chosen.node],
            candidate=chosen.node,
        )
        return None
    lost = logical_loss_event(r.settings, r.obs(chosen.node), chosen.node, primary, "failing over")
    if lost is not None:
        r.emit(lost.kind, lost.node, lost.message, lost.severity, **lost.details)
    return ranking


def _why_missing(obs: Observation | None, node: str, missing: list[str]) -> str:
    if syncs_slots(obs):
        return f"{node} does not hold the synced logical slot(s) {', '.join(missing)}"
    return f"{node} runs PostgreSQL < 17, which cannot sync logical slots"


def logical_loss_event(
    settings: DecisionSettings, obs: Observation | None, node: str, old: str, doing: str
) -> Event | None:
    """The critical event of a change of primary to ``node`` that loses configured
    logical slots (None: it holds them all, or none are configured)."""
    names = [s.name for s in settings.logical_slots]
    missing = missing_synced_slots(obs, names) if names else []
    if not missing:
        return None
    return Event(
        EventKind.LOGICAL_SLOTS_LOST, node,
        f"{doing} to {node} although {_why_missing(obs, node, missing)}: the slot(s) are"
        " created anew on it, and their consumers lose the changes in between",
        {"missing": missing, "old_primary": old}, Severity.CRITICAL,
    )


def slots_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """A ManageSlots ended: the node may be managed again; what it created or failed
    to do is reported."""
    action = outcome.action
    assert isinstance(action, ManageSlots)
    retry = dict(state.slots_retry_at)
    if outcome.status is OutcomeStatus.SUCCEEDED:
        retry.pop(action.node, None)
    else:
        # A slot that cannot be made (wal_level, a missing plugin, no free slot) fails
        # the same way next round: tried again, and reported, after a pause.
        retry[action.node] = at + SLOTS_RETRY_S
    state = replace(state, slots_pending=state.slots_pending - {action.node},
                    slots_retry_at=retry)
    events: list[Event] = []
    for name, lsn in sorted(outcome.slot_lsns.items()):
        lost = name in action.lost
        message = (
            f"logical slot {name} created on {action.node} at {format_lsn(lsn)}: its"
            " consumers resume from there"
        )
        if lost:
            message += (
                f"; changes before {format_lsn(lsn)} that they had not consumed on the old"
                " primary are lost to them"
            )
        events.append(Event(
            EventKind.LOGICAL_SLOT_CREATED, action.node, message,
            {"slot": name, "lsn": format_lsn(lsn), "lost": lost},
            Severity.CRITICAL if lost else Severity.INFO,
        ))
    if outcome.status is OutcomeStatus.SUCCEEDED:
        if action.create or action.drop or action.standby_slots is not None:
            events.append(Event(EventKind.SLOTS_CHANGED, action.node,
                                f"slots on {action.node}: {outcome.detail}",
                                {"asked": action.reason}))
    else:
        events.append(Event(
            EventKind.SLOTS_FAILED, action.node,
            f"slots on {action.node}: {outcome.detail}; tried again in {SLOTS_RETRY_S:.0f} s",
            {"detail": outcome.detail}, Severity.WARNING,
        ))
    return Decision(state, (), tuple(events))
