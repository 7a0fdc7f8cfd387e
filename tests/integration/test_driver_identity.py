"""Drivers prove a data directory is their node's before they act, against real
PostgreSQL clusters: two nodes' data_dir swapped makes every stop, start, rewind
and re-clone refuse (the other node keeps running), the automatic rejoin of a
failed primary never stops the new primary, and ``hacontrol check-config`` names
the swap in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hacontrol.io.drivers import CommandDriverConfig, LocalDriverConfig, NodeDriver, build_driver
from hacontrol.io.procedures.rejoin import rejoin
from hacontrol.testing import LocalCluster

pytestmark = pytest.mark.integration

HACONTROL = Path(sys.executable).with_name("hacontrol")


def driver_for(cluster: LocalCluster, name: str, data_of: str) -> NodeDriver:
    """Node ``name``'s local driver as the configuration builds it (told the port of
    the node's DSN), but with the data directory of node ``data_of``."""
    node, data = cluster.node(name), cluster.node(data_of)
    cfg = LocalDriverConfig(
        data_dir=data.data_dir, bindir=data.bindir, os_user=data.owner.name,
        log_file=data.log_path, timeout=30, basebackup_timeout=60,
    )
    return build_driver(cfg, name, dsn=node.dsn)


def system_identifier(cluster: LocalCluster) -> int:
    return int(cluster.node("pg1").query(
        "SELECT system_identifier FROM pg_control_system()")[0][0])


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.records.append((kind, fields))


def swap_data_dirs(text: str, a: Path, b: Path) -> str:
    return (text.replace(f'"{a}"', '"\0"').replace(f'"{b}"', f'"{a}"')
            .replace('"\0"', f'"{b}"'))


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HACONTROL), "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


async def test_swapped_data_dirs_are_refused_and_the_other_node_keeps_running(
    cluster: LocalCluster,
) -> None:
    pg1, pg2, pg3 = (cluster.node(n) for n in ("pg1", "pg2", "pg3"))
    running = cluster.running()
    auto_conf = (pg2.data_dir / "postgresql.auto.conf").read_bytes()
    wrong = driver_for(cluster, "pg1", "pg2")
    results = [
        await wrong.stop("fast"), await wrong.stop("immediate"),
        await wrong.rewind(pg3.dsn), await wrong.start(),
        await wrong.basebackup(pg3.replication_dsn),
        await wrong.write_standby_config(f"{pg3.replication_dsn} application_name=pg1"),
    ]
    for result in results:
        assert result.refused and not result.ok, result
        assert result.detail.startswith("refused to ") and " pg1: " in result.detail
        assert f"{pg2.data_dir} is not pg1's data directory: its server runs on port " \
               f"{pg2.port} ({pg2.data_dir / 'postmaster.pid'}, line 4), but pg1's dsn names " \
               f"port {pg1.port}; fix data_dir in pg1's [nodes.driver] table" in result.detail
    # Nothing happened to pg2 (or anyone): same postmasters, same files, still a replica.
    assert cluster.running() == running
    assert (pg2.data_dir / "postgresql.auto.conf").read_bytes() == auto_conf
    assert pg2.query("SELECT pg_is_in_recovery()")[0][0] is True
    assert list(pg2.data_dir.parent.glob("pg2.*-*")) == []

    # A stopped directory shows the port its configuration gives (postgresql.node.conf,
    # included at the end of postgresql.conf).
    pg3.stop("fast")
    refused = await driver_for(cluster, "pg1", "pg3").start()
    assert refused.refused
    assert f"its server would run on port {pg3.port} " \
           f"({pg3.data_dir / 'postgresql.node.conf'}, line 1)" in refused.detail
    assert not pg3.is_running()

    # The node's own directory is proven, by port and system identifier, and acted on.
    own = driver_for(cluster, "pg3", "pg3")
    own.expect_system_identifier(system_identifier(cluster))
    proof = await own.verify_identity()
    assert proof.ok and f"its system identifier is {system_identifier(cluster)}" in proof.detail
    started = await own.start()
    assert started.ok, started.detail
    assert pg3.is_running()
    # Told another cluster's identifier, it refuses even its own directory.
    own.expect_system_identifier(system_identifier(cluster) ^ 1)
    refused = await own.stop("fast")
    assert refused.refused and "its control file names system identifier" in refused.detail
    assert pg3.is_running()


