import json
from pathlib import Path

from hacontrol.journal import Journal


def test_append_is_durable_and_redacted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j" / "journal.jsonl")
    journal.append("failover_started", node="pg2", dsn="host=a password=hunter2 user=x")
    text = (tmp_path / "j" / "journal.jsonl").read_text()
    assert "hunter2" not in text
    record = json.loads(text)
    assert record["seq"] == 1 and record["kind"] == "failover_started" and record["node"] == "pg2"


def test_sequence_continues_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).append("a")
    second = Journal(path).append("b")
    assert second["seq"] == 2


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append("primary_adopted", node="pg1")
    with path.open("a") as handle:
        handle.write('{"seq": 2, "kind": "failover_comp')
    assert [r["kind"] for r in Journal(path).read()] == ["primary_adopted"]


def test_recover_replays_primary_flags_and_fences(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("primary_adopted", node="pg1")
    journal.append("paused")
    journal.append("maintenance_on", node="pg3")
    journal.append("failover_completed", node="pg2", old_primary="pg1")
    journal.append("node_fenced", node="pg1")
    journal.append("resumed")
    state = journal.recover()
    assert state.primary == "pg2"
    assert not state.paused
    assert state.maintenance == frozenset({"pg3"})
    assert state.fenced == frozenset({"pg1"})
    assert state.last_failover_wall is not None
    assert state.records == 6


def test_read_limit_and_kinds(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    for i in range(5):
        journal.append("tick", n=i)
    journal.append("other")
    assert [r["n"] for r in journal.read(limit=2, kinds=frozenset({"tick"}))] == [3, 4]
    assert Journal(tmp_path / "missing.jsonl").read() == []


def test_failover_started_and_never_ended_is_unresolved_and_starts_the_cooldown(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("primary_adopted", node="pg1")
    started = journal.append(
        "failover_started", node="pg2", details={"old_primary": "pg1", "old_timeline": 1}
    )
    state = journal.recover()
    assert state.primary == "pg1"
    assert state.unresolved_failover == {
        "node": "pg2", "old_primary": "pg1", "old_timeline": 1, "operation": "failover",
        "started": started["ts"], "previous_failover": None,
    }
    assert state.last_failover_wall == started["ts"]
    journal.append("failover_abandoned", node="pg2")
    state = journal.recover()
    assert state.unresolved_failover is None
    assert state.last_failover_wall == started["ts"]  # the cool-down still counts


def test_a_switchover_left_unfinished_is_unresolved_until_the_core_reports_its_end(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("primary_adopted", node="pg1")
    started = journal.append(
        "switchover_started", node="pg2",
        details={"old_primary": "pg1", "old_timeline": 1, "operation": "switchover"},
    )
    # The procedure's own records (no details) neither start nor end it.
    journal.append("switchover_started", old_primary="pg1", target="pg2")
    journal.append("switchover_step", old_primary="pg1", target="pg2", step="fence", ok=True)
    unresolved = journal.recover().unresolved_failover
    assert unresolved is not None
    assert unresolved["node"] == "pg2" and unresolved["operation"] == "switchover"
    assert unresolved["started"] == started["ts"]
    # A switchover does not start the failover cool-down.
    assert journal.recover().last_failover_wall is None
    journal.append("switchover_settled", node="pg2", details={"outcome": "not_promoted"})
    assert journal.recover().unresolved_failover is None


def test_the_cluster_identity_is_recovered_from_the_last_identification(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.recover().system_identifier is None
    journal.append("cluster_identified", node=None, details={"system_identifier": 7301})
    assert journal.recover().system_identifier == 7301
