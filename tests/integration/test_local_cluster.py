"""LocalCluster against real PostgreSQL servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import psycopg
import pytest

from hacontrol.config import config_from_mapping
from hacontrol.testing import ClusterError, LocalCluster, processes

pytestmark = pytest.mark.integration


def _gone(pids: list[int]) -> bool:
    return not [p for p in pids if processes.alive(p)]


def test_replication_streams_to_every_replica(cluster: LocalCluster) -> None:
    primary = cluster.node("pg1")
    primary.query("CREATE TABLE t (v text)")
    primary.query("INSERT INTO t VALUES (%s)", ["hello"])
    lsn = cluster.current_lsn()
    cluster.wait_replayed(lsn, timeout=10)
    for name in ("pg2", "pg3"):
        cluster.wait_streaming(name, timeout=10, upstream="pg1")
        replica = cluster.node(name)
        assert replica.query("SELECT v FROM t") == [("hello",)]
        assert replica.query("SELECT pg_is_in_recovery()") == [(True,)]
    rows = primary.query(
        "SELECT application_name, state FROM pg_stat_replication ORDER BY 1"
    )
    assert rows == [("pg2", "streaming"), ("pg3", "streaming")]
    assert cluster.primary_name() == "pg1"


def test_kill_leaves_no_process_of_the_node_and_start_brings_it_back(
    cluster: LocalCluster,
) -> None:
    node = cluster.node("pg2")
    before = node.all_pids()
    assert len(before) > 1  # the postmaster and its children
    killed = node.kill()
    assert set(before) <= set(killed)
    assert _gone(killed)
    assert not node.is_running()
    assert cluster.node("pg1").is_running()
    node.start()
    cluster.wait_streaming("pg2", timeout=10)


def test_freeze_makes_node_unresponsive_and_thaw_revives_it(cluster: LocalCluster) -> None:
    node = cluster.node("pg3")
    frozen = node.freeze()
    assert len(frozen) > 1
    assert all(processes.state(p) in ("T", "t") for p in frozen)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(node.dsn, connect_timeout=2).close()
    assert time.monotonic() - started < 5
    assert node.is_running()
    node.thaw()
    assert node.query("SELECT 1") == [(1,)]
    cluster.wait_streaming("pg3", timeout=10)


def test_stop_and_start_by_mode(cluster: LocalCluster) -> None:
    node = cluster.node("pg2")
    for mode in ("fast", "immediate"):
        pids = node.all_pids()
        node.stop(mode)
        assert _gone(pids)
        assert not node.is_running()
        node.start()
        cluster.wait_streaming("pg2", timeout=10)
    with pytest.raises(ValueError, match="stop mode"):
        node.stop("gentle")


def test_multi_host_dsn_reaches_the_primary_wherever_it_is(cluster: LocalCluster) -> None:
    dsn = cluster.multi_host_dsn()
    assert "target_session_attrs=read-write" in dsn
    with psycopg.connect(dsn) as conn:
        port = conn.execute("SELECT inet_server_port()").fetchone()
    assert port == (cluster.node("pg1").port,)
    cluster.node("pg1").stop("fast")
    cluster.node("pg3").query("SELECT pg_promote(true, 10)")
    with psycopg.connect(dsn) as conn:
        port = conn.execute("SELECT inet_server_port()").fetchone()
    assert port == (cluster.node("pg3").port,)
    assert cluster.primary_name() == "pg3"


def test_sync_cluster_has_synchronous_standbys(cluster_sync: LocalCluster) -> None:
    primary = cluster_sync.node("pg1")
    for name in ("pg2", "pg3"):
        cluster_sync.wait_streaming(name, timeout=10)
    setting = primary.query("SHOW synchronous_standby_names")[0][0]
    assert setting == "ANY 1 (pg1, pg2, pg3)"
    # A walsender reports its sync state only once it has read the setting.
    sql = "SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1"
    deadline = time.monotonic() + 10
    while (rows := primary.query(sql)) != [("pg2", "quorum"), ("pg3", "quorum")]:
        assert time.monotonic() < deadline, rows
        time.sleep(0.02)
    primary.query("CREATE TABLE s (v int)")  # returns only once a standby confirmed it


def test_config_toml_and_node_specs_describe_the_cluster(cluster: LocalCluster) -> None:
    text = cluster.config_toml(mode="manual")
    data = tomllib.loads(text)
    assert data["mode"] == "manual"
    assert [n["name"] for n in data["nodes"]] == ["pg1", "pg2", "pg3"]
    config = config_from_mapping(data)
    assert [(n.name, n.dsn, n.replication_dsn) for n in config.nodes] == [
        (s.name, s.dsn, s.replication_dsn) for s in cluster.node_specs()
    ]
    for spec in cluster.node_specs():
        with psycopg.connect(spec.dsn, connect_timeout=2) as conn:
            assert conn.execute("SELECT current_setting('cluster_name')").fetchone() == (
                spec.name,
            )


def test_teardown_leaves_no_process_and_no_directory() -> None:
    cluster = LocalCluster(nodes=3).start()
    try:
        base = cluster.base_dir
        pids = [p for n in cluster.nodes for p in n.all_pids()]
        assert len(pids) >= 9
        # A frozen node and a killed node must not upset the teardown.
        cluster.node("pg2").freeze()
        cluster.node("pg3").kill()
    finally:
        cluster.close()
    assert _gone(pids)
    assert _gone(list(cluster.started_pids))
    assert not base.exists()
    assert processes.postgres_under(base) == []


async def test_async_context_manager() -> None:
    async with LocalCluster(nodes=2) as cluster:
        pids = cluster.node("pg1").all_pids() + cluster.node("pg2").all_pids()
        assert cluster.primary_name() == "pg1"
    assert _gone(pids)


CRASHING_HARNESS = """
import json, os, sys
from hacontrol.testing import LocalCluster
c = LocalCluster(nodes=2).start()
print(json.dumps({"base": str(c.base_dir),
                  "pids": [p for n in c.nodes for p in n.all_pids()]}), flush=True)
