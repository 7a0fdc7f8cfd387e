"""One active controller per cluster without etcd: a session advisory lock on every node.

The active controller holds :data:`LOCK_KEY` in one idle session on each node it can
reach. A second controller started on the same cluster finds the lock held (on any
node; advisory locks work on hot standbys too) and learns from ``pg_stat_activity``
whose session holds it. The lock is never WAL-logged and dies with its session: a
controller that stops or crashes frees it at once (the server notices a closed
socket), a node restart frees it until the active controller takes it again on its
next round. It is a guard against two controllers by mistake, not a consensus: two
controllers started at the same instant on nodes that see different halves of the
cluster are what ``[dcs]`` is for (docs/ha.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from hacontrol.core.model import NodeSpec
from hacontrol.io.errors import short_error
from hacontrol.io.pg import connect

__all__ = ["LOCK_KEY", "ClusterClaim", "Holder", "lock_session_name"]

# pg_try_advisory_lock(bigint): "hacontrl" in ASCII, unlikely to collide with an
# application's own keys.
LOCK_KEY = int.from_bytes(b"hacontrl", "big") & 0x7FFF_FFFF_FFFF_FFFF
_HOLDER_SQL = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local')
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.classid = ($1::bigint >> 32)::oid
   AND l.objid = ($1::bigint & 4294967295)::oid
   AND l.objsubid = 1 AND a.pid <> pg_backend_pid()
 LIMIT 1
"""


def lock_session_name(api_address: str | None = None) -> str:
    """The application_name of this controller's lock sessions: who holds the lock,
    in words another controller can print (63 bytes at most)."""
    where = f" api {api_address}" if api_address else ""
    return f"hacontrol on {socket.gethostname()} pid {os.getpid()}{where}"[:63]


@dataclass(frozen=True, slots=True)
class Holder:
    """Another session holding the lock on one node."""

    node: str
    pid: int
    application_name: str
    client_addr: str

    def describe(self) -> str:
        """The holder in words, for the error an operator reads."""
        name = self.application_name or "a session without application_name"
        return f"{name} (from {self.client_addr}, backend pid {self.pid} on {self.node})"


class ClusterClaim:
    """This controller's lock sessions, one per node."""

    def __init__(self, specs: Iterable[NodeSpec], *, timeout: float, name: str) -> None:
        self.specs = {s.name: s for s in specs}
        self.timeout = timeout
        self.name = name
        self._sessions: dict[str, asyncpg.Connection] = {}

    def held(self) -> frozenset[str]:
        """The nodes whose lock this controller holds (as far as it knows)."""
        return frozenset(n for n, c in self._sessions.items() if not c.is_closed())

    async def claim(self) -> list[Holder]:
        """Take the lock on every reachable node not held yet; the other holders found.

        A node that cannot be reached is skipped (it is taken on a later call).
        """
        results = await asyncio.gather(
            *(self._claim_one(name) for name in sorted(self.specs) if name not in self.held())
        )
        return [h for h in results if h is not None]

    async def _claim_one(self, name: str) -> Holder | None:
        old = self._sessions.pop(name, None)
        if old is not None:
            old.terminate()
        try:
            conn = await connect(self.specs[name].dsn, self.timeout)
        except Exception:
            return None
        try:
            await conn.execute(f"SET application_name = '{_quoted(self.name)}'")
            if await conn.fetchval("SELECT pg_try_advisory_lock($1::bigint)", LOCK_KEY):
                # Idle from now on: no statement may time it out.
                await conn.execute("SET statement_timeout = 0")
                self._sessions[name] = conn
                return None
            row = await conn.fetchrow(_HOLDER_SQL, LOCK_KEY)
        except Exception as exc:
            conn.terminate()
            return Holder(name, 0, f"unknown ({short_error(exc)})", "?")
        conn.terminate()
        if row is None:
            return None  # released between the two statements: taken on the next call
        return Holder(name, int(row[0]), str(row[1]), str(row[2]))

    async def set_specs(self, specs: Iterable[NodeSpec]) -> None:
        """The nodes after a reload: a removed or changed node's session is closed."""
        new = {s.name: s for s in specs}
        for name in list(self._sessions):
            if new.get(name) != self.specs.get(name):
                self._sessions.pop(name).terminate()
        self.specs = new

    async def release(self) -> None:
        """Give every lock up (closing the sessions frees them)."""
        sessions, self._sessions = self._sessions, {}
        for conn in sessions.values():
            try:
                await asyncio.wait_for(conn.close(), self.timeout)
            except Exception:
                conn.terminate()


def _quoted(text: str) -> str:
    return text.replace("'", "''")
