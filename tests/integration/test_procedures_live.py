"""Switchover, rejoin and failback through a running controller service on a real
LocalCluster with local drivers: the real API, mostly through the real
``hacontrol`` CLI in a subprocess (exit codes and messages are part of the test)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hacontrol.testing import LocalCluster
from hacontrol.testing.checker import lost_writes
from hacontrol.testing.local_node import free_port
from hacontrol.testing.workload import Writer, create_table, read_ids

from .operator_support import TOKEN, ServiceThread, hacontrol, output
from .support import kinds, wait_until, write_rows

pytestmark = pytest.mark.integration


def write_config(
    cluster: LocalCluster,
    directory: Path,
    *,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    priorities: Mapping[str, int] | None = None,
    nodes_text: str | None = None,
) -> Path:
    """A configuration with a local driver per node, fast probes, short procedure
    timeouts and the API on a free loopback port; ``sections`` add or override keys."""
    tables: dict[str, dict[str, Any]] = {
        "timing": {"probe_interval": 0.1},
        "rejoin": {"timeout": 15.0},
        "switchover": {"catchup_timeout": 5.0, "timeout": 30.0},
        "api": {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN},
    }
    for name, values in (sections or {}).items():
        tables.setdefault(name, {}).update(values)
    nodes = nodes_text if nodes_text is not None else cluster.config_toml(drivers=True)
    for name, priority in (priorities or {}).items():
        nodes = nodes.replace(f'name = "{name}"\n', f'name = "{name}"\npriority = {priority}\n')
    lines = [f'journal = "{directory / "journal.jsonl"}"']
    for name, values in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path = directory / "hacontrol.toml"
    path.write_text("\n".join(lines) + "\n" + nodes)
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def settled(st: ServiceThread, primary: str) -> bool:
    """``primary`` is the primary, every node healthy, nothing fenced or running."""
    ctl = st.service.controller
    snap = ctl.snapshot()
    return (
        snap["primary"] == primary
        and all(n["health"] == "ok" for n in snap["nodes"])
        and not ctl.state.fenced
        and ctl.state.in_flight is None
        and not ctl.procedures
        # Every node passed the recovery threshold: a candidate for a switchover.
        and all(h.consecutive_successes >= ctl.settings.recovery_threshold
                for h in ctl.state.nodes.values())
    )


def journal_events(st: ServiceThread, kind: str, **details: Any) -> list[dict[str, Any]]:
    found = []
    for record in kinds(st.journal(), kind):
        got = record.get("details") or {}
        if all(got.get(k) == v for k, v in details.items()):
            found.append(record)
    return found


def streams_from(cluster: LocalCluster, name: str, upstream: str) -> None:
    cluster.wait_streaming(name, timeout=15, upstream=upstream)
    assert not cluster.node(name).is_primary()


def switch(config: Path, to: str) -> str:
    result = hacontrol(config, "switchover", "--to", to, "--timeout", "45")
    assert result.returncode == 0, output(result)
    return result.stdout


class RoundTimes:
    """When each probe round of the service completed (monotonic and wall clock)."""

    def __init__(self, st: ServiceThread) -> None:
        self.times: list[float] = []
        self.wall: list[float] = []
        st.service.round_listeners.append(self._add)

    def _add(self, _result: object) -> None:
        self.times.append(time.monotonic())
        self.wall.append(time.time())

    def wall_gaps(self, start: float, end: float) -> tuple[int, float]:
        """(rounds, longest gap between them) within wall-clock [start, end]."""
        inside = [t for t in self.wall if start <= t <= end]
        points = [start, *inside, end]
        return len(inside), max(b - a for a, b in itertools.pairwise(points))


def test_switchover_both_ways_through_the_cli_loses_no_write(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    with ServiceThread(config) as st:
        wait_until(lambda: settled(st, "pg1"), 20, "pg1 adopted, all healthy")
        rounds = RoundTimes(st)
        with Writer(dsn, interval=0.005) as writer:
            wait_until(lambda: len(writer.stats.acks) >= 20, 10, "writes on pg1")
            started = time.monotonic()
            out = switch(config, "pg2")
            ended = time.monotonic()
            assert "done: pg2 is the primary" in out, out
            streams_from(cluster, "pg1", "pg2")
            streams_from(cluster, "pg3", "pg2")
            # The old primary came back as a replica: not fenced, then or later.
            done = journal_events(st, "switchover_completed", old_primary="pg1")
            assert len(done) == 1 and done[0]["details"]["rejoined"] == ["pg1"], done
            assert st.service.controller.state.fenced == frozenset()
            time.sleep(1.0)
            assert "pg1" not in st.service.controller.state.fenced
            assert not [r for r in kinds(st.journal(), "node_fenced") if r["node"] == "pg1"]
            # Probe rounds went on while the procedure ran beside them.
            begun = kinds(st.journal(), "switchover_started")[0]["ts"]
            count, gap = rounds.wall_gaps(float(begun), float(done[0]["ts"]))
            print(f"switchover pg1 -> pg2: {ended - started:.2f} s through the CLI,"
                  f" {count} probe rounds during the procedure (longest gap {gap:.3f} s)")
            assert count >= 2 and gap < 0.5
            wait_until(lambda: settled(st, "pg2"), 15, "pg2 settled")
            back = switch(config, "pg1")
            assert "done: pg1 is the primary" in back, back
            streams_from(cluster, "pg2", "pg1")
            wait_until(lambda: settled(st, "pg1"), 15, "pg1 settled again")
            back_at = time.monotonic()
            wait_until(lambda: len(writer.acks_since(back_at)) >= 20, 10, "writes on pg1 again")
        assert lost_writes(writer.stats.acks, read_ids(cluster.dsn("pg1"))) == []
        windows = [r["window_s"] for r in kinds(st.journal(), "switchover_step")
                   if r.get("step") == "promote"]
        print(f"switchover windows (fence -> promoted): {windows}; "
              f"{len(writer.stats.acks)} acknowledged writes, none lost")
        assert len(windows) == 2 and all(w < 2.0 for w in windows)
        assert len(kinds(st.journal(), "switchover_completed")) == 2


def test_switchover_to_a_lagging_target_is_refused_with_the_reason(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path, sections={"failover": {"max_lag_bytes": 1 << 20}})
    with ServiceThread(config) as st:
        wait_until(lambda: settled(st, "pg1"), 20, "pg1 adopted, all healthy")
        # Freeze only pg2's WAL receiver: it still looks attached to pg1 (so the
        # controller has nothing to repoint) but receives nothing, so pg2 falls
        # behind and stays behind while the request is decided.
        receiver = int(cluster.node("pg2").query("SELECT pid FROM pg_stat_wal_receiver")[0][0])
        os.kill(receiver, signal.SIGSTOP)
        try:
            write_rows(cluster, "pg1", 3000, size=1000)  # ~3 MB pg2 does not receive

            def lagging() -> bool:
                rows = {n["name"]: n for n in st.service.controller.snapshot()["nodes"]}
                return bool((rows["pg2"].get("lag_bytes") or 0) > (1 << 20))

            wait_until(lagging, 10, "pg2 seen lagging")
            result = hacontrol(config, "switchover", "--to", "pg2")
        finally:
            os.kill(receiver, signal.SIGCONT)
        assert result.returncode == 1, output(result)
        assert "refused: pg2 is" in result.stderr and "behind (max 1 MiB)" in result.stderr
        assert "wait until it catches up" in result.stderr
        assert cluster.primaries() == ["pg1"]
        assert not kinds(st.journal(), "switchover_started")


def test_automatic_rejoin_after_a_sigkill_failover_keeps_the_loop_going(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # A pg_rewind that takes 2 s longer: the loop must not wait for it.
    slow = wrapped_bindir(cluster, 'sleep 2\nexec "{real}/pg_rewind" "$@"\n')
    nodes = cluster.config_toml(drivers=True)
    nodes = nodes.replace(f'bindir = "{cluster.pgbin.bindir}"', f'bindir = "{slow}"', 1)
    config = write_config(cluster, tmp_path, nodes_text=nodes)
    with ServiceThread(config) as st:
        wait_until(lambda: settled(st, "pg1"), 20, "pg1 adopted, all healthy")
        rounds = RoundTimes(st)
        cluster.node("pg1").kill()
        new = wait_until(
            lambda: st.primary if st.primary not in (None, "pg1") else None, 20, "a failover"
        )
        started = wait_until(lambda: journal_events(st, "rejoin_scheduled"), 20, "rejoin started")
        assert started[0]["node"] == "pg1" and started[0]["details"]["automatic"] is True
        rejoined = wait_until(
            lambda: [r for r in kinds(st.journal(), "node_rejoined") if r["node"] == "pg1"],
            60, "pg1 rejoined",
        )
        streams_from(cluster, "pg1", new)
        assert st.service.controller.state.fenced == frozenset()
        finished = [r for r in kinds(st.journal(), "rejoin_finished") if r.get("node") == "pg1"]
        assert finished and finished[-1]["ok"] is True, finished
        duration = float(finished[-1]["duration_s"])
        count, gap = rounds.wall_gaps(float(started[0]["ts"]), float(rejoined[0]["ts"]))
        print(f"automatic rejoin of pg1 ({finished[-1]['method']}) took {duration:.2f} s;"
              f" {count} probe rounds meanwhile, longest gap {gap:.3f} s;"
              f" event: {rejoined[0]['message']}")
        assert duration >= 2.0
        # Probe rounds kept their 0.1 s interval while the rejoin ran beside them.
        assert gap < 0.5 and count >= duration / 0.1 / 2
        wait_until(lambda: settled(st, new), 15, "all healthy after the rejoin")


def test_rejoin_by_hand_when_automatic_is_off(cluster: LocalCluster, tmp_path: Path) -> None:
    config = write_config(cluster, tmp_path, sections={"rejoin": {"automatic": False}})
    with ServiceThread(config) as st:
        wait_until(lambda: settled(st, "pg1"), 20, "pg1 adopted, all healthy")
        cluster.node("pg1").kill()
        new = wait_until(
            lambda: st.primary if st.primary not in (None, "pg1") else None, 20, "a failover"
        )
        time.sleep(1.0)
        assert "pg1" in st.service.controller.state.fenced
        assert not kinds(st.journal(), "rejoin_scheduled")
        assert not cluster.node("pg1").is_running()
        result = hacontrol(config, "rejoin", "pg1", "--timeout", "60")
        assert result.returncode == 0, output(result)
        assert "accepted: operator requested a rejoin of pg1" in result.stdout, result.stdout
        assert f"done: pg1 rejoined as a replica of {new}" in result.stdout, result.stdout
        streams_from(cluster, "pg1", new)
        assert st.service.controller.state.fenced == frozenset()
        # A node that is not fenced and streams needs nothing.
        again = hacontrol(config, "rejoin", "pg1")
        assert again.returncode == 0 and "nothing to rejoin" in again.stdout, output(again)


def wrapped_bindir(cluster: LocalCluster, rewind_script: str) -> Path:
    """A copy of the PostgreSQL bin directory (symlinks) whose pg_rewind is a shell
    script (``{real}`` in it: the real bin directory)."""
    fake = cluster.base_dir / "wrapped-bin"
    fake.mkdir()
    real = cluster.pgbin.bindir
    for entry in real.iterdir():
        if entry.name != "pg_rewind":
            (fake / entry.name).symlink_to(entry)
    script = fake / "pg_rewind"
    script.write_text("#!/bin/sh\n" + rewind_script.replace("{real}", str(real)))
    script.chmod(0o755)
    os.chmod(fake, 0o755)
    return fake


def test_a_failed_rejoin_leaves_the_node_stopped_and_fenced(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    nodes = cluster.config_toml(drivers=True)
    real = f'bindir = "{cluster.pgbin.bindir}"'
    failing = wrapped_bindir(cluster, 'echo "pg_rewind: simulated failure" >&2\nexit 1\n')
    nodes = nodes.replace(real, f'bindir = "{failing}"', 1)  # pg1's table
    config = write_config(cluster, tmp_path, nodes_text=nodes)
    with ServiceThread(config) as st:
        wait_until(lambda: settled(st, "pg1"), 20, "pg1 adopted, all healthy")
        cluster.node("pg1").kill()
        wait_until(lambda: st.primary not in (None, "pg1"), 20, "a failover")
        failed = wait_until(lambda: journal_events(st, "rejoin_failed"), 60, "rejoin failed")
        assert failed[0]["node"] == "pg1"
        assert "simulated failure" in str(kinds(st.journal(), "rejoin_step"))
        assert "left stopped and fenced" in failed[0]["message"]
        # Not retried by itself; stopped and fenced.
        time.sleep(1.5)
        assert len(journal_events(st, "rejoin_scheduled")) == 1
        assert not cluster.node("pg1").is_running()
        assert "pg1" in st.service.controller.state.fenced
        status = hacontrol(config, "status", "--json")
        assert status.returncode == 0, output(status)


def test_failback_after_rejoin_and_pause_holds_it(cluster: LocalCluster, tmp_path: Path) -> None:
    config = write_config(
        cluster, tmp_path, priorities={"pg1": 200},
        sections={
            "failover": {"failback": True, "failback_delay": 2.0},
            "timing": {"cooldown": 0.0},
        },
    )
    with ServiceThread(config) as st:
        wait_until(lambda: settled(st, "pg1"), 20, "pg1 adopted, all healthy")
        cluster.node("pg1").kill()
        new = wait_until(
            lambda: st.primary if st.primary not in (None, "pg1") else None, 20, "a failover"
        )
        wait_until(
            lambda: [r for r in kinds(st.journal(), "node_rejoined") if r["node"] == "pg1"],
            60, "pg1 rejoined",
        )
        paused = hacontrol(config, "pause")
        assert paused.returncode == 0, output(paused)
        pause_at = time.monotonic()
        while time.monotonic() - pause_at < 4.0:  # twice the failback delay
            assert st.primary == new
            time.sleep(0.1)
        assert not journal_events(st, "switchover_started", operation="failback")
        resumed = hacontrol(config, "resume")
        assert resumed.returncode == 0, output(resumed)
        wait_until(lambda: journal_events(st, "switchover_completed", operation="failback"),
                   30, "failback completed")
        assert st.primary == "pg1" and cluster.primaries() == ["pg1"]
        completed = journal_events(st, "switchover_completed", operation="failback")[0]
        assert completed["details"]["rejoined"] == [new], completed
        streams_from(cluster, new, "pg1")
        wait_until(lambda: settled(st, "pg1"), 15, "settled on pg1")
