"""The HTTP API and the operator CLI against a running controller (an in-process
Service on a free loopback port) on a real LocalCluster, through a failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hacontrol.cli.main import main
from hacontrol.config import Config, load_config
from hacontrol.service.sdnotify import Notifier
from hacontrol.service.service import Service
from hacontrol.testing import LocalCluster
from hacontrol.testing.local_node import free_port

pytestmark = pytest.mark.integration

TOKEN = "demo-token-0123456789abcdef0123"


def write_config(cluster: LocalCluster, tmp_path: Path, **api: Any) -> Path:
    """A configuration file for ``cluster`` with the API on a free loopback port."""
    listen = api.pop("listen", f"127.0.0.1:{free_port()}")
    token = api.pop("token", TOKEN)
    data = tomllib.loads(cluster.config_toml())
    lines = [f'journal = "{tmp_path / "journal.jsonl"}"', "", "[api]",
             f'listen = "{listen}"', f'token = "{token}"', ""]
    path = tmp_path / "hacontrol.toml"
    path.write_text("\n".join(lines) + cluster.config_toml())
    assert data["nodes"]
    return path


class ServiceThread:
    """A Service running its own event loop in a thread; stopped and joined on exit."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.service = Service(config, config_path=config_path, notifier=Notifier(None))
        self.exit_code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="service", daemon=True)

    def _main(self) -> None:
        async def body() -> int:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            return await self.service.run(install_signals=False)

        try:
            self.exit_code = asyncio.run(body())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        assert self._started.wait(10)
        deadline = time.monotonic() + 10
        while self.service.api_address is None and time.monotonic() < deadline:
            assert self._thread.is_alive(), f"service stopped: {self.exit_code} {self._error}"
            time.sleep(0.02)
        assert self.service.api_address is not None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.service.request_stop, "test finished")
        self._thread.join(30)
        assert not self._thread.is_alive(), "service did not stop within 30 s"
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        return f"http://{self.service.api_address}"

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> tuple[int, Any]:
        """(status, JSON or text body) of one request."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        if method == "HEAD" or not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)


def wait_until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def healthy_cluster(st: ServiceThread) -> bool:
    snap = st.service.controller.snapshot()
    return snap["primary"] == "pg1" and all(n["health"] == "ok" for n in snap["nodes"])


def promotions(st: ServiceThread) -> list[str]:
    return [r["node"] for r in st.service.journal.read()
            if r.get("kind") == "action_started" and r.get("action") == "Promote"]


def test_endpoints_follow_a_failover(cluster: LocalCluster, tmp_path: Path) -> None:
    path = write_config(cluster, tmp_path)
    with ServiceThread(load_config(path), path) as st:
        wait_until("pg1 adopted, replicas healthy", lambda: healthy_cluster(st), 15)
        status, snap = st.get("/status")
        assert status == 200 and snap["primary"] == "pg1"
        assert {n["name"] for n in snap["nodes"]} == {"pg1", "pg2", "pg3"}
        assert snap["controller"]["api"] == st.service.api_address
        assert any(e["kind"] == "controller_started" for e in snap["events"])
        status, primary = st.get("/primary")
        assert (status, primary["primary"]) == (200, "pg1")
        assert primary["port"] == cluster.node("pg1").port
        assert st.get("/nodes/pg1/primary")[0] == 200
        assert st.call("HEAD", "/nodes/pg1/primary")[0] == 200
        assert st.get("/nodes/pg2/primary")[0] == 503
        assert st.get("/nodes/pg2/replica")[0] == 200
        assert st.get("/nodes/pg3/replica?max_lag=16777216")[0] == 200
        assert st.get("/nodes/pg1/replica")[0] == 503
        assert st.get("/nodes/pg9/replica")[0] == 404

        cluster.node("pg1").kill()
        wait_until("pg2 to be the primary", lambda: st.service.controller.state.primary == "pg2",
                   20)
        cluster.wait_streaming("pg3", timeout=15, upstream="pg2")
        wait_until("pg3 healthy as pg2's replica",
                   lambda: st.get("/nodes/pg3/replica")[0] == 200, 10)
        assert st.get("/nodes/pg1/primary")[0] == 503
        assert st.call("HEAD", "/nodes/pg1/primary")[0] == 503
        assert st.get("/nodes/pg2/primary")[0] == 200
        assert st.get("/nodes/pg1/replica")[0] == 503
        assert st.get("/nodes/pg2/replica")[0] == 503
        status, primary = st.get("/primary")
        assert (status, primary["primary"]) == (200, "pg2")
        status, metrics = st.get("/metrics")
        assert status == 200
        assert "hacontrol_failovers_total 1.0" in metrics
        assert 'hacontrol_node_role{node="pg2",role="primary"} 1.0' in metrics
        assert 'hacontrol_node_reachable{node="pg1"} 0.0' in metrics
        assert "hacontrol_last_failover_duration_seconds" in metrics
        assert 'hacontrol_probe_errors_total{kind=' in metrics
        status, history = st.get("/history?limit=500")
        kinds = [e["kind"] for e in history["events"]]
        assert "failover_completed" in kinds and "node_fenced" in kinds
    assert st.exit_code == 0
    assert promotions(st) == ["pg2"]


def test_auth_and_pause_hold_back_a_failover_until_resume(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    path = write_config(cluster, tmp_path)
    with ServiceThread(load_config(path), path) as st:
        wait_until("pg1 adopted, replicas healthy", lambda: healthy_cluster(st), 15)
        assert st.call("POST", "/pause")[0] == 401
        assert st.call("POST", "/pause", token="wrong-token-wrong-token-wrong")[0] == 401
        assert not st.service.controller.state.paused
        status, body = st.call("POST", "/pause", token=TOKEN)
        assert status == 200 and body["ok"], body
        assert st.service.controller.state.paused

        # The operator CLI reads the running controller and says so.
        runner = CliRunner()
        shown = runner.invoke(main, ["status", "--config", str(path)])
        assert shown.exit_code == 0, shown.output
        assert "from the controller" in shown.output and "PAUSED" in shown.output
        watched = runner.invoke(main, ["status", "--config", str(path), "--watch",
                                       "--count", "2", "--interval", "0.1"])
        assert watched.exit_code == 0 and watched.output.count("from the controller") == 2
        bad = runner.invoke(main, ["maintenance", "pg9", "on", "--config", str(path)])
        assert bad.exit_code == 2 and "unknown node" in bad.output

        killed_at = time.monotonic()
        cluster.node("pg1").kill()
        while time.monotonic() - killed_at < 3.0:  # many detection windows
            assert st.service.controller.state.primary == "pg1"
            time.sleep(0.1)
        assert promotions(st) == []
        assert cluster.primaries() == []

        resumed = runner.invoke(main, ["resume", "--config", str(path)])
        assert resumed.exit_code == 0, resumed.output
        assert "done: resumed" in resumed.output
        wait_until("a failover after resume",
                   lambda: st.service.controller.state.primary in ("pg2", "pg3"), 20)
        history = runner.invoke(main, ["history", "--config", str(path), "-n", "500"])
        assert history.exit_code == 0 and "from the controller" in history.output
        assert "failover_completed" in history.output
    assert len(promotions(st)) == 1
