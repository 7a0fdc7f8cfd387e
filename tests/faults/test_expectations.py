"""What checks/chaos.py calls a violation, for every expectation a fault can carry
(hand-made trial results, no database), and that the CI plan covers the faults."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hacontrol.testing.checker import Window
from hacontrol.testing.fault_catalog import FAULTS, MODES, TrialResult

CHAOS = Path(__file__).resolve().parents[2] / "checks" / "chaos.py"
NEW_FAULTS = ("stray-promote", "replay-conflict", "controller-kill-switchover")


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_script", CHAOS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _result(fault: str, mode: str = "async", **fields: object) -> TrialResult:
    """A trial of ``fault`` that met every expectation, changed by ``fields``."""
    f = FAULTS[fault]
    good: dict[str, object] = {
        "failovers_seen": f.failovers,
        "final_primary": f.final_primary or "pg2",
        "writable_at_end": [f.final_primary or "pg2"],
        "lost_counted": True,
        "rto": 1.0,
        "fenced_at": 10.0,
    }
    good.update(fields)
    r = TrialResult(fault, mode, f.failovers, f.most_failovers)
    for key, value in good.items():
        setattr(r, key, value)
    return r


def test_every_fault_that_met_its_expectations_passes(chaos: ModuleType) -> None:
    for fault in NEW_FAULTS:
        for mode in MODES:
            assert chaos.violations([_result(fault, mode)]) == [], (fault, mode)


def test_stray_promote_must_keep_pg1_and_fence_pg3(chaos: ModuleType) -> None:
    adopted = _result("stray-promote", failovers_seen=1, final_primary="pg3",
                      writable_at_end=["pg3"])
    found = chaos.violations([adopted])
    assert any("1 failover(s), expected 0" in v for v in found)
    assert any("primary at the end is pg3, expected pg1" in v for v in found)
    assert any("pg3 still takes writes" in v for v in found)
    unfenced = chaos.violations([_result("stray-promote", fenced_at=None)])
    assert any("pg3 was never fenced" in v for v in unfenced)
    # No write may be lost in any mode, async included.
    lost = chaos.violations([_result("stray-promote", "async", lost=3)])
    assert any("3 acknowledged write(s) lost in async mode" in v for v in lost)


def test_replay_conflict_needs_a_fast_failover_and_one_writable_node(chaos: ModuleType) -> None:
    slow = chaos.violations([_result("replay-conflict", "quorum", rto=31.0)])
    assert any("after 31.00 s, expected within 10 s" in v for v in slow)
    two = chaos.violations([_result("replay-conflict", writable_at_end=["pg1", "pg2"])])
    assert any("writable at the end: pg1, pg2" in v for v in two)
    # Asynchronous mode may lose writes here; sync and quorum may not.
    assert chaos.violations([_result("replay-conflict", "async", lost=5)]) == []
    assert chaos.violations([_result("replay-conflict", "sync", lost=5)])
    uncounted = chaos.violations([_result("replay-conflict", "sync", lost_counted=False)])
    assert any("lost writes not counted" in v for v in uncounted)


def test_controller_kill_switchover_accepts_either_outcome(chaos: ModuleType) -> None:
    lifted = _result("controller-kill-switchover", failovers_seen=0, final_primary="pg1",
                     writable_at_end=["pg1"])
    promoted = _result("controller-kill-switchover", failovers_seen=1, final_primary="pg2",
                       writable_at_end=["pg2"])
    assert chaos.violations([lifted, promoted]) == []
    stuck = _result("controller-kill-switchover", final_primary="pg1", writable_at_end=[],
                    rto=None, controller_exit=1)
    found = chaos.violations([stuck])
    assert any("writes resumed never" in v for v in found)
    assert any("writable at the end: none" in v for v in found)
    assert any("controller exited with status 1" in v for v in found)
    brain = _result("controller-kill-switchover", windows_after_fence=[
        Window(1.0, 2.0, "pg1", "pg2")])
    assert any("split-brain" in v for v in chaos.violations([brain]))
    twice = chaos.violations([_result("controller-kill-switchover", failovers_seen=2)])
    assert any("expected at most 1" in v for v in twice)


def test_a_broken_trial_is_one_violation_not_a_cascade(chaos: ModuleType) -> None:
    broke = _result("stray-promote", error="RuntimeError: pg3 not promoted",
                    final_primary=None, writable_at_end=None, fenced_at=None, rto=None)
    assert chaos.violations([broke]) == ["stray-promote/async: trial broke: RuntimeError: "
                                         "pg3 not promoted"]


def test_table_shows_a_range_of_accepted_failovers(chaos: ModuleType) -> None:
    row = chaos.summarise([_result("controller-kill-switchover", failovers_seen=1)])
    assert row[3] == "0-1/1"
    assert chaos.summarise([_result("replay-conflict")])[3] == "1/1"


def test_ci_plan_runs_every_fault_in_a_known_mode(chaos: ModuleType) -> None:
    plan = chaos.CI_PLAN
    assert {f for f, _ in plan} == set(FAULTS)
    assert all(f in FAULTS and m in MODES for f, m in plan)
    assert len(plan) == len(set(plan))
    for fault in NEW_FAULTS:
        assert sum(1 for f, _ in plan if f == fault) == 1
