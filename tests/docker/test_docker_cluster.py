"""The DockerCluster harness itself: faults, addresses, configuration and cleanup."""

from __future__ import annotations

import time
import tomllib

import psycopg
import pytest
from testcontainers.core.docker_client import DockerClient

from hacontrol.config import config_from_mapping
from hacontrol.testing.docker_cluster import DockerCluster
from hacontrol.testing.docker_members import DockerNode

pytestmark = [pytest.mark.docker, pytest.mark.timeout(150)]


def _gone(kind: str, ident: str) -> bool:
    api = DockerClient().client.api
    inspect = api.inspect_container if kind == "container" else api.inspect_network
    try:
        inspect(ident)
    except Exception as exc:
        return "404" in str(exc) or "No such" in str(exc) or "not found" in str(exc)
    return False


def test_faults_addresses_and_cleanup() -> None:
    cluster = DockerCluster(nodes=2)
    try:
        cluster.start()
        ids = [n.id for n in cluster.nodes]
        network = cluster.network_id
        assert cluster.primary_name() == "pg1"
        cluster.wait_streaming("pg2", upstream="pg1")
        replica = cluster.node("pg2")

        replica.freeze()
        assert replica.frozen
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            replica.query("SELECT 1", timeout=2)
        assert time.monotonic() - t0 < 5  # the harness does not hang on a frozen node
        replica.thaw()
        assert replica.query("SELECT 1") == [(1,)]

        replica.partition()
        with pytest.raises(psycopg.OperationalError):
            replica.query("SELECT 1")
        replica.heal()
        replica.wait_ready(15)
        cluster.wait_streaming("pg2", timeout=30, upstream="pg1")

        assert replica.kill()
        assert not replica.is_running()
        replica.start()
        cluster.wait_streaming("pg2", timeout=30, upstream="pg1")

        replica.stop()
        assert not replica.is_running()
        replica.start()

        with psycopg.connect(cluster.multi_host_dsn(), autocommit=True) as conn:
            assert conn.info.port == cluster.node("pg1").port
    finally:
        cluster.close()
    assert all(_gone("container", i) for i in ids)
    assert _gone("network", network)
    cluster.close()  # idempotent


def test_configurations_are_valid_for_the_controller() -> None:
    # Names and ports only: nothing is started.
    cluster = DockerCluster(controller_config={"timing": {"cooldown": 0}, "mode": "manual"})
    cluster._nodes = {n: DockerNode(cluster, n, 40000 + i) for i, n in enumerate(["pg1", "pg2"])}
    inside = tomllib.loads(cluster.controller_toml())
    assert inside["nodes"][0]["dsn"] == "host=pg1 port=5432 user=postgres dbname=postgres"
    assert inside["timing"]["cooldown"] == 0 and inside["mode"] == "manual"
    assert inside["api"]["listen"] == "0.0.0.0:8008"
    inside["journal"] = "/tmp/unused.jsonl"
    assert [n.name for n in config_from_mapping(inside).node_specs()] == ["pg1", "pg2"]
    outside = tomllib.loads(cluster.config_toml(mode="manual"))
    assert outside["nodes"][1]["dsn"] == "host=127.0.0.1 port=40001 user=postgres dbname=postgres"
    assert outside["nodes"][1]["replication_dsn"] == "host=pg2 port=5432 user=postgres"
