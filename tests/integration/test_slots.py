"""Physical member slots against real PostgreSQL clusters: the slots a new primary
gets, a stopped replica and a rewound old primary finding their WAL although
wal_keep_size keeps none, expiry, and slots hacontrol does not own."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hacontrol.config import Config, config_from_mapping
from hacontrol.testing import LocalCluster

from .support import ControllerThread, kinds, make_config, wait_until, watching, write_rows

pytestmark = pytest.mark.integration

# No WAL kept for replicas but by their slots, and little kept for recycling (set
# once the replicas exist: their base backups need the WAL kept meanwhile).
TINY_WAL = {"wal_keep_size": "0", "max_wal_size": "32MB", "min_wal_size": "32MB"}


def tiny_wal(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        for name, value in TINY_WAL.items():
            node.query(f"ALTER SYSTEM SET {name} = '{value}'")
        node.query("SELECT pg_reload_conf()")
FAST = {"probe_interval": 0.1, "cooldown": 0}


def slots(cluster: LocalCluster, node: str) -> dict[str, tuple[str, bool]]:
    """slot name -> (kind, active) on ``node``."""
    rows = cluster.node(node).query(
        "SELECT slot_name, slot_type, active FROM pg_replication_slots")
    return {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}


def streams_through(cluster: LocalCluster, primary: str, slot: str) -> bool:
    """True while a WAL sender on ``primary`` serves ``slot``."""
    rows = cluster.node(primary).query(
        "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_replication r"
        " ON r.pid = s.active_pid WHERE s.slot_name = %s AND r.state = 'streaming'",
        (slot,))
    return int(rows[0][0]) == 1


def members_settled(cluster: LocalCluster, primary: str, others: list[str]) -> bool:
    return all(streams_through(cluster, primary, f"hacontrol_{n}") for n in others)


def settled(ct: ControllerThread, cluster: LocalCluster) -> bool:
    """The controller watches pg1 and both replicas stream through their slots."""
    return watching(ct) and members_settled(cluster, "pg1", ["pg2", "pg3"])


def recycle_wal(cluster: LocalCluster, node: str, segments: int = 6) -> None:
    """Write, switch and checkpoint until WAL nobody holds would be gone."""
    for _ in range(segments):
        write_rows(cluster, node, 200)
        cluster.node(node).query("SELECT pg_switch_wal()")
        cluster.node(node).query("CHECKPOINT")


def older_segments(cluster: LocalCluster, node: str, slot: str) -> int:
    """WAL segments in pg_wal older than the one ``slot`` holds on to."""
    rows = cluster.node(node).query(
        "SELECT count(*) FROM pg_ls_waldir() w, pg_replication_slots s WHERE s.slot_name = %s"
        " AND w.name ~ '^[0-9A-F]{24}$' AND w.name < pg_walfile_name(s.restart_lsn + 1)", (slot,))
    return int(rows[0][0])


def segment_on_disk(cluster: LocalCluster, node: str, slot: str) -> bool:
    """True when the WAL segment holding ``slot``'s restart LSN is still in pg_wal
    (+ 1: pg_walfile_name names the segment before a boundary)."""
    rows = cluster.node(node).query(
        "SELECT count(*) FROM pg_ls_waldir() w, pg_replication_slots s"
        " WHERE s.slot_name = %s AND w.name = pg_walfile_name(s.restart_lsn + 1)", (slot,))
    return int(rows[0][0]) == 1


def driver_config(cluster: LocalCluster, journal: Path, **sections: Any) -> Config:
    data = tomllib.loads(cluster.config_toml(drivers=True))
    data["journal"] = str(journal)
    data.update(sections)
    return config_from_mapping(data)


def test_a_failover_gives_the_new_primary_a_slot_for_every_other_node(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Slots for the repointed replica and for the old primary; slots hacontrol does
    not own are never touched, on the old primary nor on the new one."""
    cluster.node("pg1").query("SELECT pg_create_physical_replication_slot('backup_tool')")
    for name in ("pg2", "pg3"):
        cluster.node(name).query("SELECT pg_create_physical_replication_slot('hacontrolled')")
    config = make_config(cluster, tmp_path / "j.jsonl", timing=FAST)
    with ControllerThread(config) as ct:
        wait_until(lambda: settled(ct, cluster), 20,
                   "both replicas streaming through their member slots")
        assert cluster.node("pg2").query("SHOW primary_slot_name")[0][0] == "hacontrol_pg2"
        cluster.node("pg1").kill()
        new = wait_until(lambda: ct.ctl.state.primary if ct.ctl.state.primary != "pg1"
                         else None, 20, "a failover")
        other = "pg3" if new == "pg2" else "pg2"
        wait_until(lambda: streams_through(cluster, new, f"hacontrol_{other}"), 20,
                   f"{other} streaming through its slot on {new}")
        found = slots(cluster, new)
        # The old primary's slot exists before it is rejoined: its WAL is kept.
        assert found["hacontrol_pg1"] == ("physical", False), found
        assert f"hacontrol_{new}" not in found, found
        time.sleep(1.0)
        status = ct.ctl.status().to_json()
        records = ct.journal()
    # Slots named without the prefix survive: on the promoted node, on the other.
    for name in ("pg2", "pg3"):
        assert slots(cluster, name)["hacontrolled"] == ("physical", False), name
    promoted = kinds(records, "promote_succeeded")
    assert promoted and "member slot(s) created" in promoted[0]["message"], promoted
    row = next(r for r in status["nodes"] if r["name"] == new)
    shown = {s["name"]: s for s in row["slots"]}
    assert shown["hacontrol_pg1"]["active"] is False
    assert shown["hacontrol_pg1"]["retained_bytes"] is not None
    assert shown[f"hacontrol_{other}"]["active"] is True


