"""The planned switchover procedure: zero acknowledged writes lost.

1. Check the old primary is a primary and the target a replica within the lag bound.
2. Fence the old primary (read-only, client sessions ended) — the
   write-unavailability window starts here.
3. Wait until no session that began before the fence is left, read its LSN,
   and wait until the target has replayed it (the catch-up timeout bounds
   this and every later wait before the promote; on timeout: roll back).
4. With a driver that can stop and start the node: stop it cleanly. A clean
   shutdown writes a shutdown checkpoint and the walsenders send everything up
   to it before they exit; wait until the target has replayed past that
   checkpoint (read with pg_controldata when the driver can). Without a
   driver: re-read the LSN until it stays put (a rogue session that switched
   itself back to read-write could still write; libpq read-write clients skip
   a fenced node).
5. Promote the target — the window ends when it is seen out of recovery.
6. Repoint the other replicas to the target.
7. Rejoin the old primary as a replica (restart with standby configuration, no
   rewind needed after a clean shutdown; pg_rewind as a fallback). Without a
   driver it stays a fenced, read-only primary that needs a rejoin.

Rolling back (steps 2–4 failed): start the old primary again if it was
stopped, lift the fence, report FAILED "rolled back: ...". The target is never
promoted while the old primary may still take writes. A switchover that fails
before the fence reports FAILED "not started: ..." with ``attempted=False``:
nothing changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hacontrol.core.actions import ActionOutcome, Switchover
from hacontrol.core.model import NodeSpec, format_lsn, parse_lsn
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.slot_names import member_slot_name
from hacontrol.io import steps as act
from hacontrol.io.drivers.base import NodeDriver, NullDriver, Step
from hacontrol.io.errors import short_error
from hacontrol.io.pg import connect
from hacontrol.io.procedures.rejoin import rejoin

Record = Callable[[str, dict[str, Any]], None]

# Sessions that began before the fence get this long to end after being terminated.
SETTLE_S = 1.0


@dataclass(frozen=True, slots=True)
class SwitchoverContext:
    """What the procedure needs from the controller."""

    specs: Mapping[str, NodeSpec]
    drivers: Mapping[str, NodeDriver]
    record: Record
    # From the fence until the target has replayed the old primary's last WAL.
    catchup_timeout: float = 10.0
    connect_timeout: float = 2.0
    promote_timeout: float = 30.0
    # How long the rejoined old primary may take to stream from the target.
    rejoin_timeout: float = 30.0
    # A target further behind than this is refused before anything is touched.
    max_lag_bytes: int | None = 16 * 1024 * 1024
    allow_basebackup: bool = False
    # Member slots: created on the target before the fence (every other node's),
    # used by the repointed replicas and the rejoined old primary.
    member_slots: bool = True
    # The database the replicas' primary_conninfo names for the slot sync worker.
    sync_dbname: str | None = None
    # Stop the old primary cleanly when its driver can (the zero-loss way).
    stop_old_primary: bool = True
    poll_interval: float = 0.005

    def driver(self, node: str) -> NodeDriver:
        """The node's driver, or the SQL-only one."""
        return self.drivers.get(node) or NullDriver(node)


class _RollBack(Exception):
    """A step before the promote failed: undo the fence."""


async def run_switchover(ctx: SwitchoverContext, action: Switchover) -> ActionOutcome:
    """Carry out ``action``; one outcome: SUCCEEDED (``rejoined`` names the old primary
    when it streams from the target), FAILED (nothing changed, or rolled back), or
    UNCERTAIN (the promote may or may not have happened). Never raises for node trouble."""
    return await _Procedure(ctx, action).run()


