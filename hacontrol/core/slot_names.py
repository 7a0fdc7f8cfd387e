"""Which replication slots are hacontrol's, what they are called, and whether a
replica's synced logical slots can carry their consumers over a failover."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from hacontrol.core.actions import SlotSync
from hacontrol.core.model import Observation, ReplicationSlot, SlotKind
from hacontrol.core.settings import DecisionSettings

__all__ = [
    "SLOT_PREFIX",
    "SLOT_SYNC_VERSION",
    "member_slot_name",
    "missing_synced_slots",
    "owned_member_slot",
    "promote_slots",
    "repoint_slot",
    "slot_name_problem",
    "slot_sync_for",
    "sync_dbname",
    "synced_slots_ready",
    "syncs_slots",
]

# Every member slot's name starts with it: hacontrol never touches another physical
# slot, and never a logical slot that is not configured.
SLOT_PREFIX = "hacontrol_"
# PostgreSQL 17 syncs failover slots to standbys (server_version_num).
SLOT_SYNC_VERSION = 170000
# NAMEDATALEN - 1.
MAX_SLOT_NAME = 63
_VALID = re.compile(r"^[a-z0-9_]{1,63}$")


def member_slot_name(node: str) -> str:
    """The member slot of ``node`` on the primary: the prefix plus the node's name in
    the characters a slot name allows (lower case letters, digits, underscore)."""
    text = re.sub(r"[^a-z0-9_]", "_", node.lower())
    return (SLOT_PREFIX + text)[:MAX_SLOT_NAME]


def slot_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a replication slot's name (None: it can)."""
    if not _VALID.match(name):
        return "a slot name is 1 to 63 lower case letters, digits or underscores"
    if name.startswith(SLOT_PREFIX):
        return f"names starting with {SLOT_PREFIX!r} are hacontrol's member slots"
    return None


def owned_member_slot(slot: ReplicationSlot) -> bool:
    """True for a physical slot with hacontrol's prefix."""
    return slot.kind is SlotKind.PHYSICAL and slot.name.startswith(SLOT_PREFIX)


def missing_synced_slots(obs: Observation | None, names: Iterable[str]) -> list[str]:
    """The configured logical slots ``obs`` does not hold synced and valid."""
    wanted = list(names)
    if obs is None or obs.slots is None:
        return wanted
    missing: list[str] = []
    for name in wanted:
        slot = obs.slot(name)
        if (
            slot is None or slot.kind is not SlotKind.LOGICAL or not slot.valid
            or not slot.synced or slot.temporary
        ):
            missing.append(name)
    return missing


def synced_slots_ready(obs: Observation | None, names: Sequence[str]) -> bool | None:
    """Whether a replica holds every configured logical slot synced and valid (None:
    its slots were not read)."""
    if obs is None or obs.slots is None:
        return None
    return not missing_synced_slots(obs, names)


def syncs_slots(obs: Observation | None) -> bool:
    """True for a server that syncs failover slots to its standbys (PostgreSQL 17+)."""
    return obs is not None and (obs.server_version or 0) >= SLOT_SYNC_VERSION


def repoint_slot(settings: DecisionSettings, node: str) -> str | None:
    """The member slot ``node`` streams through (None: member slots are off)."""
    return member_slot_name(node) if settings.member_slots else None


def sync_dbname(settings: DecisionSettings) -> str | None:
    """The database a replica's primary_conninfo names for the slot sync worker (the
    first configured logical slot's; None: none configured, or member slots off).
    Streaming ignores it, so every path that writes primary_conninfo includes it."""
    logical = settings.logical_slots
    return logical[0].database if logical and settings.member_slots else None


def slot_sync_for(settings: DecisionSettings, replica: Observation | None) -> SlotSync | None:
    """What a replica needs to sync the failover slots (None: no logical slots
    configured, member slots off, or a server that cannot sync them)."""
    dbname = sync_dbname(settings)
    if dbname is None or not syncs_slots(replica):
        return None
    return SlotSync(dbname=dbname)


def promote_slots(
    settings: DecisionSettings, names: Iterable[str], candidate: str
) -> tuple[str, ...]:
    """The member slots to create on ``candidate`` before its promote: one per other
    configured node, the old primary's included, so its rejoin finds the WAL."""
    if not settings.member_slots:
        return ()
    return tuple(member_slot_name(n) for n in names if n != candidate)
