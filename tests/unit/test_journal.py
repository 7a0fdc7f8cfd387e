import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacontrol.core.recovery import SNAPSHOT_KIND, RecoveredState
from hacontrol.io import journal as journal_module
from hacontrol.io.journal import Journal
from hacontrol.io.journal_lines import parse_since


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


# ---------------------------------------------------------------- bounded reads, rotation


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """time.time() in the journal module: 1000.0, 1000.5, 1001.0, ... (settable)."""
    now = [1000.0]

    def fake() -> float:
        now[0] += 0.5
        return now[0]

    monkeypatch.setattr(journal_module.time, "time", fake)
    yield now


def bytes_read() -> int:
    """Bytes this process has read through read() calls so far (Linux)."""
    with open("/proc/self/io", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def fill(path: Path, count: int) -> None:
    """``count`` realistic records, written the fast way (one write)."""
    lines = []
    for i in range(count):
        record = {"seq": i + 1, "ts": 1_700_000_000.0 + i, "kind": "action_finished",
                  "node": f"pg{i % 3 + 1}", "action": "Repoint", "status": "succeeded",
                  "detail": "primary_conninfo set and reloaded; the replica follows pg2 " * 2}
        lines.append(json.dumps(record, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_reading_the_last_records_reads_the_tail_not_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    fill(path, 60_000)  # about 12 MB
    size = path.stat().st_size
    journal = Journal(path)
    before = bytes_read()
    records = journal.read(limit=1)
    spent = bytes_read() - before
    assert [r["seq"] for r in records] == [60_000]
    assert spent < 256 * 1024, f"read {spent} bytes of {size} for one record"
    before = bytes_read()
    assert len(journal.read(limit=100)) == 100
    assert bytes_read() - before < 256 * 1024


def test_open_does_not_count_lines_to_continue_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    fill(path, 5_000)
    assert Journal(path).append("next")["seq"] == 5_001


def test_read_filters_by_kind_node_and_since(tmp_path: Path, clock: list[float]) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    for i in range(30):
        journal.append("node_unreachable" if i % 2 else "node_recovered", node=f"pg{i % 3 + 1}",
                       n=i)
    # Times are 1000.5, 1001.0, ... (n=0 at 1000.5).
    assert [r["n"] for r in journal.read(kinds={"node_unreachable"}, nodes={"pg2"})] == [
        1, 7, 13, 19, 25,
    ]
    assert [r["n"] for r in journal.read(limit=2, nodes={"pg1", "pg3"})] == [27, 29]
    assert [r["n"] for r in journal.read(since=1000.5 + 26 * 0.5)] == [26, 27, 28, 29]
    assert journal.read(kinds={"never_written"}) == []
    both = journal.read(limit=3, kinds={"node_recovered", "node_unreachable"}, since=1005.0)
    assert [r["n"] for r in both] == [27, 28, 29]


def test_parse_since() -> None:
    now = 1_764_625_212.0
    assert parse_since("10m", now) == now - 600
    assert parse_since("2h", now) == now - 7200
    assert parse_since("90s", now) == now - 90
    assert parse_since("1d", now) == now - 86400
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("2025-12-01T21:40:12Z") == 1_764_625_212.0
    assert parse_since("2025-12-01 21:40:12") == 1_764_625_212.0  # no offset: UTC
    assert parse_since("2025-12-01T22:40:12+01:00") == 1_764_625_212.0
    assert parse_since("1764625212") == 1_764_625_212.0
    for bad in ("", "yesterday", "10x", "-5m", "2025-13-01"):
        with pytest.raises(ValueError, match="duration back from now"):
            parse_since(bad, now)


def scripted(journal: Journal) -> None:
    """Every kind of record recover() derives something from."""
    journal.append("cluster_identified", node=None, details={"system_identifier": 7301})
    journal.append("primary_adopted", node="pg1")
    journal.append("maintenance_on", node="pg3")
    journal.append("paused")
    journal.append("failover_started", node="pg2",
                   details={"old_primary": "pg1", "old_timeline": 1})
    journal.append("failover_completed", node="pg2")
    journal.append("node_fenced", node="pg1")
    journal.append("resumed")
    journal.append("paused")
    journal.append("switchover_started", node="pg3",
                   details={"old_primary": "pg2", "old_timeline": 2, "operation": "switchover"})
    for i in range(20):
        journal.append("action_finished", node="pg3", detail="x" * 50, n=i)


def test_rotation_keeps_what_recover_derives(tmp_path: Path, clock: list[float]) -> None:
    plain = Journal(tmp_path / "plain" / "journal.jsonl")
    scripted(plain)
    clock[0] = 1000.0
    rotated = Journal(tmp_path / "rotated" / "journal.jsonl", rotate_bytes=600, keep=0)
    scripted(rotated)
    expected = plain.recover()
    assert expected.unresolved_failover is not None and expected.fenced == {"pg1"}
    assert list((tmp_path / "rotated").iterdir()) == [tmp_path / "rotated" / "journal.jsonl"]
    # A restarted controller sees the same facts, from the snapshot and what follows it.
    assert Journal(tmp_path / "rotated" / "journal.jsonl").recover() == expected
    assert rotated.recover() == expected
    head = json.loads((tmp_path / "rotated" / "journal.jsonl").read_text().splitlines()[0])
    assert head["kind"] == SNAPSHOT_KIND and head["snapshot"]["format"] == 1
    assert set(head["snapshot"]) == {
        "format", "records", "primary", "paused", "maintenance", "fenced",
        "last_failover_wall", "unresolved_failover", "system_identifier",
    }


def test_rotation_keeps_n_old_files_and_read_spans_them(
    tmp_path: Path, clock: list[float]
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, rotate_bytes=2_000, keep=2)
    for i in range(200):
        journal.append("tick", node="pg1", n=i, pad="y" * 40)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["journal.jsonl", "journal.jsonl.1", "journal.jsonl.2"]
    assert all(p.stat().st_size < 2_000 + 200 for p in tmp_path.iterdir())
    # The last records come from the current and the kept files, in order, once each,
    # without the snapshot records.
    kept = journal.read()
    numbers = [r["n"] for r in kept]
    assert numbers == sorted(numbers) and numbers[-1] == 199 and len(set(numbers)) == len(kept)
    assert len(kept) > 20
    assert journal.read(limit=len(kept) - 1) == kept[1:]
    assert SNAPSHOT_KIND not in {r["kind"] for r in kept}
    snapshots = journal.read(kinds={SNAPSHOT_KIND})
    assert snapshots and all(s["snapshot"]["records"] > 0 for s in snapshots)
    seqs = [r["seq"] for r in journal.read(kinds={"tick", SNAPSHOT_KIND})]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert journal.recover().records == 200


def test_rotation_by_age(tmp_path: Path, clock: list[float]) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, rotate_bytes=None, rotate_age_s=10.0, keep=1)
    for _ in range(5):
        journal.append("tick")  # 2.5 s of records
    assert not (tmp_path / "journal.jsonl.1").exists()
    clock[0] += 20.0
    journal.append("tick")
    assert (tmp_path / "journal.jsonl.1").exists()
    assert json.loads(path.read_text().splitlines()[0])["kind"] == SNAPSHOT_KIND
    assert journal.recover().records == 6


def test_an_interrupted_rotation_is_completed_or_undone(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    rotating = tmp_path / "journal.jsonl.rotating"
    Journal(path).append("primary_adopted", node="pg1")
    # Crash after the new file was written, before the current one was renamed away.
    rotating.write_text(json.dumps({"seq": 2, "ts": 1.0, "kind": SNAPSHOT_KIND,
                                    "snapshot": {"format": 1, "records": 1,
                                                 "primary": "pg9"}}) + "\n")
    assert Journal(path).recover().primary == "pg1"
    assert not rotating.exists()
    # Crash between the two renames: the current file is gone, the new one complete.
    os.replace(path, tmp_path / "journal.jsonl.1")
    rotating.write_text(json.dumps({"seq": 2, "ts": 1.0, "kind": SNAPSHOT_KIND,
                                    "snapshot": {"format": 1, "records": 1,
                                                 "primary": "pg1", "paused": True}}) + "\n")
    state = Journal(path).recover()
    assert (state.primary, state.paused, state.records) == ("pg1", True, 1)
    assert path.exists() and not rotating.exists()


def test_a_record_after_a_torn_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).append("primary_adopted", node="pg1")
    with path.open("a") as handle:
        handle.write('{"seq": 2, "kind": "failover_comp')
    reader = Journal(path)
    assert path.read_text().endswith("failover_comp")  # reading alone writes nothing
    reader.append("paused")
    assert [r["kind"] for r in Journal(path).read()] == ["primary_adopted", "paused"]
    assert Journal(path).recover().paused


def test_concurrent_appends_with_rotation_lose_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", rotate_bytes=4_000, keep=1_000)
    threads = [
        threading.Thread(target=lambda t=t: [journal.append("tick", t=t, n=n)
                                             for n in range(100)])
        for t in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    records = journal.read()
    assert sorted((r["t"], r["n"]) for r in records) == [
        (t, n) for t in range(8) for n in range(100)
    ]
    every = journal.read(kinds={"tick", SNAPSHOT_KIND})
    assert [r["seq"] for r in every] == list(range(1, len(every) + 1))
    assert journal.recover().records == 800
    assert Journal(tmp_path / "journal.jsonl").recover().records == 800


EVENTS = st.sampled_from([
    ("primary_adopted", "pg1"), ("primary_adopted", "pg2"), ("failover_completed", "pg2"),
    ("failover_completed", "pg3"), ("switchover_completed", "pg1"), ("node_fenced", "pg1"),
    ("node_fenced", "pg2"), ("node_rejoined", "pg1"), ("paused", None), ("resumed", None),
    ("maintenance_on", "pg3"), ("maintenance_off", "pg3"), ("failover_started", "pg2"),
    ("switchover_started", "pg3"), ("failover_abandoned", "pg2"), ("switchover_settled", "pg3"),
    ("cluster_identified", None), ("action_finished", "pg1"),
])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENTS, max_size=40), rotate=st.integers(150, 2_000),
       keep=st.integers(0, 2))
def test_recover_after_any_rotations_equals_recover_of_the_whole_history(
    tmp_path_factory: pytest.TempPathFactory, events: list[tuple[str, str | None]],
    rotate: int, keep: int,
) -> None:
    base = tmp_path_factory.mktemp("prop")
    plain = Journal(base / "plain.jsonl", rotate_bytes=None)
    rotated = Journal(base / "rotated.jsonl", rotate_bytes=rotate, keep=keep)
    states: list[RecoveredState] = []
    for journal in (plain, rotated):
        # The same time for the same event in both journals, whatever rotations add.
        stamp = [5000.0]
        original = journal_module.time.time
        journal_module.time.time = lambda stamp=stamp: stamp[0]  # type: ignore[assignment,misc]
        try:
            for number, (kind, node) in enumerate(events):
                stamp[0] = 5000.0 + number
                fields: dict[str, Any] = {"node": node}
                if kind.endswith("_started"):
                    fields["details"] = {"old_primary": "pg1", "old_timeline": number}
                if kind == "cluster_identified":
                    fields["details"] = {"system_identifier": 1_000 + number}
                journal.append(kind, **fields)
        finally:
            journal_module.time.time = original  # type: ignore[assignment]
        states.append(Journal(journal.path).recover())
    assert states[1] == states[0]
    assert rotated.recover() == states[0]
