"""The operator CLI (a real ``hacontrol`` process) against a running controller on a
real LocalCluster: the status view through an outage, a failover and the old primary's
return; environment proxies never used; the confirmation prompt on a real terminal;
the demo's rejoin hint, pasted as printed."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hacontrol.cli.render import render_status
from hacontrol.testing import LocalCluster
from tests.proxy_support import proxy_listener
from tests.terminal_support import on_terminal as run_on_terminal

from .operator_support import ServiceThread, write_config
from .support import kinds, wait_until
from .test_procedures_live import write_config as write_driver_config

pytestmark = pytest.mark.integration

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "https_proxy", "HTTPS_PROXY")
CLI_TIMEOUT_S = 90.0


def cli_env(**extra: str) -> dict[str, str]:
    """The environment without terminal sizes or proxies, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES") and not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


def cli(config: Path, *args: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hacontrol", *args, "--config", str(config)],
        env=env or cli_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=CLI_TIMEOUT_S, check=False,
    )


def on_terminal(config: Path, args: Sequence[str], answer: bytes,
                timeout: float = CLI_TIMEOUT_S) -> tuple[int, str, str]:
    """The CLI with a terminal as stdin and stderr, ``answer`` typed into it;
    (exit code, stdout, what the terminal showed)."""
    return run_on_terminal(
        [sys.executable, "-m", "hacontrol", *args, "--config", str(config)],
        answer, timeout, env=cli_env(),
    )


