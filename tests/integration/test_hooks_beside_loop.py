"""A slow hook never holds up probing, fencing or detection (real servers)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from hacontrol.testing import LocalCluster
from tests.integration.support import ControllerThread, kinds, make_config, wait_until, watching

# Extended: the hook sleeps 8 s by design (the old primary must wake during it).
pytestmark = [pytest.mark.integration, pytest.mark.extended, pytest.mark.timeout(120)]

HOOK_S = 8.0


def _read_only(cluster: LocalCluster, name: str) -> bool:
    try:
        rows = cluster.node(name).query("SHOW default_transaction_read_only")
    except psycopg.Error:
        return False  # the fence ends client sessions, this probe's too
    return bool(rows and rows[0][0] == "on")


def test_a_hung_old_primary_waking_during_a_slow_role_change_hook_is_fenced_at_once(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "hook-ran"
    config = make_config(
        cluster,
        tmp_path / "j.jsonl",
        hooks={"on_role_change": f"sleep {HOOK_S:g}; touch {marker}", "timeout": 20},
    )
    old = cluster.node("pg1")
    with ControllerThread(config) as ct:
        wait_until(lambda: watching(ct), 10, "the controller to watch pg1 and its replicas")
        old.freeze()
        try:
            wait_until(lambda: ct.ctl.state.primary in ("pg2", "pg3"), 30, "a failover")
        finally:
            old.thaw()
        woke = time.monotonic()
        rounds_at_wake = ct.ctl.rounds
        wait_until(lambda: _read_only(cluster, "pg1"), HOOK_S, "the old primary's fence",
                   step=0.01)
        took = time.monotonic() - woke
        print(f"old primary fenced {took:.3f} s after it woke (hook takes {HOOK_S:g} s)")
        # The loop goes on probing while the hook sleeps.
        wait_until(lambda: ct.ctl.rounds >= rounds_at_wake + 3, HOOK_S / 2, "more rounds")
        assert not marker.exists()
        wait_until(marker.exists, HOOK_S + 5, "the hook to finish")
        wait_until(lambda: kinds(ct.journal(), "hook_finished"), 5, "the hook's record")
        records = ct.journal()
    assert took < 2.0
    (finished,) = [r for r in kinds(records, "hook_finished") if r["hook"] == "on_role_change"]
    assert finished["ok"] is True and finished["duration_s"] >= HOOK_S
