"""compose/docker-compose.ha.yml: two controllers on etcd over the compose cluster; one
leads, and killing its container hands the cluster to the other."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from testcontainers.core.docker_client import DockerClient

from hacontrol.testing.local_node import free_port

from .scenarios import wait_until
from .test_compose import _compose_command

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
TTL_S = 5.0


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=3) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (OSError, ValueError):
        return None


def _role(port: int) -> str | None:
    status = _status(port)
    if not status or status.get("primary") != "pg1" or "controllers" not in status:
        return None
    return str(status["controllers"]["role"])


def test_two_controllers_on_etcd_one_leads_and_the_other_takes_over() -> None:
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    api = DockerClient().client.api
    etcd_image = os.environ.get("HACONTROL_ETCD_IMAGE", "hacontrol-etcd:dev")
    if not api.images(name=etcd_image):
        if os.environ.get("CI"):
            raise AssertionError(f"{etcd_image} was not built (compose/build-images needs etcd)")
        pytest.skip(f"{etcd_image} is not built (compose/build-images, with etcd installed)")
    project = f"hacontrol-ha-{uuid.uuid4().hex[:8]}"
    ports = {"PG1_PORT": free_port(), "PG2_PORT": free_port(), "PG3_PORT": free_port(),
             "HACONTROL_API_PORT": free_port(), "HACONTROL_API_PORT_B": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    base = [*compose, "-p", project, "-f", str(COMPOSE / "docker-compose.yml"),
            "-f", str(COMPOSE / "docker-compose.ha.yml")]
    label = {"label": f"com.docker.compose.project={project}"}
    apis = {"controller": ports["HACONTROL_API_PORT"],
            "controller-b": ports["HACONTROL_API_PORT_B"]}
    try:
        up = subprocess.run([*base, "up", "-d"], env=env, capture_output=True, text=True,
                            timeout=150, check=False)
        assert up.returncode == 0, up.stderr[-2000:]
        for c in api.containers(all=True, filters=label):
            bindings = api.inspect_container(c["Id"])["HostConfig"]["PortBindings"] or {}
            assert all(b["HostIp"] == "127.0.0.1" for bs in bindings.values() for b in bs)
        roles = wait_until(
            lambda: (r := {s: _role(p) for s, p in apis.items()})
            and sorted(r.values(), key=str) == ["leader", "standby"] and r,
            90, "one leader and one standby", 0.2)
        leader = next(s for s, role in roles.items() if role == "leader")
        other = next(s for s in apis if s != leader)
        ids = subprocess.run([*base, "ps", "-q", leader], env=env, capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        assert len(ids) == 1
        api.kill(ids[0])
        killed = time.monotonic()
        wait_until(lambda: _role(apis[other]) == "leader", TTL_S + 10, f"{other} to lead", 0.2)
        print(f"compose takeover after docker kill: {time.monotonic() - killed:.2f} s")
        time.sleep(1.0)
        status = _status(apis[other])
        assert status is not None and status["primary"] == "pg1"
        events = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{apis[other]}/history?limit=10000", timeout=5).read())["events"]
        assert not [e for e in events if e.get("kind") == "action_started"
                    and e.get("action") == "Promote"]
    finally:
        for c in api.containers(all=True, filters=label):
            api.remove_container(c["Id"], force=True, v=True)
        for n in api.networks(filters=label):
            api.remove_network(n["Id"])
    assert not api.containers(all=True, filters=label)
