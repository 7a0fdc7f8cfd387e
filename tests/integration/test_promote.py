"""act.promote against real PostgreSQL: fast, guarded (never twice), verified on a new
timeline, and honest about what it does not know."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from hacontrol.core.model import NodeSpec
from hacontrol.io import steps as act
from hacontrol.testing import LocalCluster, processes
from hacontrol.testing.local_node import free_port

pytestmark = pytest.mark.integration


def spec(cluster: LocalCluster, name: str) -> NodeSpec:
    return next(s for s in cluster.node_specs() if s.name == name)


async def test_promote_is_fast_verified_and_never_twice(cluster: LocalCluster) -> None:
    pg2 = spec(cluster, "pg2")
    result = await act.promote(pg2, connect_timeout=2, wait_s=10)
    assert result.ok and not result.noop, result.detail
    assert result.detail == "promoted; timeline 2"
    # pg_promote(wait => true) alone would take at least 100 ms; leave room for a busy machine.
    print(f"promote took {result.duration_s * 1000:.0f} ms")
    assert result.duration_s < 1.0
    assert cluster.node("pg2").query("SELECT pg_is_in_recovery()")[0][0] is False
    again = await act.promote(pg2, connect_timeout=2, wait_s=10)
    assert again.ok and again.noop and again.detail == "already a primary"
    # Still timeline 2: the guard did not promote a second time.
    assert cluster.node("pg2").query(
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")[0][0] == "00000002"


async def test_promote_reports_what_it_knows(cluster: LocalCluster) -> None:
    # Nothing listens: certainly nothing was sent.
    nobody = NodeSpec("nobody", f"host=127.0.0.1 port={free_port()} user=postgres")
    refused = await act.promote(nobody, connect_timeout=1, wait_s=1)
    assert not refused.ok and refused.detail.startswith("cannot connect"), refused.detail

    # The startup process cannot act on the request in time: sent, outcome unknown.
    pg3 = cluster.node("pg3")
    startup = int(pg3.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'startup'")[0][0])
    processes.send([startup], signal.SIGSTOP)
    try:
        started = time.monotonic()
        stuck = await act.promote(spec(cluster, "pg3"), connect_timeout=2, wait_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        processes.send([startup], signal.SIGCONT)
    assert not stuck.ok
    assert stuck.detail == "still in recovery 0.5 s after pg_promote"
    assert not stuck.detail.startswith(("cannot connect", "not attempted"))
    assert elapsed < 2.0
    # The request stands: once the startup process runs again, the node is promoted.
    for _ in range(500):
        if pg3.query("SELECT pg_is_in_recovery()")[0][0] is False:
            break
        await asyncio.sleep(0.02)
    assert pg3.query("SELECT pg_is_in_recovery()")[0][0] is False
