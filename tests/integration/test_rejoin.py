"""Rejoining a failed old primary as a replica, against real PostgreSQL clusters:
the pg_rewind path after a SIGKILL failover, and the base-backup path when a
rewind is impossible."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hacontrol.core.model import NodeSpec
from hacontrol.io import steps as act
from hacontrol.io.drivers.local import LocalDriver
from hacontrol.io.procedures.rejoin import BASEBACKUP, REWIND, RejoinResult, rejoin
from hacontrol.testing import LocalCluster

from .support import stop_receiver, write_rows

pytestmark = pytest.mark.integration


def local_driver(cluster: LocalCluster, name: str) -> LocalDriver:
    """The local driver of one LocalCluster node (its data directory, binaries, owner, log)."""
    node = cluster.node(name)
    return LocalDriver(
        name,
        node.data_dir,
        bindir=node.bindir,
        os_user=node.owner.name,
        log_file=node.log_path,
        timeout=30,
        basebackup_timeout=60,
        # Test clusters run without fsync; syncing the copy would only cost time.
        basebackup_args=("--no-sync",),
    )


class Recorder:
    """Collects what a procedure reports, as the controller's journal would."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.records.append((kind, fields))

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.records if k == kind]


def count(cluster: LocalCluster, name: str) -> int:
    return int(cluster.node(name).query("SELECT count(*) FROM filler")[0][0])


async def fail_over_diverged(cluster: LocalCluster) -> dict[str, NodeSpec]:
    """pg1 writes rows pg2 never gets, is SIGKILLed; pg2 is promoted, pg3 follows it,
    and pg2 takes writes of its own: pg1's history has forked from pg2's."""
    specs = {s.name: s for s in cluster.node_specs()}
    write_rows(cluster, "pg1", 50)
    cluster.wait_replayed(cluster.current_lsn("pg1"))
    stop_receiver(cluster, "pg2")
    write_rows(cluster, "pg1", 500)  # only on pg1 (and pg3): diverges from pg2
    cluster.node("pg1").kill()
    promoted = await act.promote(specs["pg2"], connect_timeout=2, wait_s=10)
    assert promoted.ok, promoted.detail
    repointed = await act.repoint(specs["pg3"], specs["pg2"], connect_timeout=2)
    assert repointed.ok, repointed.detail
    write_rows(cluster, "pg2", 200)
    return specs


def assert_replica_of(cluster: LocalCluster, name: str, primary: str) -> None:
    cluster.wait_streaming(name, timeout=10, upstream=primary)
    assert cluster.primaries() == [primary]
    lsn = cluster.current_lsn(primary)
    cluster.wait_replayed(lsn, [name], timeout=10)
    assert count(cluster, name) == count(cluster, primary)
    # The fence was lifted: promoted later, the node would take writes.
    setting = cluster.node(name).query("SHOW default_transaction_read_only")[0][0]
    assert setting == "off"


async def test_rejoin_after_sigkill_failover_rewinds(cluster: LocalCluster) -> None:
    specs = await fail_over_diverged(cluster)
    assert count(cluster, "pg2") == 250
    rec = Recorder()
    started = time.monotonic()
    result = await rejoin(
        specs["pg1"], specs["pg2"], local_driver(cluster, "pg1"),
        allow_basebackup=False, timeout=15, record=rec,
    )
    print(f"rejoin by pg_rewind took {time.monotonic() - started:.2f} s: {result.detail}")
    assert result.ok, result.detail
    assert result.method == REWIND
    rewind = [s for s in result.steps if s.step == "rewind"]
    assert rewind and "servers diverged" in rewind[0].output
    assert_replica_of(cluster, "pg1", "pg2")
    # pg1's own rows that pg2 never had are gone; it runs on its own port still.
    assert count(cluster, "pg1") == 250
    assert cluster.node("pg1").query("SHOW port")[0][0] == str(cluster.node("pg1").port)
    steps = [f["step"] for f in rec.kinds("rejoin_step")]
    assert steps[:3] == ["status", "checkpoint", "rewind"] and "verify" in steps
    assert rec.kinds("rejoin_finished")[0]["ok"] is True


async def test_rejoin_falls_back_to_base_backup_and_keeps_old_data(
    cluster: LocalCluster,
) -> None:
    specs = await fail_over_diverged(cluster)
    pg1 = cluster.node("pg1")
    # Without the WAL since its last checkpoint, neither crash recovery nor pg_rewind
    # can work out what pg1 changed: a rewind is impossible.
    removed = [p for p in (pg1.data_dir / "pg_wal").iterdir() if p.is_file()]
    for path in removed:
        path.unlink()
    assert removed
    marker = pg1.data_dir / "hacontrol-old-marker"
    marker.write_text("old data")
    driver = local_driver(cluster, "pg1")

    refused = await rejoin(specs["pg1"], specs["pg2"], driver, allow_basebackup=False,
                           timeout=10, record=Recorder())
    assert not refused.ok and refused.stopped
    assert "rewind" in refused.detail and not pg1.is_running()

    rec = Recorder()
    started = time.monotonic()
    result: RejoinResult = await rejoin(
        specs["pg1"], specs["pg2"], driver, allow_basebackup=True, timeout=15, record=rec,
    )
    print(f"rejoin by base backup took {time.monotonic() - started:.2f} s: {result.detail}")
    assert result.ok, result.detail
    assert result.method == BASEBACKUP
    assert [s.step for s in result.steps if not s.ok] == ["rewind"]
    kept = sorted(pg1.data_dir.parent.glob("pg1.old-*"))
    assert len(kept) == 1, kept
    assert (kept[0] / "hacontrol-old-marker").read_text() == "old data"
    assert (kept[0] / "PG_VERSION").exists()
    assert not marker.exists()
    assert_replica_of(cluster, "pg1", "pg2")
    assert cluster.node("pg1").query("SHOW port")[0][0] == str(pg1.port)
