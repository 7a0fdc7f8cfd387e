"""Rejoining a fenced old primary as a replica of the new primary.

The procedure, each step reported through ``record(kind, fields)`` for the
journal:

1. check the new primary is a primary (nothing is touched otherwise);
2. stop the node cleanly if it runs (fast, then immediate);
3. make its data follow the new primary: restart as is (after a clean
   switchover nothing diverged), ``pg_rewind`` (which first runs crash recovery
   itself when the node had crashed, PostgreSQL >= 13), or — if allowed — a
   fresh base backup that keeps the old data directory renamed;
4. write standby.signal + primary_conninfo (the node also stays read-only);
5. start it and verify it streams from the new primary (both sides agree);
6. lift the read-only fence over SQL.

A method that fails leaves the node stopped before the next is tried; when
every method fails the node is left stopped (and still fenced), never running
as a primary.

A step the driver refuses because the data directory is not proven to be the
node's ends the rejoin at once: every other method would act on the same
directory, which may be another node's (even the new primary's). A rejoin that
ends before any step changed the node reports ``attempted=False``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hacontrol.core.model import NodeSpec
from hacontrol.io import steps as act
from hacontrol.io.drivers.base import DriverResult, NodeDriver, Step
from hacontrol.io.dsn import standby_conninfo
from hacontrol.io.pg import connect
from hacontrol.redact import redact_dsn

Record = Callable[[str, dict[str, Any]], None]

RESTART = "restart"
REWIND = "rewind"
BASEBACKUP = "basebackup"


@dataclass(frozen=True, slots=True)
class RejoinResult:
    """What a rejoin did: ok, the method that worked, and every driver step."""

    node: str
    ok: bool
    detail: str
    method: str | None = None
    steps: tuple[DriverResult, ...] = field(default=())
    duration_s: float = 0.0
    # The node was left stopped (a failed rejoin never leaves it running).
    stopped: bool = False
    # False: the rejoin failed before any step changed the node.
    attempted: bool = True


def methods_for(
    driver: NodeDriver, *, allow_basebackup: bool, rewind: bool = True
) -> list[str]:
    """The methods a rejoin will try, in order, with this driver."""
    chosen: list[str] = []
    if not rewind:
        chosen.append(RESTART)
    if driver.can(Step.REWIND):
        chosen.append(REWIND)
    if allow_basebackup and driver.can(Step.BASEBACKUP):
        chosen.append(BASEBACKUP)
    return chosen


def missing_steps(driver: NodeDriver, *, allow_basebackup: bool, rewind: bool = True) -> list[str]:
    """Driver steps a rejoin needs that ``driver`` lacks (empty: it can try)."""
    needed = [Step.STATUS, Step.STOP, Step.START, Step.STANDBY_CONFIG]
    missing = [str(s) for s in needed if not driver.can(s)]
    if not methods_for(driver, allow_basebackup=allow_basebackup, rewind=rewind):
        missing.append("rewind" + (" or basebackup" if allow_basebackup else ""))
    return missing


async def rejoin(
    node: NodeSpec,
    primary: NodeSpec,
    driver: NodeDriver,
    *,
    allow_basebackup: bool,
    timeout: float,
    record: Record,
    connect_timeout: float = 2.0,
    rewind: bool = True,
    slot: str | None = None,
    dbname: str | None = None,
) -> RejoinResult:
    """Bring ``node`` back as a streaming replica of ``primary``.

    ``timeout`` bounds the wait for the node to stream after each start (driver
    steps have their own timeouts). ``rewind=False`` first tries a plain restart
    as a replica (right after a clean switchover nothing diverged) and falls back
    to pg_rewind. ``slot``: the member slot it streams through, created on the
    primary before the node starts; ``dbname``: the database in its primary_conninfo
    for the slot sync worker (PostgreSQL 17+). Never raises for node trouble.
    """
    started = time.monotonic()
    steps: list[DriverResult] = []

    def done(ok: bool, detail: str, method: str | None = None, stopped: bool = False,
             *, attempted: bool = True) -> RejoinResult:
        result = RejoinResult(node.name, ok, detail, method, tuple(steps),
                              time.monotonic() - started, stopped, attempted)
        record("rejoin_finished", {"node": node.name, "ok": ok, "method": method,
                                   "detail": detail, "stopped": stopped,
                                   "duration_s": round(result.duration_s, 3)})
        return result

    async def step(method: str | None, coro: Any) -> DriverResult:
        result: DriverResult = await coro
        steps.append(result)
        record("rejoin_step", {"node": node.name, "method": method, **result.fields()})
        return result

    chosen = methods_for(driver, allow_basebackup=allow_basebackup, rewind=rewind)
    record("rejoin_started", {
        "node": node.name, "primary": primary.name, "driver": driver.describe(),
        "methods": chosen, "allow_basebackup": allow_basebackup,
        "primary_conninfo": conninfo_for_journal(primary, node.name),
    })
    if node.name == primary.name:
        return done(False, f"{node.name} cannot rejoin itself as its own replica",
                    attempted=False)
    missing = missing_steps(driver, allow_basebackup=allow_basebackup, rewind=rewind)
    if missing:
        return done(False, f"rejoin of {node.name} not possible with {driver.describe()}: "
                    f"missing {', '.join(missing)}; rejoin it by hand", attempted=False)
    problem = await _primary_problem(primary, connect_timeout)
    if problem:
        return done(False, f"not rejoining {node.name}: {problem}", attempted=False)

    stopped = await _ensure_stopped(driver, lambda c: step(None, c))
    if stopped.refused:
        return done(False, f"rejoin of {node.name} not attempted: {stopped.detail}",
                    attempted=False)
    if not stopped.ok:
        return done(False, f"could not stop {node.name}: {stopped.detail}")

    conninfo = standby_conninfo(primary, node.name, dbname=dbname)
    failures: list[str] = []
    for method in chosen:
        if method == REWIND:
            # A just-promoted primary's control file still names the old timeline
            # until its first checkpoint, and pg_rewind would then see nothing to do.
            checkpoint = await _checkpoint(primary, connect_timeout, driver.timeout_hint())
            record("rejoin_step", {"node": node.name, "method": method, "step": "checkpoint",
                                   "ok": not checkpoint, "detail": checkpoint or "done"})
            prepared = await step(method, driver.rewind(primary.dsn))
        elif method == BASEBACKUP:
            prepared = await step(method, driver.basebackup(primary.replication_dsn or primary.dsn))
        else:
            prepared = DriverResult(RESTART, True, "no rewind needed")
        if prepared.refused:
            return done(False, f"rejoin of {node.name} abandoned: {prepared.detail}")
        if not prepared.ok:
            failures.append(f"{method}: {prepared.detail}")
            continue
        use_slot = slot or ""
        if slot:
            missing_slot = await act.ensure_member_slot(primary, slot,
                                                        connect_timeout=connect_timeout)
            # Without its slot it still streams (the controller sets it later).
            use_slot = "" if missing_slot else slot
            record("rejoin_step", {"node": node.name, "method": method, "step": "slot",
                                   "ok": missing_slot is None,
                                   "detail": f"streams without its slot: {missing_slot}"
                                   if missing_slot else f"member slot {slot} in place"})
        configured = await step(method, driver.write_standby_config(conninfo, use_slot))
        if configured.refused:
            return done(False, f"rejoin of {node.name} abandoned: {configured.detail}")
        if not configured.ok:
            failures.append(f"{method}: {configured.detail}")
            break  # no start without standby.signal: it would come up as a primary
        launched = await step(method, driver.start())
        if launched.refused:
            return done(False, f"rejoin of {node.name} abandoned after {method}: "
                        f"{launched.detail}; it is left stopped and fenced", stopped=True)
        streaming = ""
        if launched.ok:
            streaming = await _wait_streaming(node, primary, timeout, connect_timeout)
            record("rejoin_step", {"node": node.name, "method": method, "step": "verify",
                                   "ok": not streaming, "detail": streaming or "streaming"})
            if not streaming:
                lifted = await act.unfence(node, connect_timeout=connect_timeout)
                record("rejoin_step", {"node": node.name, "method": method, "step": "unfence",
                                       "ok": lifted.ok,
                                       "detail": "read-only setting lifted" if lifted.ok
                                       else lifted.detail})
                note = "" if lifted.ok else f" (read-only setting not lifted: {lifted.detail})"
                extra = f"; {prepared.detail}" if method != RESTART else ""
                return done(True, f"{node.name} streams from {primary.name} after {method}"
                            f"{extra}{note}", method)
        failures.append(f"{method}: {launched.detail if not launched.ok else streaming}")
        halted = await _ensure_stopped(driver, _bound(step, method))
        if not halted.ok:
            return done(False, f"rejoin of {node.name} failed ({'; '.join(failures)}) and it "
                        f"could not be stopped: {halted.detail}; it stays fenced")
    return done(False, f"rejoin of {node.name} failed: {'; '.join(failures) or 'no method'};"
                " it is left stopped and fenced", stopped=True)


def _bound(
    step: Callable[[str | None, Any], Any], method: str
) -> Callable[[Any], Any]:
    def call(coro: Any) -> Any:
        return step(method, coro)

    return call


async def _ensure_stopped(driver: NodeDriver, step: Callable[[Any], Any]) -> DriverResult:
    """Stop the node if it runs: fast, then immediate. ok when it is stopped."""
    state: DriverResult = await step(driver.status())
    if state.running is False:
        return state
    for mode in ("fast", "immediate"):
        result: DriverResult = await step(driver.stop(mode))
        if result.ok or result.refused:
            return result
    return result


async def _checkpoint(primary: NodeSpec, connect_timeout: float, timeout: float) -> str:
    """CHECKPOINT on ``primary``; '' when done, else why not (the rewind still runs)."""
    try:
        conn = await connect(primary.dsn, connect_timeout, statement_timeout=timeout)
    except Exception as exc:
        return f"cannot connect to {primary.name}: {type(exc).__name__}"
    try:
        await conn.execute("CHECKPOINT")
        return ""
    except Exception as exc:
        return f"CHECKPOINT on {primary.name} failed: {type(exc).__name__}: {exc}"
    finally:
        conn.terminate()


async def _primary_problem(primary: NodeSpec, connect_timeout: float) -> str:
    """Why ``primary`` cannot be rejoined to ('' when it is a reachable primary)."""
    try:
        conn = await connect(primary.dsn, connect_timeout)
    except Exception as exc:
        return f"cannot connect to {primary.name}: {type(exc).__name__}: {exc}"
    try:
        if await conn.fetchval("SELECT pg_is_in_recovery()"):
            return f"{primary.name} is not a primary"
        return ""
    except Exception as exc:
        return f"cannot query {primary.name}: {type(exc).__name__}: {exc}"
    finally:
        conn.terminate()


async def _wait_streaming(
    node: NodeSpec, primary: NodeSpec, timeout: float, connect_timeout: float
) -> str:
    """'' once ``node`` is in recovery with a streaming WAL receiver and ``primary``
    lists it as streaming; else why not, after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "not checked"
    while True:
        last = await _streaming_problem(node, primary, connect_timeout)
        if not last or last.startswith("came up as a primary"):
            return last
        if time.monotonic() >= deadline:
            return f"not streaming from {primary.name} after {timeout:g} s ({last})"
        await asyncio.sleep(0.05)


