"""Synchronous quorum mode against real clusters: no acknowledged write lost on a
failover, no promotion without the quorum, degradation/restoration, strict blocking.

The clusters start with LocalCluster(sync=True) (``ANY 1 (pg1, pg2, pg3)`` in every
node's postgresql.conf); the controller takes the setting over."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hacontrol.config import Config
from hacontrol.testing import LocalCluster
from hacontrol.testing.checker import lost_writes
from hacontrol.testing.workload import Writer, create_table, read_ids

from .support import ControllerThread, kinds, make_config, promotions, wait_until

pytestmark = pytest.mark.integration


def quorum_config(cluster: LocalCluster, tmp_path: Path, **replication: Any) -> Config:
    return make_config(
        cluster, tmp_path / "j.jsonl",
        replication={"synchronous": "quorum", "quorum": 1, **replication},
    )


def standby_names(cluster: LocalCluster, name: str) -> str:
    return str(cluster.node(name).query("SHOW synchronous_standby_names")[0][0])


def _ready(ct: ControllerThread) -> bool:
    return (
        ct.ctl.state.primary == "pg1"
        and ct.ctl.rounds >= 4
        and ct.ctl.state.sync_in_force is not None
    )


def test_failover_in_quorum_mode_loses_no_acknowledged_write(
    cluster_sync: LocalCluster, tmp_path: Path
) -> None:
    cluster = cluster_sync
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with ControllerThread(quorum_config(cluster, tmp_path)) as ct:
        wait_until(lambda: _ready(ct), 15, "the controller to adopt pg1 and its set")
        assert ct.ctl.state.sync_in_force is not None
        assert ct.ctl.state.sync_in_force.members == frozenset({"pg2", "pg3"})
        with Writer(dsn, interval=0.01, statement_timeout=1.0, max_duration=60) as writer:
            time.sleep(1.0)
            killed_at = time.monotonic()
            cluster.node("pg1").kill()
            wait_until(lambda: ct.ctl.state.primary in ("pg2", "pg3"), 30, "a new primary")
            new = str(ct.ctl.state.primary)
            wait_until(
                lambda: any(a.node == new for a in writer.acks_since(killed_at)), 30,
                f"writes acknowledged by {new}",
            )
            time.sleep(0.5)
        stats = writer.stats
        other = "pg3" if new == "pg2" else "pg2"
        # The set was given to the candidate before its promote and stays repaired.
        wait_until(lambda: standby_names(cluster, new) == f"ANY 1 ({other})", 10,
                   f"ANY 1 ({other}) on {new}")
        records = ct.journal()
    present = read_ids(cluster.dsn(new))
    acked = list(stats.acks)
    assert len([a for a in acked if a.at < killed_at]) > 20
    assert lost_writes(acked, present) == []
    assert promotions(records) == [new]
    started = kinds(records, "failover_started")[0]
    assert "enough of the synchronous set is reachable" in started["details"]["quorum"]


def test_no_promotion_while_the_quorum_is_not_reachable(
    cluster_sync: LocalCluster, tmp_path: Path
) -> None:
    cluster = cluster_sync
    with ControllerThread(quorum_config(cluster, tmp_path)) as ct:
        wait_until(lambda: _ready(ct), 15, "the controller to adopt pg1 and its set")
        # ANY 1 of (pg2, pg3): a failover needs both. The primary and pg3 die together.
        cluster.node("pg1").kill()
        cluster.node("pg3").kill()
        wait_until(lambda: kinds(ct.journal(), "quorum_not_reachable"), 15,
                   "a quorum_not_reachable event")
        time.sleep(2.0)
        records = ct.journal()
        assert promotions(records) == []
        assert cluster.primaries() == []
        event = kinds(records, "quorum_not_reachable")
        assert len(event) == 1 and event[0]["details"]["missing"] == ["pg3"]
        # pg3 comes back: the quorum is reachable, and the one with the most WAL wins.
        cluster.node("pg3").start()
        wait_until(lambda: ct.ctl.state.primary in ("pg2", "pg3"), 30, "a new primary")
        records = ct.journal()
    assert len(promotions(records)) == 1


def test_non_strict_degrades_when_both_replicas_are_down_and_restores(
    cluster_sync: LocalCluster, tmp_path: Path
) -> None:
    cluster = cluster_sync
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with ControllerThread(quorum_config(cluster, tmp_path)) as ct:
        wait_until(lambda: _ready(ct), 15, "the controller to adopt pg1 and its set")
        with Writer(dsn, interval=0.01, statement_timeout=1.0, max_duration=60) as writer:
            cluster.node("pg2").kill()
            cluster.node("pg3").kill()
            wait_until(lambda: kinds(ct.journal(), "sync_degraded"), 15, "sync_degraded")
            wait_until(lambda: standby_names(cluster, "pg1") == "", 10, "asynchronous pg1")
            degraded_at = time.monotonic()
            wait_until(lambda: len(writer.acks_since(degraded_at)) > 20, 10,
                       "writes to continue")
            cluster.node("pg2").start()
            cluster.node("pg3").start()
            wait_until(lambda: kinds(ct.journal(), "sync_restored"), 30, "sync_restored")
            wait_until(lambda: standby_names(cluster, "pg1") == "ANY 1 (pg2, pg3)", 10,
                       "ANY 1 (pg2, pg3) on pg1")
            restored_at = time.monotonic()
            wait_until(lambda: len(writer.acks_since(restored_at)) > 20, 10,
                       "synchronous writes")
        records = ct.journal()
    assert promotions(records) == []
    degraded = kinds(records, "sync_degraded")
    assert degraded[-1]["severity"] == "critical"
    assert "asynchronous" in degraded[-1]["message"]


def test_strict_mode_keeps_writes_blocked(cluster_sync: LocalCluster, tmp_path: Path) -> None:
    cluster = cluster_sync
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with ControllerThread(quorum_config(cluster, tmp_path, strict=True)) as ct:
        wait_until(lambda: _ready(ct), 15, "the controller to adopt pg1 and its set")
        cluster.node("pg2").kill()
        cluster.node("pg3").kill()
        wait_until(lambda: kinds(ct.journal(), "sync_writes_blocked"), 15,
                   "sync_writes_blocked")
        with Writer(dsn, interval=0.05, statement_timeout=0.5, max_duration=60) as writer:
            time.sleep(2.0)
            assert writer.stats.acks == []
            assert writer.stats.errors > 0
            cluster.node("pg2").start()
            started_at = time.monotonic()
            wait_until(lambda: writer.acks_since(started_at), 30, "writes to resume")
        records = ct.journal()
        # Never degraded: the local cluster's own ANY 1 (pg1, pg2, pg3) means the same
        # as ANY 1 (pg2, pg3) on pg1, and pg2's return may already have narrowed it.
        assert standby_names(cluster, "pg1") in (
            "ANY 1 (pg1, pg2, pg3)", "ANY 1 (pg2, pg3)", "ANY 1 (pg2)"
        )
    assert promotions(records) == []
    assert "writes on pg1 are blocked" in kinds(records, "sync_writes_blocked")[0]["message"]
