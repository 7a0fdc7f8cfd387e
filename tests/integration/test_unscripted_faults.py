"""Faults nobody scripted into the controller: a stray ``pg_promote()``, a recovery
conflict holding back the candidate's replay, the controller itself killed in the
middle of a switchover or a failover, and a node (or a journal) that belongs to
another cluster. Real PostgreSQL servers (LocalCluster), the real controller (in a
thread or as ``hacontrol run`` subprocess), writes through the multi-host DSN with
target_session_attrs=read-write.

Every test asserts what an operator would see — which node is primary, which
nodes take writes, which acknowledged writes survive, how long writes were
impossible, that a critical journal record exists — never the wording of an event.
Each collects its observations in one dict and compares it with the expected one,
so a failure shows every observation at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hacontrol.testing import LocalCluster
from hacontrol.testing.checker import lost_writes
from hacontrol.testing.local_node import Node
from hacontrol.testing.workload import Writer, create_table, read_ids

from .fault_support import (
    ControllerProcess,
    api_status,
    can_write,
    cli,
    critical_about,
    in_recovery,
    kind_records,
    lsn_of,
    primaries_among,
    read_only,
    receiver,
    records,
    resume,
    settled_on,
    stopped,
    toml_value,
    wait_for,
    walreceiver_pid,
    walsender_pid,
    write_config,
)
from .operator_support import ServiceThread
from .support import ControllerThread, make_config, stop_receiver

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


def _service_ready(st: ServiceThread, *, quorum: bool = False) -> bool:
    ctl = st.service.controller
    snap = ctl.snapshot()
    return (
        snap["primary"] == "pg1"
        and all(n["health"] == "ok" for n in snap["nodes"])
        and all(h.consecutive_successes >= ctl.settings.recovery_threshold
                for h in ctl.state.nodes.values())
        and (not quorum or ctl.state.sync_in_force is not None)
    )


def _ids_on(cluster: LocalCluster, name: str) -> set[int]:
    return read_ids(cluster.dsn(name))


def _streams_from(cluster: LocalCluster, name: str, upstream: str, timeout: float) -> Any:
    """pg_stat_wal_receiver (status, sender_port) of ``name`` once it streams from
    ``upstream`` within ``timeout``; else the last value seen."""
    want = ("streaming", cluster.node(upstream).port)
    last: Any = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = receiver(cluster.node(name))
        if last == want:
            return last
        time.sleep(0.1)
    return last


def _stray_promotion_facts(
    cluster: LocalCluster, st: ServiceThread, writer: Writer, journal_from: int
) -> dict[str, Any]:
    """What the stray-promotion tests check once the writes stopped."""
    pg1, pg3 = cluster.node("pg1"), cluster.node("pg3")
    acked = list(writer.stats.acks)
    present = _ids_on(cluster, "pg1")
    recs = st.journal()[journal_from:]
    print("critical records:", [(r.get("kind"), r.get("node"), r.get("details"))
                                for r in recs if r.get("severity") == "critical"])
    return {
        "controller_primary": st.primary,
        "pg1_read_only": read_only(pg1),
        "pg3_read_only": read_only(pg3),
        "pg2_receiver": _streams_from(cluster, "pg2", "pg1", 3.0),
        "acked_missing_on_pg1": len(lost_writes(acked, present)),
        "critical_record_naming_pg3": bool(critical_about(recs, "pg3")),
    }


# --------------------------------------------------------------------------- 1. stray promote


@pytest.mark.timeout(150)
@pytest.mark.extended  # the quorum variant of test_stray_promote_of_a_lagging_replica_async
def test_stray_promote_of_a_lagging_replica_in_maintenance_quorum_mode(
    cluster_sync: LocalCluster, tmp_path: Path
) -> None:
    """pg3 is in maintenance, stops streaming, falls ~3 s behind and is promoted by
    mistake: pg1 must stay the primary and writable, pg3 be fenced, pg2 keep
    streaming from pg1, and no acknowledged write be lost."""
    cluster = cluster_sync
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    config = write_config(
        cluster, tmp_path, sections={"replication": {"synchronous": "quorum", "quorum": 1}}
    )
    pg1, pg3 = cluster.node("pg1"), cluster.node("pg3")
    with ServiceThread(config) as st:
        wait_for(lambda: _service_ready(st, quorum=True), 20, "pg1 adopted with its set")
        with Writer(dsn, interval=0.01, statement_timeout=1.0, max_duration=90) as writer:
            wait_for(lambda: len(writer.stats.acks) >= 20, 10, "writes on pg1")
            on = cli(config, "maintenance", "pg3", "on")
            assert on.returncode == 0, on.stdout + on.stderr
            wait_for(lambda: "pg3" in st.service.controller.state.maintenance, 5,
                     "pg3 in maintenance")
            journal_from = len(st.journal())
            stop_receiver(cluster, "pg3")
            cut_at = time.monotonic()
            time.sleep(3.0)
            # Setup check: pg3 really is behind (it lacks writes pg1 acknowledged).
            behind = lsn_of(pg1, "pg_current_wal_lsn()") - lsn_of(pg3, "pg_last_wal_replay_lsn()")
            acked_before = [a.id for a in writer.acks_since(cut_at + 0.5)]
            on_pg3 = _ids_on(cluster, "pg3")
            assert behind > 0 and acked_before and not set(acked_before) <= on_pg3, (
                f"pg3 did not fall behind: {behind} bytes, {len(acked_before)} acks"
            )
            # Not waiting in pg_promote(): the controller's fence ends every client
            # session on pg3 right after its reload wakes such a wait.
            assert pg3.query("SELECT pg_promote(false)")[0][0] is True
            wait_for(lambda: in_recovery(pg3) is False, 15, "the stray promotion of pg3")
            time.sleep(5.0)
        facts = _stray_promotion_facts(cluster, st, writer, journal_from)
    assert facts == {
        "controller_primary": "pg1",
        "pg1_read_only": False,
        "pg3_read_only": True,
        "pg2_receiver": ("streaming", pg1.port),
        "acked_missing_on_pg1": 0,
        "critical_record_naming_pg3": True,
    }


@pytest.mark.timeout(150)
def test_stray_promote_of_a_lagging_replica_async(cluster: LocalCluster, tmp_path: Path) -> None:
    """Default asynchronous mode, pg3 not in maintenance: pg3 falls ~3 s behind while
    still looking attached (its WAL sender on pg1 and its WAL receiver are both
    frozen), then pg_promote() on it by mistake."""
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    config = write_config(cluster, tmp_path)
    pg1, pg3 = cluster.node("pg1"), cluster.node("pg3")
    with ServiceThread(config) as st:
        wait_for(lambda: _service_ready(st), 20, "pg1 adopted, all healthy")
        with Writer(dsn, interval=0.01, statement_timeout=1.0, max_duration=90) as writer:
            wait_for(lambda: len(writer.stats.acks) >= 20, 10, "writes on pg1")
            journal_from = len(st.journal())
            sender, recv = walsender_pid(pg1, "pg3"), walreceiver_pid(pg3)
            with stopped([sender, recv]) as frozen:
                cut_at = time.monotonic()
                time.sleep(3.0)
                behind = (lsn_of(pg1, "pg_current_wal_lsn()")
                          - lsn_of(pg3, "pg_last_wal_receive_lsn()"))
                acked_before = [a.id for a in writer.acks_since(cut_at + 0.5)]
                assert behind > 0 and acked_before, f"pg3 is not behind ({behind} bytes)"
                # The controller still sees pg3 attached: nothing to repair.
                assert receiver(pg3) == ("streaming", pg1.port)
                assert pg3.query("SELECT pg_promote(false)")[0][0] is True
                time.sleep(0.2)
                resume(frozen, recv)  # lets the receiver act on the startup's SIGTERM
                wait_for(lambda: in_recovery(pg3) is False, 15, "pg3 out of recovery")
            on_pg3 = _ids_on(cluster, "pg3")
            assert not set(acked_before) <= on_pg3, "pg3 has every write: it was not behind"
            time.sleep(5.0)
        facts = _stray_promotion_facts(cluster, st, writer, journal_from)
    del facts["pg2_receiver"], facts["critical_record_naming_pg3"]
    assert facts == {
        "controller_primary": "pg1",
        "pg1_read_only": False,
        "pg3_read_only": True,
        "acked_missing_on_pg1": 0,
    }


# --------------------------------------------------------------------------- 2. replay conflict

CONFLICT_CAP_S = 40.0  # the longest wait for the first write after the kill
WRITE_BOUND_S = 10.0
WATCH_S = 10.0  # after the first write: at most one promote lands


@contextlib.contextmanager
def _reporting_transaction(cluster: LocalCluster, name: str) -> Iterator[psycopg.Connection[Any]]:
    """A REPEATABLE READ transaction on ``name`` that has read table t and stays
    open (no commit) for the block; closed at the end, also on failure."""
    conn = psycopg.connect(cluster.dsn(name), autocommit=True, connect_timeout=2)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT count(*) FROM t")
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


@pytest.mark.timeout(170)
@pytest.mark.parametrize(
    "variant",
    [
        "defaults",
        pytest.param("standby_delay_unlimited", marks=pytest.mark.extended),
        pytest.param("cooldown_60", marks=pytest.mark.extended),
        # About 17 s, the slowest of the four: extended like the two above.
        pytest.param("held_back_only_candidate", marks=pytest.mark.extended),
    ],
)
def test_replay_conflict_on_the_replica_with_the_most_wal(
    cluster: LocalCluster, tmp_path: Path, variant: str
) -> None:
    """pg2 and pg3 received the same WAL, but a reporting query on pg2 holds back
    its replay of an ACCESS EXCLUSIVE lock; the primary is SIGKILLed. Writes must be
    accepted again within 10 s, and never by two promoted nodes."""
    pg1, pg2, pg3 = (cluster.node(n) for n in ("pg1", "pg2", "pg3"))
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    pg1.query("CREATE TABLE t (id int)")
    pg1.query("INSERT INTO t SELECT generate_series(1, 1000)")
    cluster.wait_replayed(cluster.current_lsn("pg1"), timeout=10)
    if variant in ("standby_delay_unlimited", "held_back_only_candidate"):
        pg2.query("ALTER SYSTEM SET max_standby_streaming_delay = -1")
        pg2.query("SELECT pg_reload_conf()")
        wait_for(lambda: pg2.query("SHOW max_standby_streaming_delay")[0][0] == "-1", 5,
                 "max_standby_streaming_delay = -1 on pg2")
    sections = {"timing": {"cooldown": 60.0}} if variant == "cooldown_60" else {}
    config = write_config(cluster, tmp_path, sections=sections)
    facts: dict[str, Any] = {}
    with (
        ServiceThread(config) as st,
        Writer(dsn, interval=0.02, statement_timeout=1.0, max_duration=120) as writer,
    ):
        wait_for(lambda: _service_ready(st), 20, "pg1 adopted, all healthy")
        wait_for(lambda: len(writer.stats.acks) >= 10, 10, "writes on pg1")
        if variant == "held_back_only_candidate":
            # pg2, held back for ever, is the only candidate: the promote itself must
            # end the reporting session that blocks its replay.
            on = cli(config, "maintenance", "pg3", "on")
            assert on.returncode == 0, on.stdout + on.stderr
            wait_for(lambda: "pg3" in st.service.controller.state.maintenance, 5,
                     "pg3 in maintenance")
        with _reporting_transaction(cluster, "pg2"):
            with psycopg.connect(pg1.dsn, autocommit=True, connect_timeout=2) as conn:
                with conn.transaction():
                    conn.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
                for i in range(5):
                    conn.execute("INSERT INTO t VALUES (%s)", (i,))
            # Every write acknowledged before this point is at or below target,
            # which both replicas receive: none of them may be lost (later ones
            # may, in asynchronous mode, and are not checked).
            target_read_at = time.monotonic()
            target = lsn_of(pg1, "pg_current_wal_lsn()")
            cluster.wait_replayed(target, nodes=["pg3"], timeout=10)
            wait_for(lambda: lsn_of(pg2, "pg_last_wal_receive_lsn()") >= target, 10,
                     "pg2 to receive the WAL")
            # Setup check: the conflict holds pg2's replay back, pg3 replayed it all.
            time.sleep(0.5)
            received = lsn_of(pg2, "pg_last_wal_receive_lsn()")
            replayed = lsn_of(pg2, "pg_last_wal_replay_lsn()")
            assert received >= target and replayed < target, (
                f"pg2 is not held back: received {received}, replayed {replayed},"
                f" target {target}"
            )
            assert lsn_of(pg3, "pg_last_wal_replay_lsn()") >= target
            killed_at = time.monotonic()
            pg1.kill()

            def new_acks() -> list[Any]:
                # pg1 may still acknowledge a write that was in flight at the kill.
                return [a for a in writer.acks_since(killed_at) if a.node != "pg1"]

            try:
                wait_for(new_acks, CONFLICT_CAP_S, "a write after the kill", step=0.02)
            except TimeoutError:
                first: float | None = None
            else:
                first = new_acks()[0].at - killed_at
            # Is there ever a second promoted node? Sampled from the first write on
            # (from the cap when there was none) for 10 s, at least at +0 s and +5 s;
            # only to +5 s when the write came too late anyway (a failing run).
            watch = WATCH_S if first is not None and first <= WRITE_BOUND_S else 5.0
            seen: set[str] = set()
            most = 0
            watch_from = time.monotonic()
            for _ in range(200):
                now = primaries_among(cluster, ["pg2", "pg3"])
                seen.update(now)
                most = max(most, len(now))
                if time.monotonic() - watch_from >= watch:
                    break
                time.sleep(0.2)
            facts["first_write_s"] = None if first is None else round(first, 1)
            facts["first_write_within_10s"] = first is not None and first <= WRITE_BOUND_S
            facts["most_promoted_at_once"] = most
            facts["promoted"] = sorted(seen)
        writer.stop()
        promotes = [r["node"] for r in kind_records(st.journal(), "action_started")
                    if r.get("action") == "Promote"]
        print(f"{variant}: first write {first} s after the kill; promoted {sorted(seen)};"
              f" Promote actions for {promotes}")
    final = primaries_among(cluster, ["pg2", "pg3"])
    checked = [a for a in writer.stats.acks
               if a.at < target_read_at or (a.at >= killed_at and a.node != "pg1")]
    if len(final) == 1:
        facts["acked_missing_on_final_primary"] = len(
            lost_writes(checked, _ids_on(cluster, final[0]))
        )
    else:
        facts["acked_missing_on_final_primary"] = f"no single primary: {final}"
    first_s = facts.pop("first_write_s")
    assert facts == {
        "first_write_within_10s": True,
        "most_promoted_at_once": 1,
        "promoted": final,
        "acked_missing_on_final_primary": 0,
    }, f"first write {first_s} s after the kill (cap {CONFLICT_CAP_S:g} s)"


# --------------------------------------------------------------------------- 3. controller killed

RESTART_BOUND_S = 10.0


@pytest.mark.timeout(180)
def test_controller_killed_after_the_switchover_fence(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The controller (a subprocess) is SIGKILLed while its switchover waits, after
    fencing pg1, for a target that cannot catch up (pg2's WAL receiver frozen). The
    restarted controller must lift the fence (pg2 was never promoted), record that
    the switchover was settled, and accept a retried switchover."""
    pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    config = write_config(cluster, tmp_path, drivers=True)
    journal = tmp_path / "journal.jsonl"
    first_ctl = ControllerProcess(config, tmp_path, "controller1")
    second_ctl = ControllerProcess(config, tmp_path, "controller2")
    facts: dict[str, Any] = {}
    try:
        first_ctl.start()
        wait_for(lambda: settled_on(config, "pg1"), 30, "pg1 adopted, all healthy",
                 step=0.2)
        with Writer(dsn, interval=0.02, statement_timeout=1.0, max_duration=150) as writer:
            wait_for(lambda: len(writer.stats.acks) >= 10, 10, "writes on pg1")
            with stopped([walreceiver_pid(pg2)]):
                # WAL pg2 cannot receive: the switchover cannot get past its catch-up.
                pg1.query("CREATE TABLE filler (pad text)")
                pg1.query("INSERT INTO filler SELECT repeat('x', 100)"
                          " FROM generate_series(1, 500)")
                asked = cli(config, "switchover", "--to", "pg2", "--no-wait")
                assert asked.returncode == 0, asked.stdout + asked.stderr
                wait_for(
                    lambda: [r for r in kind_records(records(journal), "switchover_step")
                             if r.get("step") == "fence"],
                    15, "the switchover's fence step", step=0.02,
                )
                first_ctl.kill()
                # Setup check: killed in the middle, pg1 fenced, pg2 not promoted.
                assert not kind_records(records(journal), "switchover_finished")
                assert read_only(pg1) is True
                assert in_recovery(pg2) is True
                second_ctl.start()
                restart_at = second_ctl.started_at
                restart_wall = second_ctl.started_wall
                assert restart_at is not None and restart_wall is not None

                def pg1_acks() -> list[Any]:
                    return [a for a in writer.acks_since(restart_at) if a.node == "pg1"]

                with contextlib.suppress(TimeoutError):
                    wait_for(pg1_acks, RESTART_BOUND_S + 2, "a write on pg1", step=0.05)
                acks = pg1_acks()
                first = acks[0].at - restart_at if acks else None
                facts["write_within_10s_of_restart"] = (
                    first is not None and first <= RESTART_BOUND_S
                )
                after = [r for r in records(journal) if float(r.get("ts", 0)) >= restart_wall]
                facts["switchover_record_after_restart"] = any(
                    "switchover" in str(r.get("kind")) for r in after
                )
                facts["pg2_in_recovery"] = in_recovery(pg2)
            # pg2 can catch up again.
            cluster.wait_streaming("pg2", timeout=30, upstream="pg1")
            cluster.wait_replayed(cluster.current_lsn("pg1"), nodes=["pg2"], timeout=20)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: settled_on(config, "pg1"), 10, "pg1 settled", step=0.2)
            retry = cli(config, "switchover", "--to", "pg2", "--timeout", "45", timeout=90)
            facts["retry_exit_code"] = retry.returncode
            facts["primaries_after_retry"] = cluster.primaries()
            if facts["primaries_after_retry"] == ["pg2"]:
                retried_at = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: [a for a in writer.acks_since(retried_at)
                                      if a.node == "pg2"], 10, "writes on pg2")
        final = cluster.primaries()
        facts["acked_missing_on_final_primary"] = (
            len(lost_writes(writer.stats.acks, _ids_on(cluster, final[0])))
            if len(final) == 1 else f"no single primary: {final}"
        )
        print(f"first write on pg1 {first} s after the restart; retry: {retry.stdout}"
              f"{retry.stderr}")
        if not second_ctl.alive():
            facts["restarted_controller_exit_code"] = second_ctl.returncode()
            print(f"the restarted controller exited:\n{second_ctl.output_tail(30)}")
    finally:
        first_ctl.kill()
        second_ctl.stop()
    assert facts == {
        "write_within_10s_of_restart": True,
        "switchover_record_after_restart": True,
        "pg2_in_recovery": True,
        "retry_exit_code": 0,
        "primaries_after_retry": ["pg2"],
        "acked_missing_on_final_primary": 0,
    }, f"first write on pg1 {first} s after the restart; retry said: {retry.stdout}{retry.stderr}"


