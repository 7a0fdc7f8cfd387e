"""The journal's history against a running controller on a real LocalCluster: many
history requests over a 200,000-event journal never hold up the health checks or the
probe rounds; a controller restarted on a rotated journal remembers what only the
snapshot still says; the history filters through the API and the CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hacontrol.core.recovery import SNAPSHOT_KIND
from hacontrol.io.journal import Journal
from hacontrol.testing import LocalCluster
from hacontrol.testing.processes import ControllerProcess

from .operator_support import TOKEN, ServiceThread, hacontrol, output, write_config
from .support import kinds, wait_until

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT_S = 30.0
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "checks" / "bench_history.py"
    spec = importlib.util.spec_from_file_location("bench_history", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up while being defined.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def get(url: str, timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, Any, float]:
    """(status, JSON body, seconds) of one GET; status 0 when it did not answer."""
    started = time.perf_counter()
    try:
        with OPENER.open(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None, time.perf_counter() - started
    return status, json.loads(raw) if raw else None, time.perf_counter() - started


def test_history_requests_on_a_big_journal_never_hold_up_checks_or_probes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    size = bench().build_journal(tmp_path / "journal.jsonl", 200_000)
    assert size > 45_000_000
    text = config.read_text()
    listen = text.split('listen = "', 1)[1].split('"', 1)[0]
    base = f"http://{listen}"
    with ControllerProcess(config, tmp_path / "controller.log", stop_timeout=30) as ctl:
        wait_until(lambda: ctl.returncode() is not None
                   or get(f"{base}/nodes/pg1/primary", 2)[0] == 200,
                   60, "the controller to adopt pg1")
        assert ctl.returncode() is None, (tmp_path / "controller.log").read_text()[-2000:]
        rounds_before = get(f"{base}/health")[1]["rounds"]
        answers: list[tuple[int, int, int]] = []
        checks: list[tuple[int, float]] = []
        done = threading.Event()

        def one(limit: int) -> None:
            status, body, _ = get(f"{base}/history?limit={limit}")
            answers.append((limit, status, len(body["events"]) if status == 200 else -1))

        def watch() -> None:
            while not done.is_set():
                status, _, seconds = get(f"{base}/nodes/pg1/primary")
                checks.append((status, seconds))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        for _ in range(3):
            load = [threading.Thread(target=one, args=(limit,), daemon=True)
                    for limit in [1] * 50 + [1000, 1000, 10000]]
            for thread in load:
                thread.start()
            for thread in load:
                thread.join(REQUEST_TIMEOUT_S * 2)
        elapsed = time.monotonic() - started
        done.set()
        watcher.join(REQUEST_TIMEOUT_S * 2)
        rounds = get(f"{base}/health")[1]["rounds"] - rounds_before
    assert sorted(answers) == sorted((n, 200, n) for n in [1] * 150 + [1000] * 6 + [10000] * 3)
    worst = max(seconds for _, seconds in checks)
    print(f"{len(checks)} HAProxy checks during {elapsed:.1f} s of history load: worst"
          f" {worst * 1000:.0f} ms; {rounds} probe rounds")
    assert all(status == 200 for status, _ in checks)
    assert worst < 1.0
    # Rounds every 0.1 s: most of them happen while the history is read.
    assert rounds >= elapsed / 0.1 * 0.5


def test_a_restarted_controller_recovers_what_only_the_snapshot_still_says(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    path = tmp_path / "journal.jsonl"
    # An earlier controller's journal, rotated with nothing old kept: the pause and
    # pg2's maintenance are in no record any more, only in the snapshot.
    earlier = Journal(path, rotate_bytes=4096, keep=0)
    earlier.append("primary_adopted", node="pg1")
    earlier.append("paused")
    earlier.append("maintenance_on", node="pg2")
    for n in range(100):
        earlier.append("action_finished", node="pg3", action="Repoint", status="succeeded",
                       detail="primary_conninfo set" * 5, n=n)
    assert sorted(p.name for p in tmp_path.glob("journal.jsonl*")) == ["journal.jsonl"]
    on_disk = [json.loads(line) for line in path.read_text().splitlines()]
    assert on_disk[0]["kind"] == SNAPSHOT_KIND
    assert {r["kind"] for r in on_disk[1:]} == {"action_finished"}
    with ServiceThread(config) as st:
        wait_until(lambda: st.service.controller.rounds >= 3, 10, "three rounds")
        state = st.service.controller.state
        assert state.paused and state.maintenance == frozenset({"pg2"})
        assert st.primary == "pg1"
        status, snap = st.call("GET", "/status")
        assert status == 200 and snap["paused"] is True
        assert {n["name"]: n["maintenance"] for n in snap["nodes"]} == {
            "pg1": False, "pg2": True, "pg3": False,
        }
        recovered = kinds(st.journal(), "controller_recovered")[-1]
        assert recovered["paused"] is True and recovered["maintenance"] == ["pg2"]
        # Paused means paused: the primary's death starts no failover.
        cluster.node("pg1").kill()
        wait_until(lambda: [r for r in kinds(st.journal(), "failover_blocked")
                            if r["details"].get("blocked_by") == "paused"],
                   15, "a failover_blocked (paused) event")
        assert st.primary == "pg1" and cluster.primaries() == []


def test_history_filters_through_the_api_and_the_cli(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with ServiceThread(config) as st:
        wait_until(lambda: kinds(st.journal(), "primary_adopted"), 15, "pg1 adopted")
        for name in ("pg2", "pg3"):
            status, body = st.call("POST", "/maintenance", {"node": name, "on": True},
                                   token=TOKEN)
            assert status == 200, body
        query = urllib.parse.urlencode({"kind": "maintenance_on,primary_adopted",
                                        "node": "pg2", "since": "10m"})
        status, body = st.call("GET", f"/history?{query}")
        assert status == 200, body
        assert [(e["kind"], e["node"]) for e in body["events"]] == [("maintenance_on", "pg2")]
        status, body = st.call("GET", "/history?kind=maintenance_on&limit=1")
        assert [e["node"] for e in body["events"]] == ["pg3"]
        status, body = st.call("GET", "/history?since=2000-01-01T00:00:00Z&kind=nothing")
        assert (status, body["events"]) == (200, [])
        status, body = st.call("GET", "/history?since=soon")
        assert status == 400 and body["error"].startswith("since: not a time")

        for extra in ([], ["--journal"]):
            shown = hacontrol(config, "history", "--kind", "maintenance_on", "--node", "pg3",
                              "--since", "1h", *extra)
            assert shown.returncode == 0, output(shown)
            lines = shown.stdout.splitlines()
            assert "times are UTC" in lines[0]
            assert len(lines) == 2 and "maintenance_on" in lines[1] and "pg3" in lines[1]
            assert lines[1][23:26] == "Z  "  # 2026-12-01 21:40:12.345Z
        source = hacontrol(config, "history", "-n", "3", "--json")
        assert "from the controller" in source.stderr
        assert len(source.stdout.splitlines()) == 3
