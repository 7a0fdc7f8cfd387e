"""Carrying out actions on nodes over SQL. Each step is idempotent or guarded.

Nothing here decides anything: the decision core says what to do and why,
these functions do it and report what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from hacontrol.core.actions import SlotSync
from hacontrol.core.model import NodeSpec
from hacontrol.io.dsn import endpoint, standby_conninfo
from hacontrol.io.errors import short_error
from hacontrol.io.pg import connect


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one action did: ok or not, a one-line detail, and how long it took."""

    ok: bool
    detail: str
    duration_s: float = 0.0
    # True when the step found nothing to do (already done earlier).
    noop: bool = False
    # False: the step certainly changed nothing (it could not connect, or did not
    # start), so a failure needs no settling.
    attempted: bool = True


def not_connected(exc: BaseException, started: float) -> StepResult:
    """The failure of a step that could not connect: it changed nothing."""
    return StepResult(False, f"cannot connect: {short_error(exc)}", time.monotonic() - started,
                      attempted=False)


async def run_on(
    spec: NodeSpec, connect_timeout: float,
    body: Callable[[asyncpg.Connection], Awaitable[str]],
) -> StepResult:
    """One connection to ``spec`` for ``body``, whose answer is the step's detail.

    Like every step: a node's trouble is a failed step, never the loop's end (asyncpg
    raises InternalClientError on a connection a restarting server left half-open).
    """
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, connect_timeout)
    except Exception as exc:
        return not_connected(exc, started)
    try:
        return StepResult(True, await body(conn), time.monotonic() - started)
    except Exception as exc:
        return StepResult(False, short_error(exc), time.monotonic() - started)
    finally:
        conn.terminate()


# The client sessions that hold back replay on a replica: those holding a lock the
# startup process waits for (an ACCESS EXCLUSIVE lock replayed from the primary), and,
# while it waits on a snapshot, tablespace or buffer-pin conflict, every session in a
# transaction. A promote must replay everything received first, so they are ended.
RELEASE_REPLAY_SQL = """
WITH startup AS (
  SELECT pid, wait_event FROM pg_stat_activity WHERE backend_type = 'startup'
), blockers AS (
  SELECT h.pid FROM pg_locks w JOIN startup s ON s.pid = w.pid
    JOIN pg_locks h ON h.granted AND h.pid <> w.pid
     AND (h.locktype, h.database, h.relation, h.page, h.tuple, h.virtualxid,
          h.transactionid, h.classid, h.objid, h.objsubid)
         IS NOT DISTINCT FROM
         (w.locktype, w.database, w.relation, w.page, w.tuple, w.virtualxid,
          w.transactionid, w.classid, w.objid, w.objsubid)
   WHERE NOT w.granted
  UNION
  SELECT a.pid FROM pg_stat_activity a, startup s
   WHERE s.wait_event IN ('RecoveryConflictSnapshot', 'RecoveryConflictTablespace', 'BufferPin')
     AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL
)
SELECT count(pg_terminate_backend(pid)) FROM blockers WHERE pid <> pg_backend_pid()
"""
# How often the sessions holding back replay are looked for while a promote waits.
RELEASE_EVERY_S = 0.2


async def promote(
    spec: NodeSpec, *, connect_timeout: float, wait_s: float, slots: tuple[str, ...] = ()
) -> StepResult:
    """Promote ``spec``'s node, guarded: re-read its role first, never promote twice.

    Ends the client sessions that hold back the node's replay (a promote replays all
    WAL received first; a reporting query in a recovery conflict would delay it for
    max_standby_streaming_delay, or for ever at -1), sends
    ``pg_promote(wait => false)`` and then watches ``pg_is_in_recovery()``
    closely (``pg_promote(wait => true)`` checks only every 100 ms, which a
    switchover's write-unavailability window would pay in full). Verifies
    afterwards that the node is out of recovery on a timeline above the one it
    replayed. Never retried by the caller: pg_promote is not idempotent across a
    crash. A failure with ``attempted=False`` means the promote request was
    certainly not sent; any other failure leaves the outcome uncertain.

    ``slots``: member slots created first (a failure to create them is reported,
    it does not hold back the promote).
    """
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, connect_timeout, statement_timeout=wait_s + connect_timeout)
    except Exception as exc:
        return not_connected(exc, started)
    sent = False
    try:
        before = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS r, (pg_control_checkpoint()).timeline_id AS tli"
        )
        if not before["r"]:
            return StepResult(True, "already a primary", time.monotonic() - started, noop=True)
        slot_note = await _member_slots_before_promote(conn, slots)
        ended = int(await conn.fetchval(RELEASE_REPLAY_SQL) or 0)
        sent = True
        if not await conn.fetchval("SELECT pg_promote(false)"):
            # The server could not signal its postmaster (it removes its promote
            # file again); still reported as uncertain, as is every failure once
            # the request was sent.
            return StepResult(False, "pg_promote could not signal the postmaster",
                              time.monotonic() - started)
        left, more = await _left_recovery(conn, started + wait_s)
        ended += more
        if not left:
            return StepResult(False, f"still in recovery {wait_s:g} s after pg_promote",
                              time.monotonic() - started)
        row = await conn.fetchrow(
            "SELECT current_setting('default_transaction_read_only') AS ro,"
            " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tli"
        )
        elapsed = time.monotonic() - started
        if before["tli"] is not None and row["tli"] <= before["tli"]:
            return StepResult(False, f"out of recovery but on timeline {row['tli']}, not above "
                              f"{before['tli']}", elapsed)
        note = slot_note + ("; default_transaction_read_only is on" if row["ro"] == "on" else "")
        if ended:
            note += f"; {ended} session(s) holding back its replay ended"
        return StepResult(True, f"promoted; timeline {row['tli']}{note}", elapsed)
    except Exception as exc:
        # Before pg_promote was sent nothing can have happened.
        prefix = "" if sent else "not attempted: cannot read its role: "
        return StepResult(False, prefix + short_error(exc), time.monotonic() - started,
                          attempted=sent)
    finally:
        conn.terminate()


