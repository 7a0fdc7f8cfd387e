"""The controller's connections honour what libpq users write: service files, passfiles,
as libpq (psycopg) does with the same strings."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from hacontrol.config import check_config, load_config
from hacontrol.core.model import NodeSpec
from hacontrol.io.pg import connect
from hacontrol.io.probe import NodeProber
from hacontrol.testing import LocalCluster

pytestmark = pytest.mark.integration


async def test_service_file_dsn_reaches_the_node(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = cluster.node("pg2")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[pg2]\nhost=127.0.0.1\nport={node.port}\nuser=postgres\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    conn = await connect("service=pg2 dbname=postgres connect_timeout=2", 5.0)
    try:
        assert await conn.fetchval("SELECT inet_server_port()") == node.port
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
    finally:
        await conn.close()
    prober = NodeProber(NodeSpec("pg2", "service=pg2 dbname=postgres"), 2.0)
    try:
        obs = await prober.probe()
    finally:
        await prober.close()
    assert obs.reachable and obs.role == "replica"


def _services(path: Path, sections: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"[{name}]\n{body}" for name, body in sections.items()))
    return path


def _two_nodes(tmp_path: Path, first: str, second: str) -> Path:
    path = tmp_path / "hacontrol.toml"
    path.write_text(
        f'[[nodes]]\nname = "pg1"\ndsn = "{first}"\n'
        f'[[nodes]]\nname = "pg2"\ndsn = "{second}"\n'
        '[hooks]\nfence = "true"\n'
    )
    return path


async def _port_of(dsn: str) -> int:
    conn = await connect(dsn, 5.0)
    try:
        return int(await conn.fetchval("SELECT inet_server_port()"))
    finally:
        await conn.close()


async def test_two_services_are_two_nodes_and_both_are_reachable(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
    services = _services(tmp_path / "services" / "pg_service.conf", {
        "hac1": f"host=127.0.0.1\nport={pg1.port}\nuser=postgres\ndbname=postgres\n",
        "hac2": f"host=127.0.0.1\nport={pg2.port}\nuser=postgres\ndbname=postgres\n",
        "hac1-again": f"host=127.0.0.1\nport={pg1.port}\nuser=postgres\n",
    })
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    path = _two_nodes(tmp_path, "service=hac1", "service=hac2")
    config = load_config(path)
    code, out = check_config(path)
    assert code == 0, out
    assert [n.dsn for n in config.nodes] == ["service=hac1", "service=hac2"]
    for node, spec in zip((pg1, pg2), config.node_specs(), strict=True):
        assert await _port_of(spec.dsn) == node.port
        with psycopg.connect(spec.dsn, connect_timeout=5) as reference:
            assert reference.execute("SELECT inet_server_port()").fetchone() == (node.port,)
    same = _two_nodes(tmp_path, "service=hac1", "service=hac1-again")
    code, out = check_config(same)
    assert code == 2
    assert out == (
        f"{same}: nodes[1].dsn (pg2): points at the same server (127.0.0.1:{pg1.port}, from "
        "service 'hac1-again') as nodes[0] ('pg1', from service 'hac1'); each node is one server"
    )


async def test_the_system_service_file_is_read_as_libpq_reads_it(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in the user's file: libpq goes on to PGSYSCONFDIR/pg_service.conf.
    pg3 = cluster.node("pg3")
    user_file = _services(tmp_path / "user.conf", {"other": "port=1\n"})
    sysconf = tmp_path / "etc"
    _services(sysconf / "pg_service.conf", {
        "hac3": f"host=127.0.0.1\nport={pg3.port}\nuser=postgres\ndbname=postgres\n"
                "application_name=from-service\noptions=-c work_mem=7MB\nconnect_timeout=3\n",
    })
    monkeypatch.setenv("PGSERVICEFILE", str(user_file))
    monkeypatch.setenv("PGSYSCONFDIR", str(sysconf))
    sql = ("SELECT inet_server_port(), current_setting('application_name'), "
           "current_setting('work_mem')")
    with psycopg.connect("service=hac3") as reference:
        expected = reference.execute(sql).fetchone()
    assert expected == (pg3.port, "from-service", "7MB")
    conn = await connect("service=hac3", 5.0)
    try:
        assert tuple(await conn.fetchrow(sql)) == expected
    finally:
        await conn.close()
