"""Fault scenarios end to end: a namespaced cluster, the controller as a process,
writers on both sides of the fault, and the checker's verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hacontrol.testing.fault_catalog import Timings
from hacontrol.testing.faults import Trial

pytestmark = [pytest.mark.netns, pytest.mark.integration]

SHORT = Timings(hold=6.0, settle=1.5)


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_controller_only_partition_is_not_a_failover(tmp_path: Path) -> None:
    before = _namespaces()
    result = Trial("partition-controller", "async", tmp_path, SHORT).run()
    assert result.error is None, result.error
    assert result.failovers_seen == 0
    assert result.final_primary == "pg1"
    assert result.lost == 0 and result.windows == []
    # The partition did not touch the clients: their writes never stalled.
    assert result.rto == 0.0
    assert result.acked > 500
    assert _namespaces() == before


def test_isolated_primary_fails_over_and_is_fenced_on_heal(tmp_path: Path) -> None:
    result = Trial("partition-primary", "async", tmp_path, SHORT).run()
    assert result.error is None, result.error
    assert result.failovers_seen == 1 and result.final_primary in ("pg2", "pg3")
    assert result.fenced_at is not None, result.notes
    # Asynchronous replication: the isolated primary kept acknowledging its local
    # client's writes while the new primary took over. The checker must see both
    # the split-brain window and the writes it cost, and nothing after the fence.
    assert result.windows, "the isolated primary's writes were not detected"
    assert result.lost_by_writer.get("stale", 0) > 0
    assert all(w.end <= result.fenced_at for w in result.windows)
    assert result.windows_after_fence == []
    assert result.rto is not None and result.rto < 15
