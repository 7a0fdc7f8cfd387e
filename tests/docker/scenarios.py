"""Failover scenarios written once against the common cluster interface, run on
DockerCluster here and on LocalCluster where noted.

A scenario gets the cluster and a ``Watcher``: how to ask the controller (in a
thread, or in a container) which primary it believes in and what it promoted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from hacontrol.testing.workload import create_table


class Node(Protocol):
    port: int

    @property
    def dsn(self) -> str: ...
    def kill(self) -> list[int]: ...
    def start(self, timeout: float = ...) -> int: ...
    def query(self, sql: str, params: Any = ..., timeout: int = ...) -> list[tuple[Any, ...]]: ...


class Cluster(Protocol):
    def node(self, name: str) -> Any: ...
    def multi_host_dsn(self, **params: str | int) -> str: ...
    def primaries(self) -> list[str]: ...
    def wait_streaming(
        self, replica: str, timeout: float = ..., upstream: str | None = ...
    ) -> None: ...


class Watcher(Protocol):
    def primary(self) -> str | None: ...
    def promotions(self) -> list[str]: ...


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def write_through_multi_host(cluster: Cluster) -> int:
    """One insert through the multi-host DSN; returns the port that acknowledged it
    (as the node's DSN names it: the published port for containers)."""
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO hacontrol_writes (id) VALUES (%s)", (time.time_ns() // 1000,))
        port = conn.info.port
    return int(port)


def is_read_only(node: Node) -> bool:
    """True when the node answers and defaults every transaction to read-only."""
    try:
        rows = node.query("SHOW default_transaction_read_only")
    except psycopg.Error:
        return False
    return bool(rows and rows[0][0] == "on")


def kill_primary_fails_over(cluster: Cluster, watcher: Watcher) -> str:
    """SIGKILL the primary pg1: exactly one replica is promoted, the other streams
    from it, writes through the multi-host DSN reach it, and pg1 is fenced when
    it comes back. Returns the new primary."""
    wait_until(lambda: watcher.primary() == "pg1", 15, "the controller to adopt pg1")
    killed_at = time.monotonic()
    cluster.node("pg1").kill()
    new = wait_until(
        lambda: (p := watcher.primary()) in ("pg2", "pg3") and p, 30, "a replica to be promoted"
    )
    print(f"failover observed {time.monotonic() - killed_at:.2f} s after the kill")
    other = "pg3" if new == "pg2" else "pg2"
    cluster.wait_streaming(other, timeout=30, upstream=new)
    assert write_through_multi_host(cluster) == cluster.node(new).port
    old = cluster.node("pg1")
    old.start()
    wait_until(lambda: is_read_only(old), 15, "the returning old primary to be fenced")
    assert write_through_multi_host(cluster) == cluster.node(new).port
    time.sleep(1.0)  # a few more rounds: nothing else may happen
    assert watcher.promotions() == [new]
    return str(new)
