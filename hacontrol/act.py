"""Carrying out actions on nodes over SQL. Each step is idempotent or guarded.

Nothing here decides anything: the decision core says what to do and why,
these functions do it and report what happened.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hacontrol.model import NodeSpec
from hacontrol.pgconn import connect, endpoint


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one action did: ok or not, a one-line detail, and how long it took."""

    ok: bool
    detail: str
    duration_s: float = 0.0
    # True when the step found nothing to do (already done earlier).
    noop: bool = False


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


async def promote(spec: NodeSpec, *, connect_timeout: float, wait_s: float) -> StepResult:
    """Promote ``spec``'s node, guarded: re-read its role first, never promote twice.

    Ends the client sessions that hold back the node's replay (a promote replays all
    WAL received first; a reporting query in a recovery conflict would delay it for
    max_standby_streaming_delay, or for ever at -1), sends
    ``pg_promote(wait => false)`` and then watches ``pg_is_in_recovery()``
    closely (``pg_promote(wait => true)`` checks only every 100 ms, which a
    switchover's write-unavailability window would pay in full). Verifies
    afterwards that the node is out of recovery on a timeline above the one it
    replayed. Never retried by the caller: pg_promote is not idempotent across a
    crash. A detail starting with "cannot connect" or "not attempted" means the
    promote request was certainly not sent; any other failure leaves the outcome
    uncertain.
    """
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, connect_timeout, statement_timeout=wait_s + connect_timeout)
    except Exception as exc:
        return StepResult(False, f"cannot connect: {_error(exc)}", time.monotonic() - started)
    sent = False
    try:
        before = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS r, (pg_control_checkpoint()).timeline_id AS tli"
        )
        if not before["r"]:
            return StepResult(True, "already a primary", time.monotonic() - started, noop=True)
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
        note = "; default_transaction_read_only is on" if row["ro"] == "on" else ""
        if ended:
            note += f"; {ended} session(s) holding back its replay ended"
        return StepResult(True, f"promoted; timeline {row['tli']}{note}", elapsed)
    except Exception as exc:
        # Before pg_promote was sent nothing can have happened.
        prefix = "" if sent else "not attempted: cannot read its role: "
        return StepResult(False, prefix + _error(exc), time.monotonic() - started)
    finally:
        conn.terminate()


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


def standby_conninfo(primary: NodeSpec, replica_name: str) -> str:
    """primary_conninfo for a replica of ``primary``: its replication DSN, else its DSN
    without dbname, with the replica's name as application_name."""
    base = primary.replication_dsn or primary.dsn
    params = {k: v for k, v in conninfo_to_dict(base).items() if k != "dbname"}
    params["application_name"] = replica_name
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


async def repoint(
    replica: NodeSpec, primary: NodeSpec, *, connect_timeout: float
) -> StepResult:
    """Make ``replica`` stream from ``primary`` (ALTER SYSTEM primary_conninfo + reload).

    PostgreSQL >= 13 restarts the WAL receiver on reload; recovery_target_timeline
    'latest' (the default) makes it follow the new timeline.
    """
    started = time.monotonic()
    conninfo = standby_conninfo(primary, replica.name)
    try:
        conn = await connect(replica.dsn, connect_timeout)
    except Exception as exc:
        return StepResult(False, f"cannot connect: {_error(exc)}", time.monotonic() - started)
    try:
        if not await conn.fetchval("SELECT pg_is_in_recovery()"):
            return StepResult(False, "node is a primary, not a replica", time.monotonic() - started)
        current = await conn.fetchval("SELECT current_setting('primary_conninfo')")
        if current == conninfo:
            # Same target already: just make the receiver retry now.
            await conn.execute("SELECT pg_reload_conf()")
            return StepResult(True, "already pointed there", time.monotonic() - started, noop=True)
        await conn.execute(f"ALTER SYSTEM SET primary_conninfo = {_literal(conninfo)}")
        await conn.execute("SELECT pg_reload_conf()")
        host, port = endpoint(conninfo)
        return StepResult(True, f"primary_conninfo -> {host}:{port}", time.monotonic() - started)
    except Exception as exc:
        return StepResult(False, _error(exc), time.monotonic() - started)
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
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, connect_timeout)
    except Exception as exc:
        return StepResult(False, f"cannot connect: {_error(exc)}", time.monotonic() - started)
    try:
        await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await conn.execute("SELECT pg_reload_conf()")
        terminated = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return StepResult(
            True, f"read-only; {terminated} client session(s) ended", time.monotonic() - started
        )
    except Exception as exc:
        return StepResult(False, _error(exc), time.monotonic() - started)
    finally:
        conn.terminate()


async def unfence(spec: NodeSpec, *, connect_timeout: float) -> StepResult:
    """Undo :func:`fence` (used when a switchover is rolled back or a node rejoined)."""
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, connect_timeout)
    except Exception as exc:
        return StepResult(False, f"cannot connect: {_error(exc)}", time.monotonic() - started)
    try:
        await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await conn.execute("SELECT pg_reload_conf()")
        return StepResult(True, "writable again", time.monotonic() - started)
    except Exception as exc:
        return StepResult(False, _error(exc), time.monotonic() - started)
    finally:
        conn.terminate()


async def ensure_settings(
    spec: NodeSpec, wanted_ms: dict[str, int], seen_ms: dict[str, int], *, connect_timeout: float
) -> StepResult:
    """Apply managed server settings (ALTER SYSTEM + reload) where they differ."""
    started = time.monotonic()
    changes = {k: v for k, v in wanted_ms.items() if seen_ms.get(k) != v}
    if not changes:
        return StepResult(True, "settings already in place", 0.0, noop=True)
    try:
        conn = await connect(spec.dsn, connect_timeout)
    except Exception as exc:
        return StepResult(False, f"cannot connect: {_error(exc)}", time.monotonic() - started)
    try:
        for name, value in sorted(changes.items()):
            await conn.execute(f"ALTER SYSTEM SET {name} = {int(value)}")
        await conn.execute("SELECT pg_reload_conf()")
        text = ", ".join(f"{k}={v}ms" for k, v in sorted(changes.items()))
        return StepResult(True, f"set {text}", time.monotonic() - started)
    except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
        return StepResult(False, _error(exc), time.monotonic() - started)
    finally:
        conn.terminate()


def _literal(text: str) -> str:
    """A SQL string literal (ALTER SYSTEM takes no bind parameters)."""
    return "'" + text.replace("'", "''") + "'"
