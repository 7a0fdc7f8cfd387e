"""Replication slots over SQL: member slots, configured logical slots and
synchronized_standby_slots, as a ManageSlots action asks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from psycopg.conninfo import make_conninfo

from hacontrol.core.actions import ManageSlots
from hacontrol.core.model import LogicalSlotSpec, NodeSpec, parse_lsn
from hacontrol.core.slot_names import SLOT_PREFIX
from hacontrol.io.errors import short_error
from hacontrol.io.pg import connect
from hacontrol.io.steps import StepResult, create_member_slots, literal, not_connected

__all__ = ["SlotsResult", "manage_slots"]

# Only hacontrol's physical slots, only inactive ones (an active one is in use), and
# with $2 only while the node is still a replica.
DROP_SLOTS_SQL = """
SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
 WHERE slot_name = ANY($1::text[]) AND NOT active AND slot_type = 'physical'
   AND starts_with(slot_name, $3) AND (NOT $2 OR pg_is_in_recovery())
"""


@dataclass(frozen=True, slots=True)
class SlotsResult:
    """What a ManageSlots did, and where each logical slot it created starts."""

    step: StepResult
    lsns: dict[str, int] = field(default_factory=dict)


async def _create_logical(
    spec: NodeSpec, slot: LogicalSlotSpec, failover: bool, connect_timeout: float, wait_s: float
) -> int | None:
    """Create one logical slot in its database; its start LSN (None: it exists already).

    Creating one waits until the transactions writing at that moment end, so it runs
    on its own connection with its own bound."""
    dsn = make_conninfo(spec.dsn, dbname=slot.database)
    conn = await connect(dsn, connect_timeout, statement_timeout=wait_s)
    try:
        exists = await conn.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot.name
        )
        if exists:
            return None
        if failover:
            row = await conn.fetchrow(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2, false, false,"
                " true)", slot.name, slot.plugin,
            )
        else:
            row = await conn.fetchrow(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2)",
                slot.name, slot.plugin,
            )
        return parse_lsn(row["lsn"]) if row is not None else None
    finally:
        conn.terminate()


async def manage_slots(
    spec: NodeSpec, action: ManageSlots, *, connect_timeout: float, logical_wait_s: float
) -> SlotsResult:
    """Create and drop the member slots, create the logical slots and set
    synchronized_standby_slots, as ``action`` says; idempotent."""
    started = time.monotonic()
    done: list[str] = []
    try:
        conn = await connect(spec.dsn, connect_timeout)
    except Exception as exc:
        return SlotsResult(not_connected(exc, started))
    try:
        if action.drop:
            dropped = int(await conn.fetchval(
                DROP_SLOTS_SQL, list(action.drop), action.on_replica, SLOT_PREFIX) or 0)
            if dropped:
                done.append(f"dropped {', '.join(action.drop)}")
        if action.create and await create_member_slots(conn, action.create):
            done.append(f"created {', '.join(action.create)}")
        if action.standby_slots is not None:
            await conn.execute("ALTER SYSTEM SET synchronized_standby_slots = "
                               + literal(action.standby_slots))
            await conn.execute("SELECT pg_reload_conf()")
            done.append(f"synchronized_standby_slots = '{action.standby_slots}'")
    except Exception as exc:
        done.append(short_error(exc))
        return SlotsResult(StepResult(False, "; ".join(done), time.monotonic() - started))
    finally:
        conn.terminate()
    lsns: dict[str, int] = {}
    for slot in action.logical:
        try:
            lsn = await _create_logical(
                spec, slot, action.failover, connect_timeout, logical_wait_s
            )
        except Exception as exc:
            done.append(f"logical slot {slot.name}: {short_error(exc)}")
            return SlotsResult(StepResult(False, "; ".join(done), time.monotonic() - started),
                               lsns)
        if lsn is not None:
            lsns[slot.name] = lsn
            done.append(f"created logical slot {slot.name}")
    return SlotsResult(StepResult(True, "; ".join(done) or "already in place",
                                  time.monotonic() - started, noop=not done), lsns)