def _stop_hook(pidfile: Path) -> None:
    """Kill the hook's ``sleep`` by the PID it wrote, if it still runs."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"sleep" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(150)
def test_controller_killed_during_the_pre_promote_hook(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """pg1 is SIGKILLed; the failover's pre_promote hook sleeps 4 s and the controller
    is SIGKILLed meanwhile; restarted without the hook, it must promote the
    failover's candidate within 8 s, and only it."""
    pg1 = cluster.node("pg1")
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    pidfile = tmp_path / "hook.pid"
    hook = f"echo $$ > {pidfile}; exec sleep 4"
    config = write_config(cluster, tmp_path, sections={"hooks": {"pre_promote": hook}})
    journal = tmp_path / "journal.jsonl"
    first_ctl = ControllerProcess(config, tmp_path, "controller1")
    second_ctl = ControllerProcess(config, tmp_path, "controller2")
    facts: dict[str, Any] = {}
    try:
        first_ctl.start()
        wait_for(lambda: settled_on(config, "pg1"), 30, "pg1 adopted, all healthy",
                 step=0.2)
        with Writer(dsn, interval=0.02, statement_timeout=1.0, max_duration=120) as writer:
            wait_for(lambda: len(writer.stats.acks) >= 10, 10, "writes on pg1")
            # Acknowledged before this LSN was read: on both replicas once replayed.
            target_read_at = time.monotonic()
            cluster.wait_replayed(cluster.current_lsn("pg1"), nodes=["pg2", "pg3"])
            killed_at = time.monotonic()
            pg1.kill()
            started = wait_for(lambda: kind_records(records(journal), "failover_started"),
                               20, "failover_started", step=0.02)
            candidate = str(started[0]["node"])
            wait_for(pidfile.exists, 5, "the pre_promote hook to run", step=0.02)
            first_ctl.kill()
            # Setup check: the controller died before the promote.
            assert in_recovery(cluster.node(candidate)) is True
            config.write_text(config.read_text().replace(
                f"pre_promote = {toml_value(hook)}\n", ""
            ))
            assert "pre_promote" not in config.read_text()
            second_ctl.start()
            restart_at = second_ctl.started_at
            assert restart_at is not None
            promoted: float | None = None
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: in_recovery(cluster.node(candidate)) is False, 15,
                         f"{candidate} promoted", step=0.05)
                promoted = time.monotonic() - restart_at
            facts["candidate_promoted_within_8s"] = promoted is not None and promoted <= 8.0
            seen: set[tuple[str, ...]] = set()
            for _ in range(10):
                seen.add(tuple(cluster.primaries()))
                time.sleep(0.2)
            facts["primaries_seen"] = sorted(seen)
            if promoted is not None:
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: [a for a in writer.acks_since(killed_at)
                                      if a.node == candidate], 10, f"writes on {candidate}")
        if promoted is not None:
            checked = [a for a in writer.stats.acks
                       if a.at < target_read_at or a.node == candidate]
            facts["acked_missing_on_candidate"] = len(
                lost_writes(checked, _ids_on(cluster, candidate))
            )
        else:
            facts["acked_missing_on_candidate"] = "not promoted"
    finally:
        first_ctl.kill()
        second_ctl.stop()
        _stop_hook(pidfile)
    assert facts == {
        "candidate_promoted_within_8s": True,
        "primaries_seen": [(candidate,)],
        "acked_missing_on_candidate": 0,
    }, (f"{candidate} promoted {promoted} s after the restart (the restart came"
        f" {restart_at - killed_at:.1f} s after pg1's kill)")


