"""What every test cluster answers the same way, whatever runs its nodes.

LocalCluster (processes) and DockerCluster (containers) share these queries;
each says only which of its nodes can be asked (``_listed``) and how often to
poll (``_poll_s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import psycopg

from hacontrol.core.model import NodeSpec, parse_lsn
from hacontrol.io.dsn import node_spec


class ClusterError(RuntimeError):
    """The cluster could not be started, or a node did not do what was asked."""


class QueryableNode(Protocol):
    """The node interface the shared queries use."""

    @property
    def name(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def frozen(self) -> bool: ...

    @property
    def dsn(self) -> str: ...

    @property
    def replication_dsn(self) -> str: ...

    def is_running(self) -> bool: ...

    def is_primary(self) -> bool: ...

    def query(
        self, sql: str, params: Sequence[Any] | None = None, timeout: int = 2
    ) -> list[tuple[Any, ...]]: ...


class NodeQueries:
    """SQL on one node through its ``dsn`` (short-lived autocommit connections)."""

    @property
    def dsn(self) -> str:
        raise NotImplementedError

    def connect(self, timeout: int = 2, **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit psycopg connection (connect_timeout in whole seconds, >= 2
        as libpq enforces)."""
        return psycopg.connect(self.dsn, connect_timeout=timeout, autocommit=True, **kwargs)

    def query(
        self, sql: str, params: Sequence[Any] | None = None, timeout: int = 2
    ) -> list[tuple[Any, ...]]:
        """Run one statement on this node; its rows ([] when it returns none)."""
        with self.connect(timeout) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def is_primary(self) -> bool:
        """Ask the node whether it is out of recovery."""
        return not self.query("SELECT pg_is_in_recovery()")[0][0]

    def replay_lsn(self) -> int | None:
        """The node's replayed LSN (its current LSN when it is a primary)."""
        row = self.query(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text "
            "ELSE pg_current_wal_lsn()::text END"
        )[0]
        return parse_lsn(row[0])


class ClusterQueries:
    """DSNs, primaries, replay waits and controller specs over ``self.nodes``."""

    _poll_s = 0.02

    @property
    def nodes(self) -> Sequence[QueryableNode]:
        raise NotImplementedError

    def node(self, name: str) -> QueryableNode:
        raise NotImplementedError

    def _listed(self, node: QueryableNode) -> bool:
        """Whether ``node`` is one to ask at all (running, reachable)."""
        return node.is_running()

    def dsn(self, name: str) -> str:
        """The DSN of node ``name``."""
        return self.node(name).dsn

    def multi_host_dsn(self, **params: str | int) -> str:
        """One libpq DSN over all nodes with target_session_attrs=read-write, as an
        application would use; extra libpq parameters may be given."""
        opts: dict[str, str | int] = {
            "host": ",".join(n.host for n in self.nodes),
            "port": ",".join(str(n.port) for n in self.nodes),
            "user": "postgres",
            "dbname": "postgres",
            "target_session_attrs": "read-write",
            "connect_timeout": 2,
        }
        opts.update(params)
        return " ".join(f"{k}={v}" for k, v in opts.items())

    def primaries(self) -> list[str]:
        """Names of the listed, unfrozen nodes that say they are out of recovery
        (asked in parallel; a node that does not answer is skipped)."""

        def ask(node: QueryableNode) -> bool:
            if not self._listed(node) or node.frozen:
                return False
            try:
                return node.is_primary()
            except psycopg.Error:
                return False

        nodes = list(self.nodes)
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            answers = list(pool.map(ask, nodes))
        return [n.name for n, yes in zip(nodes, answers, strict=True) if yes]

    def primary_name(self) -> str | None:
        """The one node that says it is primary; None when none does. Raises
        :class:`ClusterError` when two do (split brain)."""
        found = self.primaries()
        if len(found) > 1:
            raise ClusterError(f"more than one primary: {', '.join(found)}")
        return found[0] if found else None

    def wait_replayed(
        self, lsn: int | str, nodes: Iterable[str] | None = None, timeout: float = 10.0
    ) -> None:
        """Wait until every replica in ``nodes`` (default: all listed replicas) has
        replayed up to ``lsn``; :class:`TimeoutError` otherwise."""
        target = parse_lsn(lsn) if isinstance(lsn, str) else lsn
        assert target is not None
        if nodes is None:
            primaries = set(self.primaries())
            names = [n.name for n in self.nodes if self._listed(n) and n.name not in primaries]
        else:
            names = list(nodes)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                try:
                    row = self.node(name).query("SELECT pg_last_wal_replay_lsn()::text")
                except psycopg.Error:
                    continue
                got = parse_lsn(row[0][0])
                if got is not None and got >= target:
                    pending.discard(name)
            if pending:
                time.sleep(self._poll_s)
        if pending:
            raise TimeoutError(f"not replayed to {lsn} after {timeout:g} s: {sorted(pending)}")

    def current_lsn(self, name: str | None = None) -> int:
        """pg_current_wal_lsn() of the primary (or of node ``name``)."""
        node = self.node(name or self.primary_name() or "pg1")
        lsn = parse_lsn(node.query("SELECT pg_current_wal_lsn()::text")[0][0])
        assert lsn is not None
        return lsn

    def node_specs(self) -> tuple[NodeSpec, ...]:
        """The nodes as the controller's :class:`NodeSpec` tuples."""
        return tuple(
            node_spec(n.name, n.dsn, replication_dsn=n.replication_dsn) for n in self.nodes
        )
