"""A second controller started on the same cluster by mistake stays passive, names the
active one, and takes over only once it is gone (real servers, real processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hacontrol.io.journal import Journal
from hacontrol.testing import LocalCluster
from hacontrol.testing.local_node import free_port
from hacontrol.testing.processes import ControllerProcess
from tests.integration.support import kinds, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _config(cluster: LocalCluster, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'journal = "{tmp_path / (name + ".jsonl")}"\n\n'
        "[timing]\nprobe_interval = 0.2\n\n"
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n' + cluster.config_toml()
    )
    return path


def _journal(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    return Journal(tmp_path / f"{name}.jsonl").read()


def _lock_sessions(cluster: LocalCluster, node: str) -> list[tuple[Any, ...]]:
    return cluster.node(node).query(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted"
    )


def test_a_second_controller_stays_passive_naming_the_active_one_until_it_stops(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    first = ControllerProcess(_config(cluster, tmp_path, "a"), tmp_path / "a.log")
    second = ControllerProcess(_config(cluster, tmp_path, "b"), tmp_path / "b.log")
    with first:
        wait_until(lambda: kinds(_journal(tmp_path, "a"), "primary_adopted"), 20,
                   "the first controller to adopt pg1")
        assert first.pid is not None
        held = {n: _lock_sessions(cluster, n) for n in ("pg1", "pg2", "pg3")}
        assert all(len(rows) == 1 for rows in held.values()), held
        assert f"pid {first.pid}" in held["pg2"][0][0]
        with second:
            passive = wait_until(lambda: kinds(_journal(tmp_path, "b"), "controller_passive"),
                                 20, "the second controller to say it stays passive")
            message = passive[0]["message"]
            assert f"pid {first.pid}" in message and "another controller is active" in message
            time.sleep(2.0)  # ten rounds of the first: the second still does nothing
            records = _journal(tmp_path, "b")
            assert not kinds(records, "primary_adopted") and not kinds(records, "settings_managed")
            assert second.alive()
            # The active one stops: the passive one acts within a few of its retries.
            first.stop()
            assert first.returncode() == 0
            wait_until(lambda: kinds(_journal(tmp_path, "b"), "controller_active"), 10,
                       "the second controller to become active")
            wait_until(lambda: kinds(_journal(tmp_path, "b"), "primary_adopted"), 10,
                       "the second controller to adopt pg1")
            assert second.pid is not None
            assert f"pid {second.pid}" in _lock_sessions(cluster, "pg1")[0][0]
        assert second.returncode() == 0
    # Stopped controllers hold nothing.
    assert all(_lock_sessions(cluster, n) == [] for n in ("pg1", "pg2", "pg3"))
    log_b = (tmp_path / "b.log").read_text()
    assert "controller_passive" in log_b
    assert all(json.loads(line).get("level") for line in log_b.splitlines()
               if line.startswith("{"))