# --------------------------------------------------------------------------- 4. cluster identity


def _system_identifier(node: Node) -> int:
    return int(node.query("SELECT system_identifier FROM pg_control_system()")[0][0])


def _timeline(node: Node) -> int:
    return int(str(node.query(
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")[0][0]), 16)


@pytest.mark.timeout(150)
def test_a_node_dsn_pointing_at_another_clusters_primary(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A reload points pg2's DSN at the primary of another cluster (another initdb,
    on timeline 2). pg1 must stay the primary, writable and unfenced; the foreign
    server must not be touched; a critical record must name pg2."""
    pg1 = cluster.node("pg1")
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    config = write_config(cluster, tmp_path)
    journal = tmp_path / "journal.jsonl"
    ctl = ControllerProcess(config, tmp_path)
    facts: dict[str, Any] = {}
    with LocalCluster(nodes=2) as foreign_cluster:
        foreign = foreign_cluster.node("pg2")
        assert foreign.query("SELECT pg_promote()")[0][0] is True
        foreign_cluster.node("pg1").stop()
        # Setup check: another system, on timeline 2, writable.
        assert _system_identifier(foreign) != _system_identifier(pg1)
        assert _timeline(foreign) == 2 and _timeline(pg1) == 1
        assert read_only(foreign) is False
        try:
            ctl.start()
            wait_for(lambda: settled_on(config, "pg1"), 30, "pg1 adopted, all healthy",
                     step=0.2)
            with Writer(dsn, interval=0.02, statement_timeout=1.0, max_duration=90) as writer:
                wait_for(lambda: len(writer.stats.acks) >= 10, 10, "writes on pg1")
                journal_from = len(records(journal))
                mine = cluster.node("pg2").port
                text = config.read_text()
                assert text.count(f"port={mine} ") == 2  # pg2's dsn and replication_dsn
                config.write_text(text.replace(f"port={mine} ", f"port={foreign.port} "))
                ctl.signal(signal.SIGHUP)
                wait_for(lambda: kind_records(records(journal)[journal_from:],
                                              "config_reloaded"),
                         10, "the reload", step=0.05)
                pg1_states: set[bool | None] = set()
                foreign_states: set[bool | None] = set()
                until = time.monotonic() + 10.0
                for _ in range(200):
                    pg1_states.add(read_only(pg1))
                    foreign_states.add(read_only(foreign))
                    if time.monotonic() >= until:
                        break
                    time.sleep(0.1)
                facts["pg1_read_only_seen"] = sorted(pg1_states, key=str)
                facts["foreign_read_only_seen"] = sorted(foreign_states, key=str)
                snap = wait_for(lambda: api_status(config), 5, "the status")
                facts["controller_primary"] = snap.get("primary")
                facts["critical_record_naming_pg2"] = bool(
                    critical_about(records(journal)[journal_from:], "pg2")
                )
            facts["acked_missing_on_pg1"] = len(
                lost_writes(writer.stats.acks, _ids_on(cluster, "pg1"))
            )
        finally:
            ctl.stop()
    assert facts == {
        "pg1_read_only_seen": [False],
        "foreign_read_only_seen": [False],
        "controller_primary": "pg1",
        "critical_record_naming_pg2": True,
        "acked_missing_on_pg1": 0,
    }


@pytest.mark.timeout(150)
def test_a_journal_left_by_another_cluster(tmp_path: Path) -> None:
    """Cluster X's controller failed over (pg2 primary, pg1 fenced, in its journal).
    A controller for a brand-new cluster Y started on that journal must never make
    Y's pg1 read-only: it refuses to start (exit code 2, one line naming the
    journal) or starts, leaves pg1 writable and journals something critical."""
    shared = tmp_path / "shared-journal.jsonl"
    with LocalCluster(nodes=3) as x, ControllerThread(make_config(x, shared)) as ct:
        wait_for(lambda: ct.ctl.state.primary == "pg1" and ct.ctl.rounds >= 3, 15,
                 "X's controller to adopt pg1")
        x.node("pg1").kill()
        wait_for(lambda: ct.ctl.state.primary == "pg2", 20, "X's failover to pg2")
        wait_for(lambda: [r for r in kind_records(ct.journal(), "node_fenced")
                          if r.get("node") == "pg1"], 10, "pg1 fenced in X's journal")
    x_records = len(records(shared))
    y_dir = tmp_path / "y"
    y_dir.mkdir()
    facts: dict[str, Any] = {}
    with LocalCluster(nodes=3) as y:
        pg1 = y.node("pg1")
        assert read_only(pg1) is False
        config = write_config(y, y_dir, journal=shared, api=False)
        ctl = ControllerProcess(config, y_dir)
        try:
            ctl.start()
            states: set[bool | None] = set()
            until = time.monotonic() + 5.0
            for _ in range(200):
                states.add(read_only(pg1))
                if time.monotonic() >= until:
                    break
                time.sleep(0.05)
            code = ctl.returncode()
            facts["pg1_read_only_seen"] = sorted(states, key=str)
            facts["pg1_writable"] = can_write(pg1)
            if code is None:
                new = records(shared)[x_records:]
                facts["outcome"] = (
                    "running, critical record"
                    if [r for r in new if r.get("severity") == "critical"]
                    else "running, no critical record"
                )
            else:
                err = [line for line in ctl.stderr().splitlines() if line.strip()]
                named = [line for line in err if shared.name in line]
                facts["outcome"] = (
                    "refused to start, naming the journal"
                    if code == 2 and named
                    else f"exited {code}: {err[-3:]}"
                )
        finally:
            ctl.stop()
    accepted = ("running, critical record", "refused to start, naming the journal")
    assert facts["outcome"] in accepted, facts
    assert facts == {
        "pg1_read_only_seen": [False],
        "pg1_writable": True,
        "outcome": facts["outcome"],
    }
