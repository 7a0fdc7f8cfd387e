"""TcpProxy in front of a real PostgreSQL node: forwarding, partitions, healing."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from hacontrol.testing import LocalCluster
from hacontrol.testing.proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def single() -> Any:
    """One primary is enough for the proxy; shared by this module's tests."""
    with LocalCluster(nodes=1) as c:
        yield c


def _port(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=2) as conn:
        row = conn.execute("SELECT inet_server_port()").fetchone()
    assert row is not None
    return int(row[0])


def test_forwards_to_the_node(single: LocalCluster) -> None:
    node = single.node("pg1")
    with TcpProxy(node.port) as proxy:
        assert proxy.port != node.port
        assert _port(proxy.dsn) == node.port
        with psycopg.connect(proxy.dsn, autocommit=True) as conn:
            big = conn.execute("SELECT repeat('x', 3000000)").fetchone()
        assert big is not None and len(big[0]) == 3_000_000


def test_blackhole_hangs_existing_and_new_connections_until_healed(
    single: LocalCluster,
) -> None:
    node = single.node("pg1")
    with TcpProxy(node.port) as proxy, psycopg.connect(proxy.dsn, autocommit=True) as conn:
        proxy.cut("blackhole")
        result: list[Any] = []
        worker = threading.Thread(
            target=lambda: result.append(conn.execute("SELECT 42").fetchone()), daemon=True
        )
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and result == []  # no answer, no error

        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            psycopg.connect(proxy.dsn, connect_timeout=2).close()
        assert time.monotonic() - started >= 1.5  # it waited, it was not refused

        proxy.heal()
        worker.join(5)
        assert result == [(42,)]
        assert _port(proxy.dsn) == node.port


def test_reject_breaks_connections_and_refuses_new_ones(single: LocalCluster) -> None:
    node = single.node("pg1")
    with TcpProxy(node.port) as proxy:
        port = proxy.port
        conn = psycopg.connect(proxy.dsn, autocommit=True)
        try:
            proxy.cut("reject")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        finally:
            conn.close()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(proxy.dsn, connect_timeout=2).close()
        assert time.monotonic() - started < 1.0
        proxy.heal()
        assert proxy.port == port
        assert _port(proxy.dsn) == node.port


def test_stop_closes_every_socket(single: LocalCluster) -> None:
    node = single.node("pg1")
    proxy = TcpProxy(node.port).start()
    try:
        conn = psycopg.connect(proxy.dsn, autocommit=True)
        proxy.cut("blackhole")
    finally:
        proxy.stop()
    thread = proxy._thread
    assert thread is not None and not thread.is_alive()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(proxy.dsn, connect_timeout=2).close()
    with pytest.raises(ValueError, match="cut mode"):
        TcpProxy(node.port).cut("drop")  # type: ignore[arg-type]