async def create_member_slots(conn: asyncpg.Connection, names: Sequence[str]) -> int:
    """Create the member slots among ``names`` that do not exist; how many were created."""
    if not names:
        return 0
    try:
        return int(await conn.fetchval(CREATE_MEMBER_SLOTS_SQL, list(names)) or 0)
    except asyncpg.DuplicateObjectError:
        # Created meanwhile by a repoint or a promote: there now, which is the point.
        return int(await conn.fetchval(CREATE_MEMBER_SLOTS_SQL, list(names)) or 0)


async def _member_slots_before_promote(conn: asyncpg.Connection, slots: tuple[str, ...]) -> str:
    if not slots:
        return ""
    try:
        created = await create_member_slots(conn, slots)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        return f"; member slots not created: {short_error(exc)}"
    return f"; {created} member slot(s) created" if created else ""


# How often the end of recovery is checked after pg_promote: closely at first
# (a promote takes milliseconds), then gently if it drags on.
PROMOTE_POLL_S = 0.005
PROMOTE_SLOW_POLL_S = 0.05
PROMOTE_FAST_FOR_S = 1.0


async def _left_recovery(conn: asyncpg.Connection, deadline: float) -> tuple[bool, int]:
    """(True once the node is out of recovery, False at ``deadline``; how many sessions
    holding back its replay were ended meanwhile)."""
    fast_until = time.monotonic() + PROMOTE_FAST_FOR_S
    release_at = time.monotonic() + RELEASE_EVERY_S
    ended = 0
    while True:
        if not await conn.fetchval("SELECT pg_is_in_recovery()"):
            return True, ended
        now = time.monotonic()
        if now >= deadline:
            return False, ended
        if now >= release_at:
            # A session that began after the promote was sent can hold replay back too.
            ended += int(await conn.fetchval(RELEASE_REPLAY_SQL) or 0)
            release_at = now + RELEASE_EVERY_S
        pause = PROMOTE_POLL_S if now < fast_until else PROMOTE_SLOW_POLL_S
        await asyncio.sleep(min(pause, max(0.0, deadline - now)))


async def ensure_member_slot(
    primary: NodeSpec, slot: str | tuple[str, ...], *, connect_timeout: float
) -> str | None:
    """Create member slot(s) ``slot`` on ``primary`` unless they exist; the error, if any."""
    names = [slot] if isinstance(slot, str) else list(slot)
    try:
        conn = await connect(primary.dsn, connect_timeout)
    except Exception as exc:
        return f"cannot connect to {primary.name}: {short_error(exc)}"
    try:
        await create_member_slots(conn, names)
        return None
    except Exception as exc:
        return short_error(exc)
    finally:
        conn.terminate()


def _standby_settings(slot: str | None, slot_sync: SlotSync | None) -> dict[str, str]:
    settings = {"primary_slot_name": slot or ""}
    if slot_sync is not None:
        settings |= {"sync_replication_slots": "on", "hot_standby_feedback": "on"}
    return settings


