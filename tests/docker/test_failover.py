"""Failover of a dockerised cluster with the controller in its own container:
the primary killed, the primary cut off the network (and fenced when it comes
back), a replica cut off (no failover), the controller restarted mid-way."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from hacontrol.testing import LocalCluster
from hacontrol.testing.docker_cluster import DockerCluster
from hacontrol.testing.docker_members import DockerController
from tests.integration.support import ControllerThread, make_config, promotions

from .scenarios import (
    is_read_only,
    kill_primary_fails_over,
    wait_until,
    write_through_multi_host,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(150)]


def _adopted(ctl: DockerController) -> bool:
    return ctl.primary() == "pg1" and ctl.rounds() >= 3


def _health(ctl: DockerController, name: str) -> str | None:
    for node in ctl.status().get("nodes", []):
        if node["name"] == name:
            return str(node["health"])
    return None


def _promoted(ctl: DockerController) -> str | None:
    primary = ctl.primary()
    return primary if primary in ("pg2", "pg3") else None


class _ThreadWatcher:
    """The Watcher of a controller running in a thread of this process."""

    def __init__(self, ct: ControllerThread) -> None:
        self.ct = ct

    def primary(self) -> str | None:
        return self.ct.ctl.state.primary

    def promotions(self) -> list[str]:
        return promotions(self.ct.journal())


def test_kill_primary_in_containers(docker_cluster: DockerCluster) -> None:
    new = kill_primary_fails_over(docker_cluster, docker_cluster.controller)
    # The fenced old primary is out of recovery too, but read-only.
    assert docker_cluster.primaries() == sorted(["pg1", new])


@pytest.mark.integration
def test_kill_primary_same_scenario_on_local_cluster(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # The scenario above, unchanged, on real local processes and an in-process
    # controller: the two harnesses are interchangeable.
    with ControllerThread(make_config(cluster, tmp_path / "j.jsonl")) as ct:
        new = kill_primary_fails_over(cluster, _ThreadWatcher(ct))
    assert cluster.primaries() == sorted(["pg1", new])


def test_partitioned_primary_is_replaced_and_fenced_when_it_returns(
    docker_cluster: DockerCluster,
) -> None:
    c, ctl = docker_cluster, docker_cluster.controller
    wait_until(lambda: _adopted(ctl), 15, "the controller to adopt pg1")
    old = c.node("pg1")
    cut_at = time.monotonic()
    old.partition()
    try:
        new = wait_until(lambda: _promoted(ctl), 40, "a replica to be promoted")
        print(f"failover {time.monotonic() - cut_at:.2f} s after the partition")
        other = "pg3" if new == "pg2" else "pg2"
        c.wait_streaming(other, timeout=30, upstream=new)
        assert write_through_multi_host(c) == c.node(new).port
    finally:
        old.heal()
    # Cut off, pg1 still believed it was the primary; back on the network it must
    # be fenced before it takes a write.
    wait_until(lambda: is_read_only(old), 20, "the returning old primary to be fenced")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(old.dsn + " target_session_attrs=read-write", connect_timeout=2)
    assert write_through_multi_host(c) == c.node(new).port
    records = ctl.journal()
    assert ctl.promotions() == [new]
    fences = [r for r in records if r.get("kind") == "action_finished"
              and r.get("action") == "Fence" and r.get("node") == "pg1"]
    assert any(r.get("status") == "succeeded" for r in fences)


def test_partitioned_replica_causes_no_failover(docker_cluster: DockerCluster) -> None:
    c, ctl = docker_cluster, docker_cluster.controller
    wait_until(lambda: _adopted(ctl), 15, "the controller to adopt pg1")
    c.node("pg3").partition()
    try:
        wait_until(lambda: _health(ctl, "pg3") == "unreachable", 15, "pg3 to be unreachable")
        # Longer than replica_silence (3 s) and the detection window together.
        time.sleep(5.0)
        assert ctl.primary() == "pg1"
        assert write_through_multi_host(c) == c.node("pg1").port
    finally:
        c.node("pg3").heal()
    c.wait_streaming("pg3", timeout=30, upstream="pg1")
    wait_until(lambda: _health(ctl, "pg3") == "ok", 20, "pg3 to be healthy again")
    assert ctl.promotions() == []
    assert c.primaries() == ["pg1"]


def test_controller_restarted_mid_way(docker_cluster: DockerCluster) -> None:
    c, ctl = docker_cluster, docker_cluster.controller
    wait_until(lambda: _adopted(ctl), 15, "the controller to adopt pg1")
    # The primary dies while the controller is down: the restarted controller
    # finds it gone (journal: pg1 was the primary) and fails over.
    ctl.stop()
    c.node("pg1").kill()
    ctl.start()
    new = wait_until(lambda: _promoted(ctl), 40, "a replica to be promoted")
    assert ctl.promotions() == [new]
    # Restarted again after the promotion: it adopts the new primary, and its
    # journal (kept in the container) still holds exactly one promotion.
    ctl.restart()
    wait_until(lambda: ctl.primary() == new and ctl.rounds() >= 5, 20, "re-adoption")
    time.sleep(1.0)
    assert ctl.primary() == new
    assert ctl.promotions() == [new]
    starts = [r for r in ctl.journal() if r.get("kind") == "controller_started"]
    assert len(starts) == 3  # first start, start after the stop, restart
    assert c.primaries() == [new]
