"""The switchover drill's arithmetic: the longest write gap and the window's steps."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hacontrol.testing.checker import Ack


@pytest.fixture(scope="module")
def drill() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "checks" / "switchover_drill.py"
    spec = importlib.util.spec_from_file_location("switchover_drill", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def acks(*times: float) -> list[Ack]:
    return [Ack(i, 5432, t) for i, t in enumerate(times)]


def test_longest_gap_spans_the_last_write_before_and_the_first_after(drill: ModuleType) -> None:
    # Writes every 10 ms, then nothing from 1.00 to 1.15 (the switchover ran 1.02-1.10).
    times = [0.97, 0.98, 0.99, 1.00, 1.15, 1.16, 1.30]
    assert drill.longest_gap(acks(*times), 1.02, 1.10) == pytest.approx(0.15)
    # A gap entirely outside the switchover does not count.
    assert drill.longest_gap(acks(0.1, 0.9, 1.0, 1.01, 1.02, 1.03), 1.005, 1.025) == (
        pytest.approx(0.01))
    assert drill.longest_gap([], 1.0, 2.0) is None


def test_phases_are_differences_of_the_procedures_marks(drill: ModuleType) -> None:
    marks = {"fenced": 0.01, "settled": 0.02, "caught_up": 0.03, "stopped": 0.08,
             "checkpoint_read": 0.09, "checkpoint_replayed": 0.10, "promoted": 0.13}
    got = drill.phases(marks)
    assert list(got) == ["fence", "settle", "catchup", "stop", "ctl", "replay", "promote"]
    assert got["stop"] == pytest.approx(0.05) and got["promote"] == pytest.approx(0.03)
    assert sum(got.values()) == pytest.approx(0.13)
    # Without a driver there is no stop: the promote's share runs from the catch-up.
    short = drill.phases({"fenced": 0.01, "settled": 0.02, "caught_up": 0.03, "promoted": 0.05})
    assert short == pytest.approx({"fence": 0.01, "settle": 0.01, "catchup": 0.01,
                                   "promote": 0.02})
