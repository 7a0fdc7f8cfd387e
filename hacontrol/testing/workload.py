"""A write workload that records every acknowledged write, and a checker for it.

The writer inserts increasing ids through a libpq connection string (usually the
cluster's multi-host DSN with target_session_attrs=read-write, as applications
use) and records, for each acknowledged insert, the id, the server port that
acknowledged it and the monotonic time of the acknowledgement. A statement that
hangs (a frozen server) is abandoned after ``statement_timeout`` by shutting the
connection's socket down from a watchdog, since libpq has no client-side limit.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

TABLE = "hacontrol_writes"
CREATE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"
)
INSERT_SQL = f"INSERT INTO {TABLE} (id) VALUES (%s) RETURNING inet_server_port()"


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write."""

    id: int
    port: int
    at: float


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
    ) -> None:
        self.dsn = dsn
        self.interval = interval
        self.statement_timeout = statement_timeout
        self.max_duration = max_duration
        self.stats = WriterStats()
        self._next_id = first_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hacontrol-writer", daemon=True)
        self._lock = threading.Lock()
        self._inflight_since: float | None = None
        self._conn: psycopg.Connection[tuple[int]] | None = None

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
            with self._lock:
                self.stats.acks.append(Ack(row_id, int(row[0]), time.monotonic()))
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


def _shutdown_socket(conn: psycopg.Connection[tuple[int]]) -> None:
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


def lost_writes(acks: Iterable[Ack], present: set[int]) -> list[int]:
    """Acknowledged ids that are not present afterwards."""
    return sorted(a.id for a in acks if a.id not in present)


def split_brain_windows(acks: Iterable[Ack]) -> list[tuple[float, float, int, int]]:
    """Intervals in which two different servers both acknowledged writes.

    Returns (start, end, port_a, port_b) for every place where acknowledgements
    from two ports interleave: a later ack from the earlier server after the
    first ack from the newer one.
    """
    ordered = sorted(acks, key=lambda a: a.at)
    first_seen: dict[int, float] = {}
    last_seen: dict[int, float] = {}
    for ack in ordered:
        first_seen.setdefault(ack.port, ack.at)
        last_seen[ack.port] = ack.at
    windows = []
    ports = sorted(first_seen, key=lambda p: first_seen[p])
    for i, older in enumerate(ports):
        for newer in ports[i + 1 :]:
            if last_seen[older] > first_seen[newer]:
                windows.append((first_seen[newer], last_seen[older], older, newer))
    return windows


def recovery_time(acks: Iterable[Ack], fault_at: float, old_port: int) -> float | None:
    """Seconds from the fault to the first acknowledgement by another server."""
    for ack in sorted(acks, key=lambda a: a.at):
        if ack.at >= fault_at and ack.port != old_port:
            return ack.at - fault_at
    return None
