"""The operator and replay faults really happen: pg3 is promoted behind the
controller's back, pg2's replay is held back by a report before pg1 dies, the
controller is killed after the switchover's fence step and before its promote.

These tests check the harness, not the controller: whether the controller then
does the right thing is what checks/chaos.py reports (its violations). They
assert only what the fault itself must have done, and that nothing is left
behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hacontrol.testing.fault_catalog import Timings
from hacontrol.testing.faults import Trial

pytestmark = [pytest.mark.netns, pytest.mark.integration]

SHORT = Timings(hold=4.0, settle=1.0, stray_lag=1.5)


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _run(fault: str, mode: str, tmp_path: Path) -> Trial:
    before = _namespaces()
    trial = Trial(fault, mode, tmp_path, SHORT)
    result = trial.run()
    assert result.error is None, (result.error, result.notes)
    assert _namespaces() == before
    assert result.acked > 100
    return trial


def test_stray_promote_promotes_pg3_behind_the_controllers_back(tmp_path: Path) -> None:
    trial = _run("stray-promote", "async", tmp_path)
    facts = trial.result.facts
    assert facts["pg3_promoted"] is True
    assert facts["pg3_timeline"] >= 2
    # Cut off from replication under writes: pg3 was behind when it was promoted.
    assert facts["pg3_behind_bytes"] > 0
    kinds = {(r.get("kind"), r.get("node")) for r in trial.records()}
    assert ("maintenance_on", "pg3") in kinds
    assert (tmp_path / "operator.log").read_text().count("hacontrol maintenance pg3 on") == 1


def test_replay_conflict_holds_pg2s_replay_back_before_the_kill(tmp_path: Path) -> None:
    trial = _run("replay-conflict", "async", tmp_path)
    facts = trial.result.facts
    assert facts["replay_held_bytes"] > 0
    assert facts["report_rows"] > 0
    assert trial.rto_from is not None  # pg1 was killed
    assert isinstance(facts["report_open_at_end"], bool)  # and the report closed after


def test_controller_is_killed_after_the_fence_and_before_the_promote(tmp_path: Path) -> None:
    trial = _run("controller-kill-switchover", "async", tmp_path)
    facts = trial.result.facts
    assert facts["fence_ok"] is True
    assert facts["steps_after_fence"] == []
    assert facts["pg2_in_recovery_at_kill"] is True
    assert facts["pg1_read_only_at_kill"] == "on"
    assert 0 <= facts["killed_after_fence_s"] < 1.0
    assert "accepted" in facts["switchover_command"]
    # The same configuration and journal served the restarted controller.
    started = [r for r in trial.records() if r.get("kind") == "controller_started"]
    assert len(started) == 2