def table(text: str) -> dict[str, dict[str, str]]:
    """The status table's cells by node, read by the header's column positions."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    starts = [m.start() for m in re.finditer(r"\S+", lines[at])]
    names = lines[at].split()
    cells = {}
    for line in lines[at + 1:]:
        if not line or line.startswith(" "):
            break
        values = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        cells[values[0]] = dict(zip(names, values, strict=True))
    return cells


def lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def row(st: ServiceThread, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in st.service.controller.snapshot()["nodes"]
                                 if n["name"] == name)
    return found


def healthy(st: ServiceThread, primary: str) -> bool:
    snap = st.service.controller.snapshot()
    return snap["primary"] == primary and all(n["health"] == "ok" for n in snap["nodes"])


def test_status_through_an_outage_a_failover_and_the_old_primary_back(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with ServiceThread(config) as st:
        wait_until(lambda: healthy(st, "pg1"), 15, "pg1 adopted, replicas healthy")
        shown = cli(config, "status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert max(len(line) for line in shown.stdout.splitlines()) <= 80, shown.stdout
        cells = table(shown.stdout)
        assert [cells[n]["ROLE"] for n in ("pg1", "pg2", "pg3")] == [
            "primary", "replica", "replica"]
        assert {cells[n]["TL"] for n in cells} == {"1"}
        # Every round the primary writes a heartbeat after its position was read, and
        # the replicas receive it: the raw rows often show a replica "ahead". The view
        # never does.
        ahead_raw = 0
        for _ in range(40):
            snap = st.service.snapshot()
            rows = {n["name"]: n for n in snap["nodes"]}
            ahead_raw += any(lsn(rows[r]["lsn"]) > lsn(rows["pg1"]["lsn"])
                             for r in ("pg2", "pg3"))
            cells = table(render_status({"source": "controller", "api": "-", **snap}, 80))
            for replica in ("pg2", "pg3"):
                assert lsn(cells[replica]["LSN"]) <= lsn(cells["pg1"]["LSN"]), cells
            time.sleep(0.1)
        print(f"raw rows with a replica ahead of the primary: {ahead_raw} of 40 views")

        # A replica goes away: nothing of an earlier round is shown for it.
        cluster.node("pg3").kill()
        wait_until(lambda: row(st, "pg3")["health"] == "unreachable", 15, "pg3 unreachable")
        shown = cli(config, "status")
        cells = table(shown.stdout)
        assert (cells["pg3"]["TL"], cells["pg3"]["LSN"], cells["pg3"]["LAG"]) == ("?", "?", "?")
        assert cells["pg3"]["HEALTH"] == "unreachable"
        as_json = cli(config, "status", "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert '"-"' not in as_json.stdout
        nodes = {n["name"]: n for n in json.loads(as_json.stdout)["nodes"]}
        assert nodes["pg3"]["timeline"] is None and nodes["pg3"]["lsn"] is None
        assert nodes["pg1"]["replay_lsn"] is None  # a primary replays nothing
        cluster.node("pg3").start()
        wait_until(lambda: healthy(st, "pg1"), 20, "pg3 healthy again")

        # The primary dies, a replica takes over, the old primary restarts and is fenced.
        cluster.node("pg1").kill()
        wait_until(lambda: st.primary in ("pg2", "pg3"), 20, "a failover")
        new = st.primary
        assert new is not None
        cluster.node("pg1").start()
        wait_until(lambda: row(st, "pg1")["health"] == "fenced"
                   and row(st, "pg1")["role"] == "primary", 20, "pg1 back and fenced")
        shown = cli(config, "status")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        print(shown.stdout)
        assert max(len(line) for line in shown.stdout.splitlines()) <= 80
        cells = table(shown.stdout)
        assert [n for n, c in cells.items() if c["ROLE"] == "primary"] == [new]
        assert cells["pg1"]["ROLE"] == "primary (fenced)"
        assert cells["pg1"]["HEALTH"] == "fenced"
        assert cells[new]["TL"] == "2"
        wide = cli(config, "status", env=cli_env(COLUMNS="140"))
        assert "BREAKER" in wide.stdout.splitlines()[1] + wide.stdout.splitlines()[2]


def test_the_cli_never_reaches_the_controller_through_an_environment_proxy(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with proxy_listener() as (proxy, contacted), ServiceThread(config) as st:
        wait_until(lambda: healthy(st, "pg1"), 15, "pg1 adopted, replicas healthy")
        env = cli_env(**{name: proxy for name in PROXY_VARS})
        for args in (["pause"], ["status"], ["history", "-n", "5"], ["resume"]):
            result = cli(config, *args, env=env)
            assert result.returncode == 0, (args, result.stdout + result.stderr)
        assert contacted == []
        journal = st.journal()
        assert kinds(journal, "paused") and kinds(journal, "resumed")


def test_switchover_asks_on_a_terminal_and_changes_nothing_when_declined(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_driver_config(cluster, tmp_path)
    with ServiceThread(config) as st:
        wait_until(lambda: healthy(st, "pg1"), 20, "pg1 adopted, replicas healthy")
        code, out, err = on_terminal(config, ["switchover", "--to", "pg2"], b"n\n")
        assert code == 1, out + err
        assert "switchover: the primary moves from pg1 to pg2." in err
        assert "Proceed? [y/N]" in err and "not done: nothing was changed" in err
        time.sleep(0.5)
        assert st.primary == "pg1" and not kinds(st.journal(), "switchover_started")
        code, out, err = on_terminal(config, ["switchover", "--to", "pg2", "--timeout", "60"],
                                     b"y\n")
        assert code == 0, out + err
        assert "done: pg2 is the primary" in out
        assert st.primary == "pg2"


def test_the_demo_prints_a_rejoin_command_that_works(tmp_path: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "hacontrol", "demo"])
    seen = b""

    def until(pattern: str, timeout: float) -> re.Match[str]:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, seen.decode(errors="replace")[-6000:])
            if found is not None:
                return found
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} within {timeout} s:\n{seen.decode()[-3000:]}"
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"the demo ended:\n{seen.decode()[-3000:]}"
                seen += chunk

    try:
        until(r"press k", 60)
        os.write(fd, b"k")
        until(r"primary (pg2|pg3), mode", 30)
        os.write(fd, b"r")
        hint = until(r"\n  (\S.* rejoin pg1 --config (\S+hacontrol\.toml))\r?\n", 30)
        command = hint[1].split()
        rejoined = subprocess.run(command, env=cli_env(), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=120, check=False)
        assert rejoined.returncode == 0, rejoined.stdout + rejoined.stderr
        assert "done: pg1 rejoined as a replica of" in rejoined.stdout
        until(r"pg1 +replica ", 30)
        os.write(fd, b"q")
        until(r"removed /", 30)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop_demo(pid)
        os.close(fd)


def stop_demo(pid: int) -> None:
    """Stop the demo process ``pid`` if it still runs: SIGTERM first (it then stops
    every server it started), SIGKILL after 60 s."""
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
