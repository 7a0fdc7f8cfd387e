"""Probing one PostgreSQL node: one round trip that yields an Observation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from hacontrol.core.model import (
    ClusterView,
    NodeSpec,
    Observation,
    ReplicationClient,
    ReplicationSlot,
    Role,
    SlotKind,
    TimelineSwitch,
    WalReceiver,
    parse_lsn,
)
from hacontrol.io.errors import short_error
from hacontrol.io.pg import connect

# Everything in one statement: one round trip per probe, and a consistent
# snapshot. CASE keeps primary-only functions from running on a replica.
PROBE_SQL = """
SELECT
  pg_is_in_recovery() AS in_recovery,
  current_setting('default_transaction_read_only') = 'on' AS read_only,
  CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current_lsn,
  CASE WHEN NOT pg_is_in_recovery()
       THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END
       AS primary_tli,
  pg_last_wal_receive_lsn()::text AS receive_lsn,
  pg_last_wal_replay_lsn()::text AS replay_lsn,
  CASE WHEN pg_is_in_recovery()
       THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END
       AS replay_lag_s,
  (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
  (SELECT system_identifier FROM pg_control_system()) AS system_identifier,
  (SELECT json_build_object(
      'status', status, 'sender_host', sender_host, 'sender_port', sender_port,
      'received_tli', received_tli,
      'last_msg_age_s', extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::float8)
     FROM pg_stat_wal_receiver LIMIT 1) AS wal_receiver,
  (SELECT coalesce(json_agg(json_build_object(
      'application_name', application_name, 'client_addr', client_addr::text,
      'state', state, 'sync_state', sync_state, 'sent_lsn', sent_lsn::text,
      'flush_lsn', flush_lsn::text, 'replay_lsn', replay_lsn::text)), '[]'::json)
     FROM pg_stat_replication) AS replication,
  (SELECT setting FROM pg_settings WHERE name = 'wal_receiver_timeout')::int
       AS wal_receiver_timeout_ms,
  (SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout')::int
       AS wal_sender_timeout_ms,
  current_setting('synchronous_standby_names') AS synchronous_standby_names,
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
  current_setting('server_version_num')::int AS server_version,
  (SELECT coalesce(json_agg(to_jsonb(s)), '[]'::json) FROM pg_replication_slots s) AS slots,
  current_setting('primary_slot_name') AS primary_slot_name,
  current_setting('sync_replication_slots', true) AS sync_replication_slots,
  (SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size')::int
       AS max_slot_wal_keep_mb,
  current_setting('synchronized_standby_slots', true) AS synchronized_standby_slots
"""

# A timeline's history file never changes once written: read once per timeline.
HISTORY_SQL = "SELECT pg_read_file('pg_wal/' || lpad(upper(to_hex($1::int)), 8, '0') || '.history')"

# A transactional logical message: it commits, so replicas' last replayed
# commit time and their last-message time stay fresh on an idle primary.
HEARTBEAT_SQL = "SELECT pg_logical_emit_message(true, 'hacontrol', 'heartbeat')"
# Set once per probe connection (see NodeProber._query).
SESSION_SQL = "SET synchronous_commit = local"




def parse_history(text: str) -> tuple[TimelineSwitch, ...]:
    """Parse a timeline history file (``parentTLI<TAB>switchpoint<TAB>reason`` lines)."""
    switches: list[TimelineSwitch] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.lstrip().startswith("#"):
            continue
        try:
            switches.append(TimelineSwitch(int(parts[0]), parse_lsn(parts[1]) or 0))
        except ValueError:
            continue
    return tuple(switches)


def _slot(data: dict[str, Any]) -> ReplicationSlot:
    """One pg_replication_slots row (as JSON: its columns differ between versions)."""
    invalidated = data.get("invalidation_reason")
    if invalidated is None and data.get("conflicting"):
        invalidated = "conflicting"
    return ReplicationSlot(
        name=str(data.get("slot_name")),
        kind=SlotKind.LOGICAL if data.get("slot_type") == "logical" else SlotKind.PHYSICAL,
        active=bool(data.get("active")),
        restart_lsn=parse_lsn(data.get("restart_lsn")),
        confirmed_flush_lsn=parse_lsn(data.get("confirmed_flush_lsn")),
        database=data.get("database"),
        plugin=data.get("plugin"),
        wal_status=data.get("wal_status"),
        failover=data.get("failover"),
        synced=data.get("synced"),
        invalidated=invalidated,
        temporary=bool(data.get("temporary")),
    )


def _slots(raw: Any) -> tuple[ReplicationSlot, ...] | None:
    if raw is None:
        return None
    rows = json.loads(raw) if isinstance(raw, str) else raw
    return tuple(_slot(r) for r in rows or ())


def _on(value: Any) -> bool | None:
    return None if value is None else str(value) == "on"


def observation_from_row(node: str, at: float, latency: float, row: Any) -> Observation:
    """Turn the probe query's row into an Observation (pure; tested without a database)."""
    in_recovery = bool(row["in_recovery"])
    receiver: WalReceiver | None = None
    raw_receiver = row["wal_receiver"]
    if raw_receiver is not None:
        data = json.loads(raw_receiver) if isinstance(raw_receiver, str) else raw_receiver
        receiver = WalReceiver(
            status=str(data.get("status")),
            sender_host=data.get("sender_host"),
            sender_port=data.get("sender_port"),
            last_msg_age_s=data.get("last_msg_age_s"),
            received_tli=data.get("received_tli"),
        )
    raw_replication = row["replication"]
    rows = json.loads(raw_replication) if isinstance(raw_replication, str) else raw_replication
    replication = tuple(
        ReplicationClient(
            application_name=r.get("application_name") or "",
            client_addr=r.get("client_addr"),
            state=r.get("state") or "",
            sync_state=r.get("sync_state") or "",
            sent_lsn=parse_lsn(r.get("sent_lsn")),
            flush_lsn=parse_lsn(r.get("flush_lsn")),
            replay_lsn=parse_lsn(r.get("replay_lsn")),
        )
        for r in rows or ()
    )
    if in_recovery:
        timeline = (receiver.received_tli if receiver and receiver.received_tli else None) or row[
            "checkpoint_tli"
        ]
    else:
        timeline = row["primary_tli"]
    return Observation(
        node=node,
        at=at,
        reachable=True,
        role=Role.REPLICA if in_recovery else Role.PRIMARY,
        timeline=int(timeline) if timeline is not None else None,
        current_lsn=parse_lsn(row["current_lsn"]),
        receive_lsn=parse_lsn(row["receive_lsn"]),
        replay_lsn=parse_lsn(row["replay_lsn"]),
        replay_lag_s=row["replay_lag_s"],
        read_only=bool(row["read_only"]),
        wal_receiver=receiver,
        replication=replication,
        # pg_control_system() shows the unsigned identifier as a signed bigint.
        system_identifier=int(row["system_identifier"]) & 0xFFFFFFFFFFFFFFFF,
        latency_s=latency,
        synchronous_standby_names=row.get("synchronous_standby_names"),
        replay_paused=row.get("replay_paused"),
        server_version=row.get("server_version"),
        slots=_slots(row.get("slots")),
        primary_slot_name=row.get("primary_slot_name"),
        slot_sync=_on(row.get("sync_replication_slots")),
        max_slot_wal_keep_mb=row.get("max_slot_wal_keep_mb"),
        synchronized_standby_slots=row.get("synchronized_standby_slots"),
    )


class NodeProber:
    """Probes one node over a persistent connection, re-opened after any failure.

    ``probe()`` never raises for a node problem: an unreachable or failing
    node yields ``Observation(reachable=False, error=...)``. Cancellation
    propagates.
    """

    def __init__(
        self,
        spec: NodeSpec,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self._clock = clock
        self._conn: asyncpg.Connection | None = None
        # Managed server settings as last seen, in milliseconds.
        self.settings_ms: dict[str, int] = {}
        # (system identifier, timeline) -> its history; None when it could not be read.
        self._history: dict[tuple[int, int], tuple[TimelineSwitch, ...] | None] = {}

    async def probe(self, *, heartbeat: bool = False) -> Observation:
        """One probe of the node, bounded by the probe timeout."""
        started = self._clock()
        try:
            async with asyncio.timeout(self.timeout):
                row = await self._query(heartbeat)
                history = await self._timeline_history(row)
        except asyncio.CancelledError:
            await self._drop()
            raise
        except Exception as exc:  # any failure to talk to the node is an observation
            await self._drop()
            now = self._clock()
            return Observation(
                node=self.spec.name, at=now, reachable=False, error=short_error(exc),
                latency_s=now - started,
            )
        now = self._clock()
        self.settings_ms = {
            "wal_receiver_timeout": int(row["wal_receiver_timeout_ms"]),
            "wal_sender_timeout": int(row["wal_sender_timeout_ms"]),
        }
        obs = observation_from_row(self.spec.name, now, now - started, row)
        return replace(obs, history=history) if history is not None else obs

    async def _timeline_history(self, row: Any) -> tuple[TimelineSwitch, ...] | None:
        """A primary's timeline history (what WAL it provably shares with the timelines
        before its own), read once per timeline; None below timeline 2 or unreadable."""
        if row["in_recovery"] is not False or row["primary_tli"] is None:
            return None
        timeline = int(row["primary_tli"])
        if timeline < 2:
            return ()
        key = (int(row["system_identifier"]) & 0xFFFFFFFFFFFFFFFF, timeline)
        if key not in self._history:
            assert self._conn is not None
            try:
                text = await self._conn.fetchval(HISTORY_SQL, timeline)
                self._history[key] = parse_history(text or "")
            except asyncpg.PostgresError:
                # No right to read pg_wal (not a superuser): the history stays unproven.
                self._history[key] = None
        return self._history[key]

    async def _query(self, heartbeat: bool = False) -> Any:
        """The probe row; with ``heartbeat``, after the heartbeat commit, so that the
        primary's reported position already includes it (a replica that received the
        heartbeat never reads as ahead of its primary)."""
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self.spec.dsn, self.timeout)
            try:
                # The heartbeat commits: with synchronous replication it would wait for
                # the replicas, and a primary whose replicas are all gone would look hung.
                await conn.execute(SESSION_SQL)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
        if heartbeat:
            await self._heartbeat()
        return await self._conn.fetchrow(PROBE_SQL)

    async def _heartbeat(self) -> None:
        assert self._conn is not None
        # A fenced (read-only) primary refuses writes, and so does a node that is a
        # replica by now: the probe row that follows shows what it is.
        with contextlib.suppress(asyncpg.PostgresError):
            await self._conn.execute(HEARTBEAT_SQL)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        """Close the probe connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(self.timeout):
                    await conn.close()
            except (TimeoutError, OSError, asyncpg.PostgresError):
                conn.terminate()


async def probe_once(specs: Sequence[NodeSpec], timeout: float) -> ClusterView:
    """Probe every node once, in parallel, on fresh connections (for one-shot status)."""
    probers = [NodeProber(spec, timeout) for spec in specs]
    try:
        results = await asyncio.gather(*(p.probe() for p in probers))
    finally:
        await asyncio.gather(*(p.close() for p in probers), return_exceptions=True)
    return ClusterView(
        at=time.monotonic(), observations={o.node: o for o in results}
    )
