"""A write workload that records every acknowledged write (the checker is in
:mod:`hacontrol.testing.checker`; its functions are re-exported here).

The writer inserts increasing ids through a libpq connection string (usually the
cluster's multi-host DSN with target_session_attrs=read-write, as applications
use) and records, for each acknowledged insert, the id, the server port, node
name (cluster_name) and timeline that acknowledged it and the monotonic time of
the acknowledgement. A statement that hangs (a frozen server) is abandoned after
``statement_timeout`` by shutting the connection's socket down from a watchdog,
since libpq has no client-side limit. With ``netns`` the writer's connections
are made from inside that network namespace (a client next to the server, which
a partition of the server does not cut off).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from hacontrol.testing.checker import (
    Ack,
    brain_windows,
    lost_writes,
    recovery_time,
    split_brain_windows,
)
from hacontrol.testing.netns import enter_netns

__all__ = [
    "Ack",
    "Writer",
    "WriterStats",
    "brain_windows",
    "create_table",
    "lost_writes",
    "read_ids",
    "recovery_time",
    "split_brain_windows",
]

TABLE = "hacontrol_writes"
CREATE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
)
# The timeline is the one WAL is being written on (the first 8 hex digits of the
# current segment's name); pg_control_checkpoint() would lag until a checkpoint.
INSERT_SQL = (
    f"INSERT INTO {TABLE} (id) VALUES (%s) RETURNING inet_server_port(), "
    "current_setting('cluster_name'), substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
)


@dataclass(slots=True)
class WriterStats:
    """What a writer did."""

    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    attempts: int = 0
    last_error: str | None = None


def create_table(dsn: str) -> None:
    """Create the workload table on the primary ``dsn`` reaches."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(CREATE_SQL)


class Writer:
    """Background writer thread. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        dsn: str,
        *,
        interval: float = 0.01,
        statement_timeout: float = 1.0,
        max_duration: float = 600.0,
        first_id: int = 1,
        netns: str | None = None,
        name: str = "writer",
    ) -> None:
        self.dsn = dsn
        self.netns = netns
        self.name = name
        self.interval = interval
        self.statement_timeout = statement_timeout
        self.max_duration = max_duration
        self.stats = WriterStats()
        self._next_id = first_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"hacontrol-{name}", daemon=True)
        self._lock = threading.Lock()
        self._inflight_since: float | None = None
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start writing in the background."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> WriterStats:
        """Stop writing and wait for the thread (bounded)."""
        self._stop.set()
        self._thread.join(timeout)
        self._close()
        return self.stats

    def acks_since(self, at: float) -> list[Ack]:
        """Acknowledgements recorded at or after monotonic time ``at``."""
        with self._lock:
            return [a for a in self.stats.acks if a.at >= at]

    def _main(self) -> None:
        if self.netns is not None:
            try:
                enter_netns(self.netns)  # this thread only; it never leaves again
            except Exception as exc:
                self.stats.last_error = f"cannot enter {self.netns}: {exc}"
                return
        self._run()

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration
        watchdog = threading.Thread(
            target=self._watch, name="hacontrol-writer-watchdog", daemon=True
        )
        watchdog.start()
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            self._write_one()
            pause = self.interval - (time.monotonic() - started)
            if pause > 0:
                self._stop.wait(pause)
        self._stop.set()
        watchdog.join(2.0)

    def _write_one(self) -> None:
        row_id = self._next_id
        self._next_id += 1
        self.stats.attempts += 1
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
            self._inflight_since = time.monotonic()
            try:
                cur = self._conn.execute(INSERT_SQL, (row_id,))
                row = cur.fetchone()
            finally:
                self._inflight_since = None
            assert row is not None
            ack = Ack(row_id, int(row[0]), time.monotonic(), str(row[1] or ""),
                      int(str(row[2]), 16), self.name)
            with self._lock:
                self.stats.acks.append(ack)
        except Exception as exc:  # every failure is data for the checker, not a crash
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            self._close()

    def _watch(self) -> None:
        while not self._stop.wait(self.statement_timeout / 4):
            since = self._inflight_since
            conn = self._conn
            overdue = since is not None and time.monotonic() - since > self.statement_timeout
            if overdue and conn is not None:
                _shutdown_socket(conn)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _shutdown_socket(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=socket.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def read_ids(dsn: str) -> set[int]:
    """Every id present on the server ``dsn`` reaches."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return {int(r[0]) for r in conn.execute(f"SELECT id FROM {TABLE}")}