async def _streaming_problem(node: NodeSpec, primary: NodeSpec, connect_timeout: float) -> str:
    try:
        conn = await connect(node.dsn, connect_timeout)
    except Exception as exc:
        return f"cannot connect: {type(exc).__name__}"
    try:
        row = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS r, (SELECT status FROM pg_stat_wal_receiver) AS s"
        )
    except Exception as exc:
        return f"cannot query: {type(exc).__name__}"
    finally:
        conn.terminate()
    if not row["r"]:
        return "came up as a primary"
    if row["s"] != "streaming":
        return f"WAL receiver {row['s'] or 'not running'}"
    try:
        pconn = await connect(primary.dsn, connect_timeout)
    except Exception as exc:
        return f"cannot connect to {primary.name}: {type(exc).__name__}"
    try:
        state = await pconn.fetchval(
            "SELECT state FROM pg_stat_replication WHERE application_name = $1"
            " ORDER BY state = 'streaming' DESC LIMIT 1",
            node.name,
        )
    except Exception as exc:
        return f"cannot query {primary.name}: {type(exc).__name__}"
    finally:
        pconn.terminate()
    if state != "streaming":
        return f"{primary.name} does not see it streaming ({state or 'no row'})"
    return ""


def conninfo_for_journal(primary: NodeSpec, node: str) -> str:
    """The primary_conninfo a rejoin writes, with any password masked."""
    return redact_dsn(standby_conninfo(primary, node))