os._exit(1)  # dies without teardown, as a harness killed outright would
"""


def test_a_crashed_harness_leaves_nothing_running(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_HARNESS],
        capture_output=True, text=True, timeout=60, check=False,
    )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    pids: list[int] = info["pids"]
    base = Path(info["base"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not _gone(pids) or base.exists()):
            time.sleep(0.05)
        assert _gone(pids)
        assert not base.exists()
    finally:
        # Should the watchdog have failed, do its job here so nothing leaks.
        survivors = [p for p in pids if processes.alive(p) and processes.is_postgres(p)]
        processes.send(survivors, 9)
        if os.path.isdir(base):
            subprocess.run(["rm", "-rf", str(base)], check=False, timeout=30)


def test_cluster_cli_up_leaves_it_running_and_down_stops_exactly_it() -> None:
    from click.testing import CliRunner

    from hacontrol.cli.cluster import cluster as cli

    # Not under pytest's tmp_path: as root, that is closed to the postgres user.
    directory = Path(tempfile.gettempdir()) / f"hacontrol-cli-test-{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    pids: list[int] = []
    try:
        result = runner.invoke(cli, ["up", "--nodes", "2", "--dir", str(directory)])
        assert result.exit_code == 0, result.output
        state = json.loads((directory / "cluster.json").read_text())
        pids = [n["pid"] for n in state["nodes"]]
        assert len(pids) == 2 and all(processes.alive(p) for p in pids)
        assert "target_session_attrs=read-write" in result.output
        config = tomllib.loads((directory / "hacontrol.toml").read_text())
        assert [n["name"] for n in config["nodes"]] == ["pg1", "pg2"]

        again = runner.invoke(cli, ["up", "--dir", str(directory)])
        assert again.exit_code == 1
        assert "already running" in again.output and "Traceback" not in again.output

        status = runner.invoke(cli, ["status", "--dir", str(directory)])
        assert "pg1  primary" in status.output and "pg2  replica" in status.output

        down = runner.invoke(cli, ["down", "--dir", str(directory)])
        assert down.exit_code == 0, down.output
        assert f"pg1: stopped pid {pids[0]}" in down.output
        assert _gone(pids)
        assert not directory.exists()

        missing = runner.invoke(cli, ["down", "--dir", str(directory)])
        assert missing.exit_code == 1 and "does not exist" in missing.output
        directory.mkdir()
        empty = runner.invoke(cli, ["down", "--dir", str(directory)])
        assert empty.exit_code == 1 and "cluster.json is missing" in empty.output
    finally:
        processes.send([p for p in pids if processes.alive(p)], 9)
        processes.wait_gone(pids, 10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands servers to another OS user")
def test_a_directory_the_postgres_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    with pytest.raises(ClusterError, match="cannot enter"):
        LocalCluster(nodes=1, base_dir=tmp_path / "c").start()
    assert not (tmp_path / "c").exists()