def test_a_stopped_replica_catches_up_from_its_slot_although_wal_keep_size_is_zero(
    tmp_path: Path,
) -> None:
    with LocalCluster(3) as cluster:
        tiny_wal(cluster)
        config = make_config(cluster, tmp_path / "j.jsonl", timing=FAST)
        with ControllerThread(config) as ct:
            wait_until(lambda: settled(ct, cluster), 20,
                       "member slots in use")
            cluster.node("pg3").stop()
            recycle_wal(cluster, "pg1")
            # Without the slot this segment would be gone (wal_keep_size = 0): the
            # checkpoints did remove every older one.
            assert segment_on_disk(cluster, "pg1", "hacontrol_pg3")
            assert older_segments(cluster, "pg1", "hacontrol_pg3") == 0
            status = ct.ctl.status().to_json()
            row = next(r for r in status["nodes"] if r["name"] == "pg1")
            held = {s["name"]: s for s in row["slots"]}["hacontrol_pg3"]
            assert held["active"] is False and held["retained_bytes"] > 2 * 16 * 1024 * 1024
            cluster.node("pg3").start()
            cluster.wait_streaming("pg3", timeout=20, upstream="pg1")
            cluster.wait_replayed(cluster.current_lsn("pg1"), ["pg3"], timeout=20)
            log = cluster.node("pg3").log_path.read_text(errors="replace")
        assert "has already been removed" not in log


def test_the_old_primary_rejoins_by_pg_rewind_from_wal_its_slot_kept(tmp_path: Path) -> None:
    with LocalCluster(3) as cluster:
        tiny_wal(cluster)
        config = driver_config(cluster, tmp_path / "j.jsonl", timing=FAST)
        with ControllerThread(config) as ct:
            wait_until(lambda: settled(ct, cluster), 20,
                       "member slots in use")
            write_rows(cluster, "pg1", 100)
            cluster.node("pg1").kill()
            new = wait_until(lambda: ct.ctl.state.primary if ct.ctl.state.primary
                             not in (None, "pg1") else None, 20, "a failover")
            # WAL nobody but pg1's slot holds: a rewind needs it from the fork on.
            recycle_wal(cluster, new)
            wait_until(lambda: kinds(ct.journal(), "rejoin_finished"), 60,
                       "the automatic rejoin of pg1")
            finished = kinds(ct.journal(), "rejoin_finished")[-1]
            assert finished["ok"] is True and finished["method"] == "rewind", finished
            wait_until(lambda: streams_through(cluster, new, "hacontrol_pg1"), 20,
                       "pg1 streaming through its slot")
            log = cluster.node("pg1").log_path.read_text(errors="replace")
        assert "has already been removed" not in log


def test_a_member_away_past_slot_retention_loses_its_slot_with_an_event(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = make_config(cluster, tmp_path / "j.jsonl", timing=FAST,
                         replication={"slot_retention": 2.0})
    with ControllerThread(config) as ct:
        wait_until(lambda: settled(ct, cluster), 20,
                   "member slots in use")
        cluster.node("pg3").stop()
        wait_until(lambda: "hacontrol_pg3" not in slots(cluster, "pg1"), 15,
                   "the away member's slot dropped")
        expired = kinds(ct.journal(), "slot_expired")
        assert expired and expired[0]["details"]["member"] == "pg3", expired
        assert "slot_retention" in expired[0]["message"]
        assert "hacontrol_pg2" in slots(cluster, "pg1")
        # Back again, it gets a slot again and streams through it.
        cluster.node("pg3").start()
        wait_until(lambda: streams_through(cluster, "pg1", "hacontrol_pg3"), 20,
                   "pg3 streaming through a new slot")


def test_member_slots_off_streams_without_slots_and_drops_its_own_then_on_again(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with ControllerThread(make_config(cluster, tmp_path / "a.jsonl", timing=FAST)) as ct:
        wait_until(lambda: settled(ct, cluster), 20,
                   "member slots in use")
    cluster.node("pg1").query("SELECT pg_create_physical_replication_slot('other_tool')")
    config = make_config(cluster, tmp_path / "b.jsonl", timing=FAST,
                         replication={"slots": False})
    with ControllerThread(config):
        wait_until(lambda: set(slots(cluster, "pg1")) == {"other_tool"}, 20,
                   "the member slots dropped once unused")
        for name in ("pg2", "pg3"):
            cluster.wait_streaming(name, timeout=10, upstream="pg1")
            assert cluster.node(name).query("SHOW primary_slot_name")[0][0] == ""
    # On again: the controller creates the slots and sets the replicas up itself.
    with ControllerThread(make_config(cluster, tmp_path / "c.jsonl", timing=FAST)) as ct:
        wait_until(lambda: settled(ct, cluster), 20,
                   "the replicas streaming through new member slots")
    assert set(slots(cluster, "pg1")) == {"other_tool", "hacontrol_pg2", "hacontrol_pg3"}
