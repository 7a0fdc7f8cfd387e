"""A configured logical slot across a SIGKILL failover, consumed by a real client,
``pg_recvlogical``, through the multi-host DSN. On PostgreSQL 17+ the slot is a
failover slot synced to the replicas: every acknowledged row reaches the consumer
(duplicates allowed). Before 17 the slot is created anew on the new primary, and
the event names the LSN from which the consumer resumes: every row written after it
arrives, and whatever is missing was written before it."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from hacontrol.core.model import parse_lsn
from hacontrol.testing import LocalCluster

from .support import ControllerThread, kinds, make_config, wait_until

pytestmark = pytest.mark.integration

SLOT = "cdc"
ROW = re.compile(r"table public\.cdc_rows: INSERT: id\[integer\]:(\d+)")


@dataclass
class Acked:
    """Rows a writer had acknowledged, each with the WAL insert position it saw."""

    rows: dict[int, int] = field(default_factory=dict)
    errors: int = 0


def write_numbered(dsn: str, acked: Acked, stop: threading.Event, deadline: float) -> None:
    """Insert 1, 2, 3 ... through ``dsn`` until stopped; reconnect after a failure."""
    next_id = 1
    conn: psycopg.Connection | None = None
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
            row = conn.execute(
                "INSERT INTO cdc_rows VALUES (%s) RETURNING pg_current_wal_insert_lsn()::text",
                (next_id,),
            ).fetchone()
            assert row is not None
            acked.rows[next_id] = parse_lsn(str(row[0])) or 0
            next_id += 1
        except psycopg.Error:
            acked.errors += 1
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(0.05)
            continue
        stop.wait(0.02)
    if conn is not None:
        conn.close()


def received(path: Path) -> set[int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {int(m.group(1)) for m in ROW.finditer(text)}


def synced_everywhere(cluster: LocalCluster, replicas: list[str]) -> bool:
    for name in replicas:
        rows = cluster.node(name).query(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND synced"
            " AND NOT temporary AND invalidation_reason IS NULL", (SLOT,))
        if int(rows[0][0]) != 1:
            return False
    return True


@pytest.mark.timeout(300)
def test_a_logical_slot_consumer_keeps_every_acknowledged_row_across_a_failover(
    tmp_path: Path,
) -> None:
    with LocalCluster(3, settings={"wal_level": "logical"}) as cluster:
        version = cluster.pgbin.major
        cluster.node("pg1").query("CREATE TABLE cdc_rows (id int PRIMARY KEY)")
        config = make_config(
            cluster, tmp_path / "j.jsonl", timing={"probe_interval": 0.1},
            slots=[{"name": SLOT, "database": "postgres", "plugin": "test_decoding"}],
        )
        dsn = cluster.multi_host_dsn()
        out = tmp_path / "recvlogical.out"
        with ControllerThread(config) as ct:
            wait_until(lambda: cluster.node("pg1").query(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
            )[0][0] == 1, 20, "the configured slot created on pg1")
            consumer = subprocess.Popen(
                [cluster.pgbin.path("pg_recvlogical"), "-d", dsn + " dbname=postgres",
                 "-S", SLOT, "--start", "-f", str(out), "-F", "0", "-s", "1"],
                stdout=subprocess.DEVNULL, stderr=(tmp_path / "recvlogical.err").open("wb"),
            )
            acked, stop = Acked(), threading.Event()
            writer = threading.Thread(target=write_numbered,
                                      args=(dsn, acked, stop, time.monotonic() + 180))
            try:
                writer.start()
                wait_until(lambda: len(received(out)) >= 20, 20, "rows reaching the consumer")
                if version >= 17:
                    # A replica's copy becomes a persistent synced slot once the consumer
                    # has moved the primary's slot past the replica's own position.
                    # The sync worker naps up to 30 s between rounds when idle.
                    wait_until(lambda: synced_everywhere(cluster, ["pg2", "pg3"]), 90,
                               "the failover slot synced to both replicas")
                cluster.node("pg1").kill()
                new = wait_until(lambda: ct.ctl.state.primary if ct.ctl.state.primary
                                 not in (None, "pg1") else None, 20, "a failover")
                count_at = len(acked.rows)
                wait_until(lambda: len(acked.rows) >= count_at + 50, 20,
                           "writes on the new primary")
                if version < 17:
                    wait_until(lambda: kinds(ct.journal(), "logical_slot_created"), 20,
                               "the slot re-created on the new primary")
                time.sleep(2.0)
                stop.set()
                writer.join(10)
                last = max(acked.rows)
                # pg_recvlogical retries every 5 s; it must get to the last row.
                wait_until(lambda: last in received(out), 40,
                           "the consumer to reach the last acknowledged row")
                records = ct.journal()
            finally:
                stop.set()
                writer.join(10)
                consumer.terminate()
                try:
                    consumer.wait(10)
                except subprocess.TimeoutExpired:
                    consumer.kill()
                    consumer.wait(5)
        got = received(out)
        missing = sorted(set(acked.rows) - got)
        print(f"PostgreSQL {version}: {len(acked.rows)} acknowledged, {len(got)} received,"
              f" {len(missing)} missing")
        if version >= 17:
            assert not missing, missing[:20]
            assert not kinds(records, "logical_slots_lost")
            assert not [r for r in kinds(records, "logical_slot_created") if r["details"]["lost"]]
            found = cluster.node(new).query(
                "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
            assert found == [(True,)]
        else:
            lost = kinds(records, "logical_slots_lost")
            assert lost and lost[0]["severity"] == "critical", lost
            created = [r for r in kinds(records, "logical_slot_created")
                       if r["details"]["lost"]]
            assert created and created[0]["severity"] == "critical", created
            assert "lost to them" in created[0]["message"]
            resume = parse_lsn(created[0]["details"]["lsn"]) or 0
            after = [i for i, lsn in acked.rows.items() if lsn > resume]
            assert after, "rows were written after the slot was re-created"
            assert not [i for i in after if i not in got], "a row after the resume LSN was lost"
            # The loss is exactly what the event says: rows from before its LSN.
            assert all(acked.rows[i] <= resume for i in missing)


def test_a_long_write_transaction_holds_back_the_slot_not_the_loop(tmp_path: Path) -> None:
    """Creating a logical slot waits for the transactions writing at that moment: an
    open one (a batch job left idle in transaction) must not stall the probe loop."""
    with LocalCluster(3, settings={"wal_level": "logical"}) as cluster:
        pg1 = cluster.node("pg1")
        pg1.query("CREATE TABLE batch (i int)")
        holder = psycopg.connect(pg1.dsn)
        try:
            holder.execute("INSERT INTO batch VALUES (1)")  # an xid, left open
            config = make_config(
                cluster, tmp_path / "j.jsonl", timing={"probe_interval": 0.1},
                slots=[{"name": SLOT, "database": "postgres", "plugin": "test_decoding"}],
            )
            with ControllerThread(config) as ct:
                wait_until(lambda: [r for r in ct.journal() if r.get("kind") == "action_started"
                                    and r.get("action") == "ManageSlots"], 10,
                           "the slot creation to start")
                rounds = ct.ctl.rounds
                time.sleep(2.0)
                assert ct.ctl.rounds >= rounds + 10, "the loop went on probing"
                # Still waiting for the open transaction (the slot is being built).
                assert not kinds(ct.journal(), "logical_slot_created")
                assert ct.ctl.running("slots:pg1")
                holder.commit()
                wait_until(lambda: kinds(ct.journal(), "logical_slot_created"), 20,
                           "the slot created once the transaction ended")
        finally:
            holder.close()