async def test_the_rejoin_of_a_failed_primary_never_stops_the_new_primary(
    cluster: LocalCluster,
) -> None:
    specs = {s.name: s for s in cluster.node_specs()}
    identifier = system_identifier(cluster)
    pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
    pg1.kill()
    assert pg2.query("SELECT pg_promote(true, 10)")[0][0] is True
    primary_pid = pg2.pid()

    wrong = driver_for(cluster, "pg1", "pg2")
    wrong.expect_system_identifier(identifier)
    rec = Recorder()
    result = await rejoin(specs["pg1"], specs["pg2"], wrong, allow_basebackup=True,
                          timeout=10, record=rec)
    assert not result.ok
    assert result.detail.startswith("rejoin of pg1 not attempted: refused to stop pg1: ")
    assert str(pg2.data_dir) in result.detail and f"port {pg2.port}" in result.detail
    assert [s.step for s in result.steps] == ["status", "stop"]
    assert pg2.pid() == primary_pid and cluster.primaries() == ["pg2"]
    pg2.query("CREATE TABLE still_writable (x int)")

    # With its own directory, pg1 rejoins as before.
    right = driver_for(cluster, "pg1", "pg1")
    right.expect_system_identifier(identifier)
    result = await rejoin(specs["pg1"], specs["pg2"], right, allow_basebackup=False,
                          timeout=15, record=Recorder())
    assert result.ok, result.detail
    cluster.wait_streaming("pg1", timeout=10, upstream="pg2")
    assert cluster.primaries() == ["pg2"]


async def test_the_command_driver_checks_with_its_identity_command(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
    as_owner = f"runuser -u {pg2.owner.name} -- " if os.geteuid() == 0 else ""
    identity = (f"p=$({as_owner}{pg2.bindir / 'postgres'} -C port -D {{data_dir}}) && "
                "echo port=$p")
    marker = tmp_path / "stopped"
    cfg = CommandDriverConfig(data_dir=str(pg2.data_dir), identity=identity,
                              stop=f"touch {marker}", timeout=30)
    wrong = build_driver(cfg, "pg1", dsn=pg1.dsn)
    result = await wrong.stop("fast")
    assert result.refused and not marker.exists()
    assert f"the identity command reports port {pg2.port}, but pg1's dsn names port " \
           f"{pg1.port}" in result.detail
    right = build_driver(cfg, "pg2", dsn=pg2.dsn)
    assert (await right.stop("fast")).ok and marker.exists()
    assert pg2.is_running()


def test_check_config_names_swapped_data_dirs_in_one_line(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    pg1, pg2, pg3 = (cluster.node(n) for n in ("pg1", "pg2", "pg3"))
    text = cluster.config_toml(drivers=True)
    good = tmp_path / "good.toml"
    good.write_text(text)
    ok = check_config(good)
    assert ok.returncode == 0, ok.stderr
    assert "driver.data_dir" not in ok.stdout

    bad = tmp_path / "swapped.toml"
    bad.write_text(swap_data_dirs(text, pg1.data_dir, pg2.data_dir))
    out = check_config(bad)
    assert out.returncode == 2
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        f"{bad}: nodes[0].driver.data_dir: pg1 and pg2 have their data directories swapped: "
        f"pg1's data_dir {pg2.data_dir}: its server runs on port {pg2.port} "
        f"({pg2.data_dir / 'postmaster.pid'}, line 4), the port of pg2's dsn; pg2's data_dir "
        f"{pg1.data_dir}: its server runs on port {pg1.port} "
        f"({pg1.data_dir / 'postmaster.pid'}, line 4), the port of pg1's dsn; exchange the "
        "two data_dir values"
    ]

    # A stopped node is read from its configuration files the same way.
    pg3.stop("fast")
    bad.write_text(swap_data_dirs(text, pg2.data_dir, pg3.data_dir))
    out = check_config(bad)
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith(f"{bad}: nodes[1].driver.data_dir: pg2 and pg3 have their data "
                           "directories swapped: ")
    assert f"its server would run on port {pg3.port}" in line

    # A missing directory (a node about to be re-cloned) is only a warning.
    bad.write_text(text.replace(f'"{pg3.data_dir}"', f'"{pg3.data_dir}-gone"'))
    out = check_config(bad)
    assert out.returncode == 0, out.stderr
    assert f"nodes[2].driver.data_dir (pg3): {pg3.data_dir}-gone does not exist" in out.stdout
