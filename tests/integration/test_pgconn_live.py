"""The controller's connections honour what libpq users write: service files, passfiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacontrol.model import NodeSpec
from hacontrol.pgconn import connect
from hacontrol.probe import NodeProber
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
