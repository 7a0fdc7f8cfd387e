"""sd_notify over a real AF_UNIX datagram socket (path and abstract)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.service.sdnotify import Notifier, monotonic_usec


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Listener:
    """The systemd side: a bound datagram socket that collects messages."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def receive(self, timeout: float = 1.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def nothing(self, wait: float = 0.05) -> bool:
        self.sock.settimeout(wait)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        return False


@pytest.fixture
def listener() -> Iterator[Listener]:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn", dir="/tmp") as tmp:
        path = str(Path(tmp) / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            yield Listener(sock, path)
        finally:
            sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"hacontrol-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


def test_ready_status_stopping_over_a_path_socket(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env())
    assert notifier.enabled and notifier.watchdog_interval() is None
    assert notifier.ready("primary pg1, 3/3 nodes ok")
    assert listener.receive() == {"READY": "1", "STATUS": "primary pg1, 3/3 nodes ok"}
    assert notifier.status("pg2 unreachable")
    assert listener.receive() == {"STATUS": "pg2 unreachable"}
    assert notifier.stopping("stopping")
    assert listener.receive() == {"STOPPING": "1", "STATUS": "stopping"}
    notifier.close()


def test_abstract_socket(abstract_listener: Listener) -> None:
    notifier = Notifier.from_env(abstract_listener.env())
    assert notifier.ready()
    assert abstract_listener.receive() == {"READY": "1"}
    notifier.close()


def test_reloading_carries_the_monotonic_clock(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env())
    notifier.ready()
    listener.receive()
    before = monotonic_usec()
    assert notifier.reloading("reloading configuration")
    message = listener.receive()
    after = monotonic_usec()
    assert message["RELOADING"] == "1" and message["STATUS"] == "reloading configuration"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert not notifier.is_ready
    notifier.ready()
    assert listener.receive()["READY"] == "1" and notifier.is_ready


def test_a_round_during_a_reload_does_not_end_the_reload(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env())
    notifier.round_completed("first round")
    assert listener.receive()["READY"] == "1"
    notifier.reloading("reloading configuration")
    assert listener.receive()["RELOADING"] == "1"
    # A round completes while the file is still being read: no READY=1 yet.
    notifier.round_completed("a round during the reload")
    message = listener.receive()
    assert "READY" not in message and message["STATUS"] == "a round during the reload"
    notifier.ready("reloaded")
    assert listener.receive()["READY"] == "1" and notifier.is_ready


def test_status_is_one_line_short_and_scrubbed(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env())
    notifier.status("pg1 down:\n  connect to host=a password=hunter2 failed " + "x" * 500)
    status = listener.receive()["STATUS"]
    assert "\n" not in status and "hunter2" not in status and len(status) <= 200
    assert status.startswith("pg1 down: connect to host=a password=*** failed")


def test_no_op_without_notify_socket() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert not notifier.round_completed("x")
    assert not notifier.stopping()
    with notifier.action_budget(60):
        pass


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_unsupported_socket_values_disable_notification(value: str) -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": value}).enabled


def test_watchdog_interval_and_pid_check(listener: Listener) -> None:
    pid = os.getpid()
    env = listener.env(WATCHDOG_USEC="10000000")
    assert Notifier.from_env(env).watchdog_interval() == 10.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(pid)}).watchdog_interval() == 10.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(pid + 1)}).watchdog_interval() is None
    assert Notifier.from_env({**env, "WATCHDOG_PID": "x"}).watchdog_interval() is None
    assert Notifier.from_env(listener.env(WATCHDOG_USEC="0")).watchdog_interval() is None
    assert Notifier.from_env(listener.env(WATCHDOG_USEC="ten")).watchdog_interval() is None
    assert Notifier.from_env(env, pid=pid + 1).watchdog_interval() == 10.0


def test_watchdog_without_watchdog_usec_sends_nothing(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env())
    assert not notifier.watchdog()
    assert listener.nothing()


def test_first_round_signals_ready_then_rounds_feed_the_watchdog(listener: Listener) -> None:
    clock = Clock()
    notifier = Notifier.from_env(listener.env(WATCHDOG_USEC="4000000"), clock=clock)
    assert notifier.round_completed("3 nodes, primary pg1")
    assert listener.receive() == {"READY": "1", "STATUS": "3 nodes, primary pg1", "WATCHDOG": "1"}
    # Within a quarter of the 4 s interval: no ping, nothing changed, nothing sent.
    clock.now += 0.5
    assert not notifier.round_completed("3 nodes, primary pg1")
    assert listener.nothing()
    # A changed status goes out at once, without a ping that is not due yet.
    clock.now += 0.2
    assert notifier.round_completed("pg1 unreachable")
    assert listener.receive() == {"STATUS": "pg1 unreachable"}
    clock.now += 0.4
    assert notifier.round_completed("pg1 unreachable")
    assert listener.receive() == {"WATCHDOG": "1"}
    clock.now += 1.0
    assert notifier.round_completed()
    assert listener.receive() == {"WATCHDOG": "1"}


def test_a_stalled_loop_stops_feeding_the_watchdog(listener: Listener) -> None:
    # 0.1 s watchdog: a timer of our own would have sent several pings by now.
    notifier = Notifier.from_env(listener.env(WATCHDOG_USEC="100000"))
    notifier.round_completed()
    assert listener.receive()["WATCHDOG"] == "1"
    assert listener.nothing(wait=0.35)
    assert notifier.watchdog()
    assert listener.receive() == {"WATCHDOG": "1"}


def test_action_budget_raises_and_restores_the_watchdog_timeout(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env(WATCHDOG_USEC="10000000"))
    with notifier.action_budget(45.0):
        assert listener.receive() == {"WATCHDOG_USEC": "55000000", "WATCHDOG": "1"}
    assert listener.receive() == {"WATCHDOG_USEC": "10000000", "WATCHDOG": "1"}
    with pytest.raises(RuntimeError), notifier.action_budget(30.0):
        listener.receive()
        raise RuntimeError("action failed")
    assert listener.receive()["WATCHDOG_USEC"] == "10000000"
    # A step that fits in the normal interval changes nothing.
    with notifier.action_budget(1.0):
        pass
    assert listener.nothing()


def test_a_vanished_socket_never_raises(listener: Listener) -> None:
    notifier = Notifier.from_env(listener.env())
    assert notifier.ready()
    listener.receive()
    listener.sock.close()
    os.unlink(listener.env_value)
    assert not notifier.status("still running")
    assert not notifier.status("still running")
    notifier.close()


# ---------------------------------------------------------------- docs/hacontrol.service

UNIT = Path(__file__).resolve().parents[2] / "docs" / "hacontrol.service"


def unit_settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def test_unit_is_a_watched_notify_service() -> None:
    unit = unit_settings()
    assert unit["Type"] == "notify" and unit["NotifyAccess"] == "main"
    assert unit["WatchdogSec"] == "10" and unit["Restart"] == "on-failure"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["RestartPreventExitStatus"] == "2"
    assert unit["User"] == "hacontrol" and unit["ReadWritePaths"] == "/var/lib/hacontrol"
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[hardening] == "yes", hardening
    assert unit["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this interpreter.
    text = UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/usr/local/bin/hacontrol run" in text
    copy = tmp_path / "hacontrol.service"
    copy.write_text(text.replace("/usr/local/bin/hacontrol", sys.executable), encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