class _Procedure:
    def __init__(self, ctx: SwitchoverContext, action: Switchover) -> None:
        self.ctx = ctx
        self.action = action
        self.old = ctx.specs[action.old_primary]
        self.target = ctx.specs[action.target]
        self.driver = ctx.driver(self.old.name)
        self.stopped = False
        self.fenced_at: float | None = None
        # Seconds from the start of the fence to the end of each step: where the
        # write-unavailability window goes (journaled with the promote).
        self.marks: dict[str, float] = {}

    def mark(self, step: str) -> None:
        if self.fenced_at is not None:
            self.marks[step] = round(time.monotonic() - self.fenced_at, 4)

    def record(self, kind: str, **fields: Any) -> None:
        self.ctx.record(kind, {"old_primary": self.old.name, "target": self.target.name,
                               **fields})

    def outcome(self, status: OutcomeStatus, detail: str,
                rejoined: frozenset[str] = frozenset(), *, attempted: bool = True
                ) -> ActionOutcome:
        self.record("switchover_finished", status=str(status), detail=detail,
                    rejoined=sorted(rejoined))
        return ActionOutcome(self.action, status, detail, rejoined, attempted=attempted)

    async def run(self) -> ActionOutcome:
        ctx = self.ctx
        self.record("switchover_started", driver=self.driver.describe(),
                    catchup_timeout=ctx.catchup_timeout)
        problem = await self.check()
        if problem:
            return self.outcome(OutcomeStatus.FAILED, f"not started: {problem}",
                                attempted=False)
        if ctx.member_slots:
            slots = tuple(member_slot_name(n) for n in sorted(ctx.specs) if n != self.target.name)
            missing = await act.ensure_member_slot(self.target, slots,
                                                   connect_timeout=ctx.connect_timeout)
            self.record("switchover_step", step="slots", ok=missing is None,
                        detail=missing or f"member slots {', '.join(slots)} in place")
        self.fenced_at = time.monotonic()
        deadline = self.fenced_at + ctx.catchup_timeout
        fenced = await act.fence(self.old, connect_timeout=ctx.connect_timeout)
        self.mark("fenced")
        self.record("switchover_step", step="fence", ok=fenced.ok, detail=fenced.detail)
        if not fenced.ok:
            if not fenced.attempted:
                return self.outcome(OutcomeStatus.FAILED, f"not started: fence of "
                                    f"{self.old.name} failed: {fenced.detail}",
                                    attempted=False)
            return await self.roll_back(f"fence of {self.old.name} failed: {fenced.detail}")
        try:
            final = await self.drain(deadline)
        except _RollBack as exc:
            return await self.roll_back(str(exc))
        promoted = await act.promote(self.target, connect_timeout=ctx.connect_timeout,
                                     wait_s=ctx.promote_timeout)
        window = time.monotonic() - self.fenced_at
        self.mark("promoted")
        self.record("switchover_step", step="promote", ok=promoted.ok, detail=promoted.detail,
                    window_s=round(window, 3), marks=dict(self.marks))
        if not promoted.ok:
            if not promoted.attempted:
                return await self.roll_back(f"cannot reach {self.target.name} to promote it: "
                                            f"{promoted.detail}")
            return self.outcome(
                OutcomeStatus.UNCERTAIN,
                f"promote of {self.target.name} uncertain: {promoted.detail}; {self.old.name} "
                f"left {'stopped' if self.stopped else 'fenced'}",
            )
        notes = [f"{self.target.name} promoted after catching up to {format_lsn(final)}",
                 f"write-unavailable {window:.3f} s"]
        notes += await self.repoint_others()
        rejoined, note = await self.rejoin_old()
        notes.append(note)
        return self.outcome(OutcomeStatus.SUCCEEDED, "; ".join(notes), rejoined)

    # -- steps

    async def check(self) -> str:
        """Why the switchover must not start ('' when it may)."""
        if self.old.name == self.target.name:
            return f"{self.target.name} is already the primary"
        try:
            old_lsn = await self._primary_lsn(self.old)
        except Exception as exc:
            return f"{self.old.name}: {short_error(exc)}"
        try:
            conn = await connect(self.target.dsn, self.ctx.connect_timeout)
        except Exception as exc:
            return f"cannot connect to {self.target.name}: {short_error(exc)}"
        try:
            row = await conn.fetchrow(
                "SELECT pg_is_in_recovery() AS r, pg_last_wal_receive_lsn()::text AS rx,"
                " pg_last_wal_replay_lsn()::text AS rp"
            )
        except Exception as exc:
            return f"cannot query {self.target.name}: {short_error(exc)}"
        finally:
            conn.terminate()
        if not row["r"]:
            return f"{self.target.name} is not a replica"
        positions = [p for p in (parse_lsn(row["rx"]), parse_lsn(row["rp"])) if p is not None]
        lag = old_lsn - max(positions) if positions else None
        limit = self.ctx.max_lag_bytes
        if lag is None:
            return f"{self.target.name} has no WAL position"
        if limit is not None and lag > limit:
            return f"{self.target.name} is {lag} bytes behind {self.old.name} (limit {limit})"
        return ""

    async def _primary_lsn(self, spec: NodeSpec) -> int:
        conn = await connect(spec.dsn, self.ctx.connect_timeout)
        try:
            row = await conn.fetchrow(
                "SELECT pg_is_in_recovery() AS r,"
                " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END"
                " AS lsn"
            )
        finally:
            conn.terminate()
        if row["r"]:
            raise RuntimeError(f"{spec.name} is not a primary")
        lsn = parse_lsn(row["lsn"])
        assert lsn is not None
        return lsn

    async def drain(self, deadline: float) -> int:
        """Everything the old primary acknowledged is replayed on the target; returns
        the position waited for. Raises _RollBack."""
        lsn = await self.settle()
        self.mark("settled")
        await self.wait_replayed(lsn, deadline, "the fenced primary's WAL")
        self.mark("caught_up")
        if self.ctx.stop_old_primary and self.driver.can(Step.STOP, Step.START, Step.STATUS):
            stop = await self.driver.stop("fast")
            self.mark("stopped")
            self.record("switchover_step", **stop.fields())
            if not stop.ok:
                raise _RollBack(f"clean stop of {self.old.name} failed: {stop.detail}")
            self.stopped = True
            checkpoint = await self.driver.final_lsn()
            self.mark("checkpoint_read")
            if checkpoint is not None:
                # Replayed past the start of the shutdown checkpoint record = replayed it.
                await self.wait_replayed(checkpoint + 1, deadline, "the shutdown checkpoint")
                self.mark("checkpoint_replayed")
                return checkpoint
            return lsn
        # No clean stop: the position must stay put once the target has it.
        for _ in range(20):
            again = await self._current_lsn()
            if again <= lsn:
                return lsn
            lsn = again
            await self.wait_replayed(lsn, deadline, "the fenced primary's WAL")
        raise _RollBack(f"{self.old.name} keeps writing WAL after the fence")

    async def settle(self) -> int:
        """Wait (bounded) until no client session that began before the fence is left,
        ending stragglers again; then the primary's WAL position."""
        try:
            conn = await connect(self.old.dsn, self.ctx.connect_timeout)
        except Exception as exc:
            why = f"cannot reach {self.old.name} after fencing: {short_error(exc)}"
            raise _RollBack(why) from None
        try:
            fence_ts = await conn.fetchval("SELECT clock_timestamp()")
            limit = time.monotonic() + SETTLE_S
            while True:
                left = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    " AND coalesce(application_name, '') NOT LIKE 'hacontrol%'"
                    " AND backend_start < $1",
                    fence_ts,
                )
                if not left or time.monotonic() >= limit:
                    break
                await asyncio.sleep(self.ctx.poll_interval)
            text = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        except Exception as exc:
            why = f"cannot read {self.old.name}'s WAL position: {short_error(exc)}"
            raise _RollBack(why) from None
        finally:
            conn.terminate()
        if left:
            self.record("switchover_step", step="settle", ok=False,
                        detail=f"{left} session(s) from before the fence still ending")
        lsn = parse_lsn(text)
        assert lsn is not None
        return lsn

    async def _current_lsn(self) -> int:
        try:
            return await self._primary_lsn(self.old)
        except Exception as exc:
            why = f"cannot read {self.old.name}'s WAL position: {short_error(exc)}"
            raise _RollBack(why) from None

    async def wait_replayed(self, lsn: int, deadline: float, what: str) -> None:
        """Return once the target has replayed up to ``lsn``; _RollBack at ``deadline``."""
        last: int | None = None
        conn = None
        try:
            while True:
                try:
                    if conn is None:
                        remaining = max(0.1, deadline - time.monotonic())
                        conn = await connect(self.target.dsn,
                                             min(self.ctx.connect_timeout, remaining))
                    text = await conn.fetchval("SELECT pg_last_wal_replay_lsn()::text")
                    last = parse_lsn(text)
                    if last is not None and last >= lsn:
                        self.record("switchover_step", step="caught_up", ok=True,
                                    detail=f"{self.target.name} replayed {format_lsn(last)} "
                                    f"({what}: {format_lsn(lsn)})")
                        return
                except Exception:
                    if conn is not None:
                        conn.terminate()
                    conn = None
                if time.monotonic() >= deadline:
                    raise _RollBack(
                        f"{self.target.name} did not replay {what} ({format_lsn(lsn)}) within "
                        f"{self.ctx.catchup_timeout:g} s (at {format_lsn(last)})"
                    )
                await asyncio.sleep(self.ctx.poll_interval)
        finally:
            if conn is not None:
                conn.terminate()

    async def roll_back(self, why: str) -> ActionOutcome:
        """Undo the fence (and the stop): the old primary takes writes again."""
        problems: list[str] = []
        if self.stopped:
            started = await self.driver.start()
            self.record("switchover_step", **{**started.fields(), "step": "rollback_start"})
            if not started.ok:
                problems.append(f"restart of {self.old.name} failed: {started.detail}")
        if not problems:
            lifted = await act.unfence(self.old, connect_timeout=self.ctx.connect_timeout)
            self.record("switchover_step", step="rollback_unfence", ok=lifted.ok,
                        detail=lifted.detail)
            if not lifted.ok:
                problems.append(f"unfence of {self.old.name} failed: {lifted.detail}")
        if problems:
            return self.outcome(OutcomeStatus.FAILED, f"roll back incomplete ({why}): "
                                f"{'; '.join(problems)}")
        return self.outcome(OutcomeStatus.FAILED,
                            f"rolled back: {why}; {self.old.name} is the primary again")

    def _slot(self, node: str) -> str | None:
        return member_slot_name(node) if self.ctx.member_slots else None

    async def repoint_others(self) -> list[str]:
        notes: list[str] = []
        for name, spec in sorted(self.ctx.specs.items()):
            if name in (self.old.name, self.target.name):
                continue
            result = await act.repoint(
                spec, self.target, connect_timeout=self.ctx.connect_timeout,
                slot=self._slot(name),
                dbname=self.ctx.sync_dbname,
            )
            self.record("switchover_step", step="repoint", node=name, ok=result.ok,
                        detail=result.detail)
            if not result.ok:
                notes.append(f"repoint of {name} failed: {result.detail}")
        return notes

    async def rejoin_old(self) -> tuple[frozenset[str], str]:
        name = self.old.name
        if not self.stopped:
            return frozenset(), (f"{name} left fenced (read-only) — needs rejoin: "
                                 f"{self.driver.describe()} cannot stop and restart it")
        result = await rejoin(
            self.old, self.target, self.driver, allow_basebackup=self.ctx.allow_basebackup,
            timeout=self.ctx.rejoin_timeout, record=self.ctx.record,
            connect_timeout=self.ctx.connect_timeout, rewind=False, slot=self._slot(name),
            dbname=self.ctx.sync_dbname,
        )
        if result.ok:
            return frozenset({name}), f"{name} rejoined as a replica ({result.method})"
        return frozenset(), f"{name} left stopped and fenced — needs rejoin: {result.detail}"