async def repoint(
    replica: NodeSpec,
    primary: NodeSpec,
    *,
    connect_timeout: float,
    slot: str | None = None,
    slot_sync: SlotSync | None = None,
    dbname: str | None = None,
) -> StepResult:
    """Make ``replica`` stream from ``primary`` (ALTER SYSTEM primary_conninfo + reload),
    through member slot ``slot`` (created on the primary first; None: no slot).

    PostgreSQL >= 13 restarts the WAL receiver on reload; recovery_target_timeline
    'latest' (the default) makes it follow the new timeline. ``slot_sync``: the
    replica also syncs the primary's failover slots (PostgreSQL 17+); ``dbname``:
    the database its conninfo names for that without turning the sync on.
    """
    started = time.monotonic()
    conninfo = standby_conninfo(primary, replica.name,
                                dbname=slot_sync.dbname if slot_sync else dbname)
    note = ""
    if slot:
        problem = await ensure_member_slot(primary, slot, connect_timeout=connect_timeout)
        if problem is not None:
            # Streaming without the slot beats not following the primary at all.
            note = f"; without its slot ({slot} not created on {primary.name}: {problem})"
            slot = None
    wanted = {"primary_conninfo": conninfo, **_standby_settings(slot, slot_sync)}
    try:
        conn = await connect(replica.dsn, connect_timeout)
    except Exception as exc:
        return not_connected(exc, started)
    try:
        if not await conn.fetchval("SELECT pg_is_in_recovery()"):
            return StepResult(False, "node is a primary, not a replica", time.monotonic() - started)
        current = {name: await conn.fetchval("SELECT current_setting($1, true)", name)
                   for name in wanted}
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not changed:
            # Same target already: just make the receiver retry now.
            await conn.execute("SELECT pg_reload_conf()")
            return StepResult(True, "already pointed there" + note, time.monotonic() - started,
                              noop=True)
        for name, value in changed.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = {literal(value)}")
        await conn.execute("SELECT pg_reload_conf()")
        host, port = endpoint(conninfo)
        text = f"primary_conninfo -> {host}:{port}"
        if slot:
            text += f" through slot {slot}"
        return StepResult(True, text + note, time.monotonic() - started)
    except Exception as exc:
        return StepResult(False, short_error(exc), time.monotonic() - started)
    finally:
        conn.terminate()


async def fence(spec: NodeSpec, *, connect_timeout: float) -> StepResult:
    """Stop a node from taking writes: default_transaction_read_only=on, reload, and
    terminate every client session but this one, so no open session keeps writing
    (an application name proves nothing: any client can call itself "hacontrol";
    the controller's own probe connections simply reconnect).

    libpq clients with target_session_attrs=read-write skip it from then on
    (PostgreSQL >= 14 reports default_transaction_read_only at connect). A soft
    fence: a new session can still ``SET SESSION CHARACTERISTICS AS TRANSACTION
    READ WRITE`` and write; see docs/detection.md for what closes that.
    """

    async def body(conn: asyncpg.Connection) -> str:
        await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await conn.execute("SELECT pg_reload_conf()")
        terminated = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return f"read-only; {terminated} client session(s) ended"

    return await run_on(spec, connect_timeout, body)


async def unfence(spec: NodeSpec, *, connect_timeout: float) -> StepResult:
    """Undo :func:`fence` (used when a switchover is rolled back or a node rejoined)."""

    async def body(conn: asyncpg.Connection) -> str:
        await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await conn.execute("SELECT pg_reload_conf()")
        return "writable again"

    return await run_on(spec, connect_timeout, body)


async def ensure_settings(
    spec: NodeSpec, wanted_ms: dict[str, int], seen_ms: dict[str, int], *, connect_timeout: float
) -> StepResult:
    """Apply managed server settings (ALTER SYSTEM + reload) where they differ."""
    changes = {k: v for k, v in wanted_ms.items() if seen_ms.get(k) != v}
    if not changes:
        return StepResult(True, "settings already in place", 0.0, noop=True)

    async def body(conn: asyncpg.Connection) -> str:
        for name, value in sorted(changes.items()):
            await conn.execute(f"ALTER SYSTEM SET {name} = {int(value)}")
        await conn.execute("SELECT pg_reload_conf()")
        return "set " + ", ".join(f"{k}={v}ms" for k, v in sorted(changes.items()))

    return await run_on(spec, connect_timeout, body)


# Physical slots reserve WAL at once (from the last checkpoint's redo point, also
# on a standby), so nothing the member needs is recycled before it connects.
CREATE_MEMBER_SLOTS_SQL = """
SELECT count(pg_create_physical_replication_slot(n, true)) FROM unnest($1::text[]) AS n
 WHERE n NOT IN (SELECT slot_name FROM pg_replication_slots)
"""


def literal(text: str) -> str:
    """A SQL string literal (ALTER SYSTEM takes no bind parameters)."""
    return "'" + text.replace("'", "''") + "'"


async def set_standby_names(
    spec: NodeSpec, value: str, *, connect_timeout: float
) -> StepResult:
    """ALTER SYSTEM SET synchronous_standby_names = ``value`` and reload (idempotent;
    works on a replica too, where it takes effect once the node is promoted)."""

    async def body(conn: asyncpg.Connection) -> str:
        await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = {literal(value)}")
        await conn.execute("SELECT pg_reload_conf()")
        shown = value or "'' (asynchronous)"
        return f"synchronous_standby_names = {shown}"

    return await run_on(spec, connect_timeout, body)
