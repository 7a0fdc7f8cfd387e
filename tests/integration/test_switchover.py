"""Planned switchover against real PostgreSQL clusters: a writer through the
multi-host DSN loses no acknowledged write, the old primary comes back as a
replica, and a target that cannot catch up makes the procedure roll back."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import psycopg
import pytest

from hacontrol.core.actions import Switchover
from hacontrol.core.results import OutcomeStatus
from hacontrol.io.procedures.switchover import SwitchoverContext, run_switchover
from hacontrol.testing import LocalCluster, processes
from hacontrol.testing.checker import Ack, lost_writes
from hacontrol.testing.workload import Writer, create_table, read_ids

from .support import write_rows
from .test_rejoin import Recorder, local_driver

pytestmark = pytest.mark.integration


def context(cluster: LocalCluster, rec: Recorder, *, drivers: bool = True,
            catchup_timeout: float = 5.0) -> SwitchoverContext:
    names = [n.name for n in cluster.nodes]
    return SwitchoverContext(
        specs={s.name: s for s in cluster.node_specs()},
        drivers={n: local_driver(cluster, n) for n in names} if drivers else {},
        record=rec,
        catchup_timeout=catchup_timeout,
        rejoin_timeout=15,
    )


def longest_gap(acks: list[Ack], start: float, end: float) -> float:
    """The longest time between two acknowledged writes around [start, end]."""
    times = sorted(a.at for a in acks)
    before = [t for t in times if t <= start][-1:]
    during = [t for t in times if start < t <= end]
    after = [t for t in times if t > end][:1]
    span = before + during + after
    return max((b - a for a, b in itertools.pairwise(span)), default=float("inf"))


async def wait_acks(writer: Writer, port: int, count: int, timeout: float = 10.0) -> None:
    """Wait until the writer has ``count`` acknowledgements from the server on ``port``."""
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        if sum(1 for a in writer.acks_since(since) if a.port == port) >= count:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {count} acknowledged writes from port {port} within {timeout:g} s"
                       f" (last error: {writer.stats.last_error})")


async def switch_with_writer(
    cluster: LocalCluster, writer: Writer, old: str, new: str
) -> tuple[float, float]:
    """Switch ``old`` → ``new`` under load; returns (window inside the procedure,
    longest gap between acknowledged writes)."""
    rec = Recorder()
    await wait_acks(writer, cluster.node(old).port, 20)
    started = time.monotonic()
    outcome = await run_switchover(context(cluster, rec), Switchover(old, new, "test"))
    ended = time.monotonic()
    assert outcome.status is OutcomeStatus.SUCCEEDED, outcome.detail
    assert outcome.rejoined == frozenset({old}), outcome.detail
    await wait_acks(writer, cluster.node(new).port, 20)
    window = next(f["window_s"] for k, f in rec.records if f.get("step") == "promote")
    gap = longest_gap(writer.stats.acks, started, ended)
    print(f"switchover {old} -> {new}: write-unavailable {window:.3f} s inside the procedure,"
          f" longest gap between acknowledged writes {gap:.3f} s, whole procedure"
          f" {ended - started:.2f} s ({outcome.detail})")
    # The old primary is a replica of the new one, and so is the third node.
    assert cluster.primaries() == [new]
    for name in (n.name for n in cluster.nodes if n.name != new):
        cluster.wait_streaming(name, timeout=10, upstream=new)
    assert cluster.node(old).query("SHOW default_transaction_read_only")[0][0] == "off"
    return window, gap


async def test_switchover_both_ways_with_writer_loses_nothing(cluster: LocalCluster) -> None:
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with Writer(dsn, interval=0.005) as writer:
        await switch_with_writer(cluster, writer, "pg1", "pg2")
        await switch_with_writer(cluster, writer, "pg2", "pg1")
    stats = writer.stats
    present = read_ids(cluster.dsn("pg1"))
    assert len(stats.acks) > 100
    assert lost_writes(stats.acks, present) == []
    # Every replica has every write too.
    cluster.wait_replayed(cluster.current_lsn("pg1"), timeout=10)
    assert lost_writes(stats.acks, read_ids(cluster.dsn("pg2"))) == []


async def test_switchover_without_driver_leaves_old_primary_fenced(
    cluster: LocalCluster,
) -> None:
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    rec = Recorder()
    with Writer(dsn, interval=0.005) as writer:
        await wait_acks(writer, cluster.node("pg1").port, 20)
        outcome = await run_switchover(context(cluster, rec, drivers=False),
                                       Switchover("pg1", "pg2", "test"))
        await wait_acks(writer, cluster.node("pg2").port, 20)
    assert outcome.status is OutcomeStatus.SUCCEEDED, outcome.detail
    assert outcome.rejoined == frozenset()
    assert "needs rejoin" in outcome.detail
    # pg1 still runs as a primary on the old timeline, but read-only: no client writes.
    pg1 = cluster.node("pg1")
    assert pg1.is_running() and pg1.is_primary()
    assert pg1.query("SHOW default_transaction_read_only")[0][0] == "on"
    assert lost_writes(writer.stats.acks, read_ids(cluster.dsn("pg2"))) == []
    cluster.wait_streaming("pg3", timeout=10, upstream="pg2")


async def test_switchover_rolls_back_when_target_cannot_catch_up(
    cluster: LocalCluster,
) -> None:
    pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
    write_rows(cluster, "pg1", 10)
    cluster.wait_replayed(cluster.current_lsn("pg1"))
    receiver = int(pg2.query("SELECT pid FROM pg_stat_wal_receiver")[0][0])
    rec = Recorder()
    # A hung WAL receiver: pg2 answers queries and looks healthy, but gets no more WAL.
    processes.send([receiver], signal.SIGSTOP)
    try:
        write_rows(cluster, "pg1", 100)
        started = time.monotonic()
        outcome = await run_switchover(
            context(cluster, rec, catchup_timeout=1.0), Switchover("pg1", "pg2", "test")
        )
        elapsed = time.monotonic() - started
    finally:
        processes.send([receiver], signal.SIGCONT)
    print(f"aborted switchover took {elapsed:.2f} s: {outcome.detail}")
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail.startswith("rolled back:"), outcome.detail
    assert elapsed < 5
    # pg1 takes writes again through the multi-host DSN; pg2 is still a replica.
    assert pg1.query("SHOW default_transaction_read_only")[0][0] == "off"
    with psycopg.connect(cluster.multi_host_dsn(), autocommit=True) as conn:
        row = conn.execute("INSERT INTO filler (pad) VALUES ('after') RETURNING"
                           " inet_server_port()").fetchone()
    assert row is not None and row[0] == pg1.port
    assert cluster.primaries() == ["pg1"]
    assert pg1.is_running() and not pg2.is_primary()
    steps = [f.get("step") for k, f in rec.records if k == "switchover_step"]
    assert "promote" not in steps and "rollback_unfence" in steps
    cluster.wait_streaming("pg2", timeout=10, upstream="pg1")
