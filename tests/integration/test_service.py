"""``hacontrol run`` as a service: sd_notify over a real datagram socket, SIGTERM,
SIGHUP with a valid and an invalid file. The controller runs as a subprocess,
always stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hacontrol.io.journal import Journal
from hacontrol.testing import LocalCluster
from hacontrol.testing.local_node import free_port

pytestmark = pytest.mark.integration


def write_config(cluster: LocalCluster, tmp_path: Path, interval: float = 0.2) -> Path:
    path = tmp_path / "hacontrol.toml"
    path.write_text(
        f'journal = "{tmp_path / "journal.jsonl"}"\n\n'
        f"[timing]\nprobe_interval = {interval}\n\n"
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n' + cluster.config_toml()
    )
    return path


@contextmanager
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket, as systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def controller(config: Path, tmp_path: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``hacontrol run`` as a subprocess (stderr to tmp_path/stderr.log), killed by PID."""
    err = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hacontrol", "run", "--config", str(config), "--json-logs"],
        stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        err.close()


def receive_until(sock: socket.socket, wanted: str, timeout: float) -> list[dict[str, str]]:
    """Datagrams (as dicts) up to and including the first with ``wanted`` (KEY=VALUE)."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        message = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        got.append(message)
        key, value = wanted.split("=", 1)
        if message.get(key) == value:
            return got
    raise TimeoutError(f"no {wanted} within {timeout:g} s; got {got}")


def log_events(tmp_path: Path) -> list[dict[str, object]]:
    events = []
    for line in (tmp_path / "stderr.log").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    return code, time.monotonic() - started


def test_notify_ready_status_watchdog_then_sigterm_exits_0(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with notify_socket(tmp_path) as sock, controller(
        config, tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="2000000"
    ) as proc:
        first = receive_until(sock, "READY=1", 30)
        ready = first[-1]
        assert ready["STATUS"].startswith("primary pg1"), ready
        assert ready.get("WATCHDOG") == "1"
        # Pings follow at about a quarter of the watchdog interval, from the loop.
        pings = receive_until(sock, "WATCHDOG=1", 3)
        assert pings[-1]["WATCHDOG"] == "1"
        receive_until(sock, "WATCHDOG=1", 3)
        code, took = stop(proc)
        assert code == 0
        assert took < 5, f"SIGTERM took {took:.1f} s"
        assert any(m.get("STOPPING") == "1" for m in receive_until(sock, "STOPPING=1", 2))
    kinds = [r["kind"] for r in Journal(tmp_path / "journal.jsonl").read()]
    assert kinds[-1] == "controller_stopped"


def test_sighup_reloads_a_valid_file_and_keeps_running_on_an_invalid_one(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    journal = Journal(tmp_path / "journal.jsonl")
    with notify_socket(tmp_path) as sock, controller(
        config, tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock")
    ) as proc:
        receive_until(sock, "READY=1", 30)
        original = config.read_text()
        # check-config's warnings are in the log from the start (no fence hook here).
        started = [e for e in log_events(tmp_path) if e.get("event") == "config_warning"]
        assert started and all(e["when"] == "start" for e in started)
        assert any("fence" in e["message"] for e in started)
        listen = original.split('listen = "', 1)[1].split('"', 1)[0]
        host, port = listen.rsplit(":", 1)
        good = original.replace("probe_interval = 0.2", "probe_interval = 0.25")
        good = good.replace('name = "pg3"', 'name = "pg3"\npriority = 0')
        good = 'mode = "semi-automatic"\n' + good.replace(listen, f"{host}:{int(port) + 1}")
        config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        messages = receive_until(sock, "READY=1", 10)
        assert any(m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m for m in messages)
        reloaded = [r for r in journal.read() if r["kind"] == "config_reloaded"]
        assert reloaded and reloaded[-1]["changes"] == [
            "api.listen", "mode", "timing.probe_interval", "node pg3 changed"
        ]
        restart = [e for e in log_events(tmp_path)
                   if e.get("event") == "config_change_needs_restart"]
        assert [e["key"] for e in restart] == ["api.listen"]
        assert [e for e in log_events(tmp_path)
                if e.get("event") == "config_warning" and e["when"] == "reload"]
        # Back to the address in use: nothing needs a restart.
        good = good.replace(f"{host}:{int(port) + 1}", listen)
        config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        receive_until(sock, "READY=1", 10)
        reloaded = [r for r in journal.read() if r["kind"] == "config_reloaded"]
        assert len(reloaded) == 2 and reloaded[-1]["changes"] == ["api.listen"]
        restart = [e for e in log_events(tmp_path)
                   if e.get("event") == "config_change_needs_restart"]
        assert len(restart) == 1

        config.write_text(good.replace("probe_interval = 0.25", "probe_interval = -1"))
        proc.send_signal(signal.SIGHUP)
        receive_until(sock, "READY=1", 10)
        time.sleep(0.5)  # rounds go on
        assert proc.poll() is None
        failed = [e for e in log_events(tmp_path) if e.get("event") == "config_reload_failed"]
        assert len(failed) == 1
        assert "timing.probe_interval" in str(failed[0]["problems"])
        assert len([r for r in journal.read() if r["kind"] == "config_reloaded"]) == 2
        code, _ = stop(proc)
        assert code == 0


def test_bad_config_exits_2_and_busy_api_port_exits_1(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[timing]\nprobe_interval = 0\n" + cluster.config_toml())
    result = subprocess.run(
        [sys.executable, "-m", "hacontrol", "run", "--config", str(bad)],
        capture_output=True, timeout=30,
    )
    assert result.returncode == 2
    assert b"timing.probe_interval" in result.stderr and b"Traceback" not in result.stderr

    config = write_config(cluster, tmp_path)
    port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with controller(config, tmp_path) as proc:
            assert proc.wait(30) == 1
    assert any(e.get("event") == "api_start_failed" for e in log_events(tmp_path))
