"""compose/docker-compose.yml: `up` gives a working cluster that fails over."""

from __future__ import annotations

import json
import os
import shutil
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

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else None


def _api(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _healthy(port: int) -> bool:
    status = _api(port, "/status")
    return bool(status) and status["primary"] == "pg1" and all(
        n["health"] == "ok" for n in status["nodes"]
    )


def test_compose_cluster_fails_over() -> None:
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    project = f"hacontrol-test-{uuid.uuid4().hex[:8]}"
    ports = {"PG1_PORT": free_port(), "PG2_PORT": free_port(), "PG3_PORT": free_port(),
             "HACONTROL_API_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    base = [*compose, "-p", project, "-f", str(COMPOSE_FILE)]

    def run(*args: str) -> str:
        done = subprocess.run([*base, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    api = DockerClient().client.api
    # Everything `up` creates carries the (unique) project label; it is listed by
    # that label and removed by ID, also when `up` failed half-way.
    label = {"label": f"com.docker.compose.project={project}"}
    try:
        up = subprocess.run([*base, "up", "-d"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
        assert up.returncode == 0, up.stderr[-2000:]
        for c in api.containers(all=True, filters=label):
            bindings = api.inspect_container(c["Id"])["HostConfig"]["PortBindings"] or {}
            assert all(b["HostIp"] == "127.0.0.1" for bs in bindings.values() for b in bs)
        api_port = ports["HACONTROL_API_PORT"]
        wait_until(lambda: _healthy(api_port), 90, "the compose cluster to be healthy", 0.2)
        pg1 = run("ps", "-q", "pg1").split()
        assert len(pg1) == 1
        api.kill(pg1[0])
        new = wait_until(
            lambda: (s := _api(api_port, "/status")) and s["primary"] in ("pg2", "pg3")
            and s["primary"], 30, "a replica to be promoted",
        )
        time.sleep(1.0)
        events = _api(api_port, "/history?limit=10000")["events"]
        promoted = [e["node"] for e in events
                    if e.get("kind") == "action_started" and e.get("action") == "Promote"]
        assert promoted == [new]
    finally:
        for c in api.containers(all=True, filters=label):
            api.remove_container(c["Id"], force=True, v=True)
        for n in api.networks(filters=label):
            api.remove_network(n["Id"])
    assert not api.containers(all=True, filters=label)
