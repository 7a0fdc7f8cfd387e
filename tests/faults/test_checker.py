"""The checker's verdicts on hand-made acknowledgement histories (no database)."""

from __future__ import annotations

from hacontrol.testing.checker import (
    Ack,
    brain_windows,
    epochs,
    lost_writes,
    outage_time,
    takeover_time,
    windows_after,
)


def _acks(node: str, timeline: int, times: list[float], first_id: int = 1) -> list[Ack]:
    return [Ack(first_id + i, 5432, t, node, timeline, "w") for i, t in enumerate(times)]


def test_clean_failover_has_no_window() -> None:
    acks = _acks("pg1", 1, [0.0, 1.0, 2.0]) + _acks("pg2", 2, [5.0, 6.0], 10)
    assert brain_windows(acks) == []
    assert [(e.node, e.timeline, e.count) for e in epochs(acks)] == [("pg1", 1, 3), ("pg2", 2, 2)]


def test_failback_on_a_new_timeline_is_not_split_brain() -> None:
    acks = (_acks("pg1", 1, [0.0, 1.0]) + _acks("pg2", 2, [2.0, 3.0], 10)
            + _acks("pg1", 3, [4.0, 5.0], 20))
    assert brain_windows(acks) == []


def test_overlapping_writes_on_two_nodes_are_a_window() -> None:
    acks = _acks("pg1", 1, [0.0, 3.0, 7.0]) + _acks("pg2", 2, [2.0, 4.0, 9.0], 10)
    [window] = brain_windows(acks)
    assert (window.start, window.end, window.node_a, window.node_b) == (2.0, 7.0, "pg1", "pg2")
    assert windows_after([window], 7.5) == []
    assert windows_after([window], 5.0)[0].start == 5.0


def test_lost_writes_are_the_acknowledged_ids_missing() -> None:
    acks = _acks("pg1", 1, [0.0, 1.0, 2.0])
    assert lost_writes(acks, {1, 3}) == [2]


def test_takeover_and_outage_times() -> None:
    acks = _acks("pg1", 1, [0.0, 0.1, 0.2]) + _acks("pg2", 2, [3.2, 3.3], 10)
    assert takeover_time(acks, 0.15, "pg1") == 3.2 - 0.15
    assert takeover_time(_acks("pg1", 1, [1.0]), 0.0, "pg1") is None
    steady = _acks("pg1", 1, [i / 100 for i in range(300)])
    assert outage_time(steady, 1.0, 2.0, 0.5) == 0.0
    hung = _acks("pg1", 1, [0.0, 0.5, 1.0, 2.6, 2.7])
    assert abs(outage_time(hung, 1.05, 2.0, 0.5) - (2.6 - 1.05)) < 1e-9
    assert outage_time(_acks("pg1", 1, [0.0]), 1.0, 4.0, 0.5) == 3.0
