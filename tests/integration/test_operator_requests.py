"""Operator requests against a running controller on a real LocalCluster: manual
failover refusals and --force, manual mode, maintenance, and pause/maintenance
across a controller restart. Every request goes through the real API, mostly via
the real ``hacontrol`` CLI in a subprocess (its exit codes are part of the test)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hacontrol.io.journal import Journal
from hacontrol.testing import LocalCluster

from .operator_support import TOKEN, ServiceThread, hacontrol, output, write_config
from .support import kinds, promotions, stop_receiver, wait_until, write_rows

pytestmark = pytest.mark.integration

# Long enough for several detection windows at a 0.1 s probe interval.
HOLD_S = 2.0


def healthy(st: ServiceThread) -> bool:
    """pg1 adopted and every node healthy."""
    snap = st.service.controller.snapshot()
    return snap["primary"] == "pg1" and all(n["health"] == "ok" for n in snap["nodes"])


def hold_without_failover(st: ServiceThread, cluster: LocalCluster, primary: str) -> None:
    """For HOLD_S, the controller keeps ``primary`` and promotes nothing."""
    until = time.monotonic() + HOLD_S
    while time.monotonic() < until:
        assert st.primary == primary
        assert promotions(st.journal()) == []
        time.sleep(0.1)
    assert cluster.primaries() == []


def write_through_multi_host(cluster: LocalCluster) -> int:
    """One insert through the multi-host DSN; the port of the node that took it."""
    with psycopg.connect(cluster.multi_host_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS operator_writes (id bigint)")
        row = conn.execute(
            "INSERT INTO operator_writes VALUES (1) RETURNING inet_server_port()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def event(records: list[dict[str, Any]], kind: str, **details: Any) -> dict[str, Any]:
    """The first record of ``kind`` whose details include ``details``."""
    for record in kinds(records, kind):
        got = record.get("details") or {}
        if all(got.get(k) == v for k, v in details.items()):
            return record
    raise AssertionError(f"no {kind} event with {details}")


def test_manual_mode_refusals_then_failover_to_pg3(cluster: LocalCluster, tmp_path: Path) -> None:
    config = write_config(cluster, tmp_path, mode="manual")
    with ServiceThread(config) as st:
        wait_until(lambda: healthy(st), 15, "pg1 adopted, replicas healthy")

        # A healthy writable primary: a failover would make two primaries.
        for extra in ((), ("--force",)):
            refused = hacontrol(config, "failover", "--to", "pg2", *extra)
            assert refused.returncode == 1, output(refused)
            assert "refused:" in refused.stderr and "use a switchover" in refused.stderr
            assert "pg1 is a writable primary" in refused.stderr
        unknown = hacontrol(config, "failover", "--to", "pg9")
        assert unknown.returncode == 2, output(unknown)
        assert "unknown node 'pg9'" in unknown.stderr
        status, body = st.call("POST", "/failover", {"to": "pg9"}, token=TOKEN)
        assert status == 400 and "unknown node 'pg9'" in body["error"], body
        assert cluster.primaries() == ["pg1"]
        refusals = [r for r in kinds(st.journal(), "request_refused")
                    if r["details"]["code"] == "writable_primary"]
        assert [r["details"]["request"]["force"] for r in refusals] == [False, True]

        # Manual mode: the failure is reported, nothing is promoted.
        cluster.node("pg1").kill()
        wait_until(lambda: kinds(st.journal(), "manual_failover_needed"), 15,
                   "a manual_failover_needed event")
        hold_without_failover(st, cluster, "pg1")

        done = hacontrol(config, "failover", "--to", "pg3", "--timeout", "30")
        assert done.returncode == 0, output(done)
        assert "done: pg3 is the primary" in done.stdout
        assert st.primary == "pg3"
        cluster.wait_streaming("pg2", timeout=20, upstream="pg3")
        assert write_through_multi_host(cluster) == cluster.node("pg3").port
        cluster.wait_replayed(cluster.current_lsn("pg3"), nodes=["pg2"], timeout=10)
        records = st.journal()
    assert promotions(records) == ["pg3"]
    assert cluster.primaries() == ["pg3"]
    started = event(records, "failover_started", requested_by="operator")
    assert started["node"] == "pg3" and started["details"]["forced"] is False
    assert kinds(records, "failover_completed")[-1]["node"] == "pg3"
    assert any(r["node"] == "pg2" for r in kinds(records, "action_started")
               if r.get("action") == "Repoint")


@pytest.mark.parametrize(
    ("forced", "override"),
    [
        # The same refusal and override path as "lag", on the other rule (the core
        # suite keeps priority 0 itself: test_priority_zero_is_never_promoted).
        pytest.param("pg2", "priority 0", id="priority0", marks=pytest.mark.extended),
        pytest.param("pg3", "behind", id="lag"),
    ],
)
def test_refused_candidates_and_forced_failover(
    cluster: LocalCluster, tmp_path: Path, forced: str, override: str
) -> None:
    # pg2 has priority 0; pg3 stops receiving WAL and falls far behind. The lag is
    # made before the controller starts: a running one would repoint pg3 at once.
    stop_receiver(cluster, "pg3")
    write_rows(cluster, "pg1", 3000)
    cluster.wait_replayed(cluster.current_lsn("pg1"), nodes=["pg2"], timeout=15)
    cluster.node("pg1").kill()
    Journal(tmp_path / "journal.jsonl").append("primary_adopted", node="pg1")
    config = write_config(cluster, tmp_path, mode="manual", priorities={"pg2": 0},
                          max_lag_bytes=65536)
    with ServiceThread(config) as st:
        wait_until(lambda: kinds(st.journal(), "manual_failover_needed"), 15,
                   "a manual_failover_needed event")
        ctl = st.service.controller
        wait_until(lambda: all(ctl.state.health(n).consecutive_successes >= 3
                               for n in ("pg2", "pg3")),
                   10, "pg2 and pg3 to pass the recovery threshold")

        low = hacontrol(config, "failover", "--to", "pg2")
        assert low.returncode == 1, output(low)
        assert "pg2 has priority 0" in low.stderr and "use --force" in low.stderr
        behind = hacontrol(config, "failover", "--to", "pg3")
        assert behind.returncode == 1, output(behind)
        assert "pg3 is" in behind.stderr and "behind (max 64 KiB)" in behind.stderr
        assert "use --force" in behind.stderr
        assert promotions(st.journal()) == [] and cluster.primaries() == []

        done = hacontrol(config, "failover", "--to", forced, "--force", "--timeout", "30")
        assert done.returncode == 0, output(done)
        assert f"done: {forced} is the primary" in done.stdout
        if forced == "pg2":
            # The lagging replica follows the new primary and catches up.
            cluster.wait_streaming("pg3", timeout=20, upstream="pg2")
            cluster.wait_replayed(cluster.current_lsn("pg2"), nodes=["pg3"], timeout=15)
            assert cluster.node("pg3").query("SELECT count(*) FROM filler")[0][0] == 3000
        # The override and its reason are in the history the controller serves.
        shown = hacontrol(config, "history", "-n", "500", "--json")
        assert shown.returncode == 0, output(shown)
        assert "from the controller" in shown.stderr
        history = [json.loads(line) for line in shown.stdout.splitlines()]
        started = event(history, "failover_started", requested_by="operator")
        records = st.journal()
    assert promotions(records) == [forced]
    assert cluster.primaries() == [forced]
    refusals = kinds(records, "request_refused")
    assert [(r["node"], r["details"]["code"]) for r in refusals] == [
        ("pg2", "not_eligible"), ("pg3", "not_eligible"),
    ]
    assert started["node"] == forced
    assert started["details"]["forced"] is True
    assert any(override in o for o in started["details"]["overrides"]), started["details"]
    assert "forced over" in started["message"] and override in started["message"]
    figures = {c["node"]: c for c in started["details"]["candidates"]}
    assert figures["pg3"]["lag_bytes"] > 65536


def test_maintenance_blocks_candidate_and_primary_failover(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with ServiceThread(config) as st:
        wait_until(lambda: healthy(st), 15, "pg1 adopted, replicas healthy")
        for node in ("pg2", "pg1"):
            on = hacontrol(config, "maintenance", node, "on")
            assert on.returncode == 0, output(on)
            assert on.stdout.startswith(f"done: {node} in maintenance")
        status, body = st.call("GET", "/nodes/pg2/replica")
        assert status == 503 and "maintenance" in body["reason"], body

        # The primary is in maintenance: its failure starts no failover.
        cluster.node("pg1").kill()
        wait_until(lambda: [r for r in kinds(st.journal(), "failover_blocked")
                            if r["details"].get("blocked_by") == "maintenance"],
                   15, "a failover_blocked (maintenance) event")
        hold_without_failover(st, cluster, "pg1")
        # A node in maintenance is no candidate for an operator either (without --force).
        refused = hacontrol(config, "failover", "--to", "pg2")
        assert refused.returncode == 1, output(refused)
        assert "pg2 is in maintenance" in refused.stderr and "use --force" in refused.stderr

        off = hacontrol(config, "maintenance", "pg1", "off")
        assert off.returncode == 0, output(off)
        # pg2 would win on name order; it is in maintenance, so pg3 is promoted.
        wait_until(lambda: st.primary == "pg3", 20, "pg3 to become the primary")
        time.sleep(0.5)  # a few more rounds: nothing else may happen
        records = st.journal()
    assert promotions(records) == ["pg3"]
    assert cluster.primaries() == ["pg3"]
    started = kinds(records, "failover_started")[-1]
    figures = {c["node"]: c for c in started["details"]["candidates"]}
    assert figures["pg2"]["excluded"] == "in maintenance"


def test_pause_and_maintenance_survive_a_controller_restart(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with ServiceThread(config) as st:
        wait_until(lambda: healthy(st), 15, "pg1 adopted, replicas healthy")
        for args in (("pause",), ("maintenance", "pg2", "on")):
            result = hacontrol(config, *args)
            assert result.returncode == 0, output(result)
    assert st.exit_code == 0

    with ServiceThread(config) as st:
        wait_until(lambda: st.service.controller.rounds >= 3, 10, "three rounds")
        shown = hacontrol(config, "status", "--json")
        assert shown.returncode == 0, output(shown)
        snap = json.loads(shown.stdout)
        assert snap["source"] == "controller" and snap["paused"] is True
        assert {n["name"]: n["maintenance"] for n in snap["nodes"]} == {
            "pg1": False, "pg2": True, "pg3": False,
        }
        recovered = kinds(st.journal(), "controller_recovered")[-1]
        assert recovered["paused"] is True and recovered["maintenance"] == ["pg2"]

        cluster.node("pg1").kill()
        wait_until(lambda: [r for r in kinds(st.journal(), "failover_blocked")
                            if r["details"].get("blocked_by") == "paused"],
                   15, "a failover_blocked (paused) event")
        hold_without_failover(st, cluster, "pg1")

        resumed = hacontrol(config, "resume")
        assert resumed.returncode == 0, output(resumed)
        assert "done: resumed" in resumed.stdout
        wait_until(lambda: st.primary == "pg3", 20, "pg3 to become the primary")
        time.sleep(0.5)
        records = st.journal()
    assert promotions(records) == ["pg3"]
    assert cluster.primaries() == ["pg3"]
