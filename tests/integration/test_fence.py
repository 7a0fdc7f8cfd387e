"""act.fence against real PostgreSQL: read-only for new sessions, and every other
client session ended, whatever it calls itself."""

from __future__ import annotations

import psycopg
import pytest

from hacontrol.io import steps as act
from hacontrol.testing import LocalCluster

pytestmark = pytest.mark.integration


async def test_fence_ends_every_client_session_whatever_its_name(cluster: LocalCluster) -> None:
    pg1 = cluster.node("pg1")
    spec = next(s for s in cluster.node_specs() if s.name == "pg1")
    pg1.query("CREATE TABLE fence_probe (x int)")
    # A client may name itself like the controller: that must not spare it.
    sessions = [
        psycopg.connect(pg1.dsn, autocommit=True, connect_timeout=5,
                        application_name=name)
        for name in ("hacontrol", "hacontrol-app", "app")
    ]
    try:
        for conn in sessions:
            conn.execute("INSERT INTO fence_probe VALUES (1)")
        result = await act.fence(spec, connect_timeout=5)
        assert result.ok, result.detail
        ended = int(result.detail.split("; ")[1].split()[0])
        assert ended >= len(sessions), result.detail
        for conn in sessions:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("INSERT INTO fence_probe VALUES (2)")
    finally:
        for conn in sessions:
            conn.close()
    # New sessions start read-only.
    with (
        psycopg.connect(pg1.dsn, autocommit=True, connect_timeout=5) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("INSERT INTO fence_probe VALUES (3)")
    assert pg1.query("SELECT count(*) FROM fence_probe")[0][0] == 3
