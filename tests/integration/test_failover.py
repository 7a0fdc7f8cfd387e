"""Automatic failover against real PostgreSQL clusters: the controller in a thread
(or a subprocess), faults injected with the LocalCluster helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from hacontrol.io.journal import Journal
from hacontrol.testing import LocalCluster
from hacontrol.testing.workload import create_table

from .support import (
    ControllerThread,
    kinds,
    make_config,
    promotions,
    stop_receiver,
    wait_until,
    write_rows,
)

pytestmark = pytest.mark.integration


def _adopted(ct: ControllerThread) -> bool:
    return ct.ctl.state.primary == "pg1" and ct.ctl.rounds >= 3


def _write_through_multi_host(cluster: LocalCluster) -> int:
    """One insert through the multi-host DSN; returns the port that acknowledged it."""
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO hacontrol_writes (id) VALUES (%s) RETURNING inet_server_port()",
            (int(time.time() * 1000),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_kill_primary_promotes_exactly_one_replica(cluster: LocalCluster, tmp_path: Path) -> None:
    with ControllerThread(make_config(cluster, tmp_path / "j.jsonl")) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        killed_at = time.monotonic()
        cluster.node("pg1").kill()
        wait_until(lambda: ct.ctl.state.primary == "pg2", 20, "pg2 to become primary")
        print(f"failover observed {time.monotonic() - killed_at:.2f} s after the kill")
        cluster.wait_streaming("pg3", timeout=15, upstream="pg2")
        port = _write_through_multi_host(cluster)
        time.sleep(1.0)  # a few more rounds: nothing else may happen
        records = ct.journal()
    assert promotions(records) == ["pg2"]
    assert port == cluster.node("pg2").port
    assert cluster.primaries() == ["pg2"]
    assert kinds(records, "failover_completed")[0]["node"] == "pg2"
    assert "pg1" in {r["node"] for r in kinds(records, "node_fenced")}


def test_replica_with_most_wal_is_chosen(cluster: LocalCluster, tmp_path: Path) -> None:
    # pg2 stops receiving and falls behind; pg3 keeps up. Name order would pick
    # pg2, so choosing pg3 shows that WAL position decides.
    stop_receiver(cluster, "pg2")
    write_rows(cluster, "pg1", 2000)
    cluster.wait_replayed(cluster.current_lsn("pg1"), nodes=["pg3"], timeout=15)
    journal = tmp_path / "j.jsonl"
    Journal(journal).append("primary_adopted", node="pg1")  # a controller that ran before
    cluster.node("pg1").kill()
    with ControllerThread(make_config(cluster, journal)) as ct:
        wait_until(lambda: ct.ctl.state.primary == "pg3", 20, "pg3 to become primary")
        # pg2 had no upstream at all: the controller points it at the new primary.
        cluster.wait_streaming("pg2", timeout=20, upstream="pg3")
        # Streaming is not replayed: wait until pg2 has everything pg3 has.
        cluster.wait_replayed(cluster.current_lsn("pg3"), nodes=["pg2"], timeout=20)
        records = ct.journal()
    assert promotions(records) == ["pg3"]
    started = kinds(records, "failover_started")[0]
    figures = {c["node"]: c for c in started["details"]["candidates"]}
    assert figures["pg2"]["lag_bytes"] > 0 and figures["pg3"]["lag_bytes"] == 0
    rows = cluster.node("pg2").query("SELECT count(*) FROM filler")
    assert rows[0][0] == 2000  # pg2 caught up from pg3 after the repoint


def test_priority_zero_is_never_promoted(cluster: LocalCluster, tmp_path: Path) -> None:
    config = make_config(cluster, tmp_path / "j.jsonl", priorities={"pg2": 0})
    with ControllerThread(config) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        cluster.node("pg1").kill()
        wait_until(lambda: ct.ctl.state.primary == "pg3", 20, "pg3 to become primary")
        records = ct.journal()
    assert promotions(records) == ["pg3"]


def test_lagging_replica_is_never_promoted(cluster: LocalCluster, tmp_path: Path) -> None:
    # pg2 may never be promoted and pg3 is far behind: there is no candidate.
    stop_receiver(cluster, "pg3")
    write_rows(cluster, "pg1", 10000)
    cluster.wait_replayed(cluster.current_lsn("pg1"), nodes=["pg2"], timeout=15)
    journal = tmp_path / "j.jsonl"
    Journal(journal).append("primary_adopted", node="pg1")
    cluster.node("pg1").kill()
    config = make_config(
        cluster, journal, priorities={"pg2": 0}, failover={"max_lag_bytes": 65536}
    )
    with ControllerThread(config) as ct:
        wait_until(lambda: kinds(ct.journal(), "no_candidate"), 20, "a no_candidate event")
        time.sleep(1.5)
        records = ct.journal()
    assert promotions(records) == []
    assert cluster.primaries() == []
    message = kinds(records, "no_candidate")[0]["message"]
    assert "pg3" in message and "max_lag_bytes" in message


def test_short_freeze_of_the_primary_is_not_a_failover(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with ControllerThread(make_config(cluster, tmp_path / "j.jsonl")) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        cluster.node("pg1").freeze()
        try:
            time.sleep(1.5)
        finally:
            cluster.node("pg1").thaw()
        time.sleep(4.0)
        records = ct.journal()
        assert ct.ctl.state.primary == "pg1"
    assert promotions(records) == []
    assert cluster.primaries() == ["pg1"]


def test_returning_old_primary_is_fenced(cluster: LocalCluster, tmp_path: Path) -> None:
    with ControllerThread(make_config(cluster, tmp_path / "j.jsonl")) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        old = cluster.node("pg1")
        old.kill()
        wait_until(lambda: ct.ctl.state.primary == "pg2", 20, "pg2 to become primary")
        old.start()
        started = time.monotonic()

        def fenced() -> bool:
            try:
                rows = old.query("SHOW default_transaction_read_only")
            except psycopg.Error:
                return False  # the fence ends client sessions, this probe's too
            return bool(rows and rows[0][0] == "on")

        wait_until(fenced, 10, "the returning old primary to be fenced", step=0.01)
        took = time.monotonic() - started
        print(f"old primary fenced {took:.3f} s after it accepted connections")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(old.dsn + " target_session_attrs=read-write", connect_timeout=2)
        port = _write_through_multi_host(cluster)
        records = ct.journal()
    assert port == cluster.node("pg2").port
    assert promotions(records) == ["pg2"]
    fences = [r for r in kinds(records, "action_finished") if r.get("action") == "Fence"]
    assert any(r["node"] == "pg1" and r["status"] == "succeeded" for r in fences)


def test_manual_mode_reports_and_does_not_promote(cluster: LocalCluster, tmp_path: Path) -> None:
    config = make_config(cluster, tmp_path / "j.jsonl", mode="manual")
    with ControllerThread(config) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        cluster.node("pg1").kill()
        wait_until(lambda: kinds(ct.journal(), "manual_failover_needed"), 20,
                   "a manual_failover_needed event")
        time.sleep(1.5)
        records = ct.journal()
    assert promotions(records) == []
    assert cluster.primaries() == []


def _start_controller(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hacontrol", "run", "--config", str(config), "--json-logs"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_controller_killed_after_promotion_does_not_promote_again(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    config = tmp_path / "hacontrol.toml"
    # No API: this test is about the loop, and port 8008 may be taken on the machine.
    config.write_text(
        f'journal = "{journal}"\n' + cluster.config_toml() + "\n[api]\nenabled = false\n"
    )
    log = tmp_path / "controller.log"

    def journal_has(kind: str) -> bool:
        return bool(kinds(Journal(journal).read(), kind))

    first = _start_controller(config, log)
    try:
        wait_until(lambda: journal_has("primary_adopted"), 20, "the first controller to adopt pg1")
        cluster.node("pg1").kill()
        wait_until(lambda: journal_has("promote_succeeded"), 20, "the promotion")
        _stop(first, signal.SIGKILL)  # dies before it can finish the failover
    finally:
        _stop(first, signal.SIGKILL)
    second = _start_controller(config, log)
    try:
        wait_until(
            lambda: len(kinds(Journal(journal).read(), "controller_started")) == 2, 20,
            "the second controller to start",
        )
        cluster.wait_streaming("pg3", timeout=20, upstream="pg2")
        time.sleep(1.0)
    finally:
        _stop(second)
    records = Journal(journal).read()
    assert promotions(records) == ["pg2"]
    assert cluster.primaries() == ["pg2"]
    timeline = cluster.node("pg2").query("SELECT timeline_id FROM pg_control_checkpoint()")
    assert timeline[0][0] <= 2


def test_hooks_run_with_the_event_in_their_environment(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out = tmp_path / "hooks.log"
    hook = f'echo "$HACONTROL_EVENT node=$HACONTROL_NODE new=$HACONTROL_NEW_PRIMARY" >> {out}'
    config = make_config(
        cluster, tmp_path / "j.jsonl",
        hooks={"pre_promote": hook, "on_role_change": hook, "fence": hook, "timeout": 5},
    )
    with ControllerThread(config) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        cluster.node("pg1").kill()
        wait_until(lambda: ct.ctl.state.primary == "pg2", 20, "pg2 to become primary")
        wait_until(lambda: out.exists() and "on_role_change" in out.read_text(), 10,
                   "the role-change hook")
        cluster.node("pg1").start()
        wait_until(lambda: "fence node=pg1" in out.read_text(), 10, "the fence hook")
    lines = out.read_text().splitlines()
    # The unreachable old primary is fenced (hook) before the promote, then pre_promote.
    assert lines[:2] == ["fence node=pg1 new=", "pre_promote node=pg2 new="]
    assert "on_role_change node= new=pg2" in lines
    assert "fence node=pg1 new=" in lines


def test_failing_pre_promote_hook_blocks_the_promotion(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = make_config(
        cluster, tmp_path / "j.jsonl", hooks={"pre_promote": "exit 7", "timeout": 5}
    )
    with ControllerThread(config) as ct:
        wait_until(lambda: _adopted(ct), 10, "the controller to adopt pg1")
        cluster.node("pg1").kill()
        wait_until(lambda: kinds(ct.journal(), "failover_failed"), 20, "the failed promotion")
        time.sleep(1.0)
        records = ct.journal()
    assert cluster.primaries() == []
    finished = [r for r in kinds(records, "action_finished") if r.get("action") == "Promote"]
    assert finished and all(r["status"] == "failed" for r in finished)
    assert "pre_promote hook failed (7)" in finished[0]["detail"]
