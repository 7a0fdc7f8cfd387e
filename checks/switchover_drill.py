"""Switchover drill: how long writes pause during a planned switchover, and what is lost.

Per trial: a fresh 3-node LocalCluster with local node drivers, a writer
inserting an id every ~5 ms through the multi-host DSN
(target_session_attrs=read-write) and recording every acknowledged id, then a
planned switchover pg1 -> pg2. Printed per trial:

* gap_s     the longest time between two acknowledged writes around the
            switchover (what users feel)
* window_s  the procedure's write-unavailability window (fence -> promoted)
* lost      acknowledged ids missing on the new primary afterwards (must be 0)
* overlap   stretches in which both nodes acknowledged writes (must be 0)
* reconn_s  promote returned -> first write acknowledged by the new primary
            (negative: a client got in before the procedure saw the promote finish)

and where the window goes, step by step (fence, settle: sessions from before the
fence gone, catch-up: the target replayed the fenced WAL, stop: clean shutdown
of the old primary, ctl: its shutdown checkpoint read, replay: the target
replayed it, promote); then min / median / max. Exit 1 if a trial failed, lost
a write or had two writable primaries.

    python checks/switchover_drill.py --trials 5
    python checks/switchover_drill.py --trials 5 --via api

The switchover is driven through a :class:`Switcher`: ``--via procedure`` runs
the procedure (:func:`hacontrol.io.procedures.switchover.run_switchover`) in this process;
``--via api`` starts the controller service on the cluster (local drivers from
``LocalCluster.config_toml(drivers=True)``, its API on a loopback port) and
asks it with ``POST /switchover``, then follows ``GET /status`` until the
switchover has ended; the window and steps come from the journaled
``switchover_step`` record of the promote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hacontrol.config import load_config
from hacontrol.core.actions import Switchover
from hacontrol.core.results import OutcomeStatus
from hacontrol.io.drivers.local import LocalDriver
from hacontrol.io.journal import Journal
from hacontrol.io.procedures.switchover import SwitchoverContext, run_switchover
from hacontrol.service.logs import configure_logging
from hacontrol.service.sdnotify import Notifier
from hacontrol.service.service import Service
from hacontrol.testing import LocalCluster
from hacontrol.testing.checker import Ack, brain_windows, lost_writes
from hacontrol.testing.local_node import free_port
from hacontrol.testing.workload import Writer, create_table, read_ids

# The procedure's step marks, in order; a phase is the time from the previous mark.
PHASES = (
    ("fence", "fenced"),
    ("settle", "settled"),
    ("catchup", "caught_up"),
    ("stop", "stopped"),
    ("ctl", "checkpoint_read"),
    ("replay", "checkpoint_replayed"),
    ("promote", "promoted"),
)


@dataclass
class SwitchResult:
    """What a switcher reports: the outcome, the window, and when each step ended."""

    ok: bool
    detail: str
    window_s: float | None = None
    # Seconds from the start of the fence to the end of each step (the procedure's marks).
    marks: dict[str, float] = field(default_factory=dict)
    # Drill-clock (monotonic) time at which the promote was seen to return.
    promoted_at: float | None = None


class Switcher(Protocol):
    """Carries out a switchover ``old`` -> ``new`` on ``cluster``."""

    name: str

    def __call__(self, cluster: LocalCluster, old: str, new: str) -> SwitchResult: ...


def local_driver(cluster: LocalCluster, name: str) -> LocalDriver:
    """The local driver of one LocalCluster node."""
    node = cluster.node(name)
    return LocalDriver(name, node.data_dir, bindir=node.bindir, os_user=node.owner.name,
                       log_file=node.log_path, timeout=30)


class ProcedureSwitcher:
    """Runs the switchover procedure in this process, as the controller will."""

    name = "procedure"

    def __call__(self, cluster: LocalCluster, old: str, new: str) -> SwitchResult:
        records: list[tuple[float, str, dict[str, Any]]] = []

        def record(kind: str, fields: dict[str, Any]) -> None:
            records.append((time.monotonic(), kind, fields))

        ctx = SwitchoverContext(
            specs={s.name: s for s in cluster.node_specs()},
            drivers={n.name: local_driver(cluster, n.name) for n in cluster.nodes},
            record=record,
            catchup_timeout=5.0,
            rejoin_timeout=15.0,
        )
        outcome = asyncio.run(run_switchover(ctx, Switchover(old, new, "switchover drill")))
        result = SwitchResult(outcome.status is OutcomeStatus.SUCCEEDED
                              and outcome.rejoined == frozenset({old}), outcome.detail)
        for at, kind, fields in records:
            if kind == "switchover_step" and fields.get("step") == "promote":
                result.window_s = fields.get("window_s")
                result.marks = dict(fields.get("marks") or {})
                result.promoted_at = at
        return result


class _ServiceThread:
    """The controller service with its own event loop in a thread; stopped on exit."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, name="controller", daemon=True)

    def _main(self) -> None:
        async def body() -> int:
            self.loop = asyncio.get_running_loop()
            self.started.set()
            return await self.service.run(install_signals=False)

        asyncio.run(body())

    def __enter__(self) -> _ServiceThread:
        self.thread.start()
        self.started.wait(10)
        deadline = time.monotonic() + 10
        while self.service.api_address is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.service.api_address is None:
            raise RuntimeError("the controller's API did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.service.request_stop, "drill finished")
        self.thread.join(60)


class ApiSwitcher:
    """Asks a controller service running on the cluster: ``POST /switchover``."""

    name = "api"
    interval = 0.1

    def __call__(self, cluster: LocalCluster, old: str, new: str) -> SwitchResult:
        token = secrets.token_hex(16)
        path = cluster.base_dir / "drill.toml"
        path.write_text(
            f'journal = "{cluster.base_dir / "drill-journal.jsonl"}"\n\n'
            f"[timing]\nprobe_interval = {self.interval}\n\n"
            f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntoken = "{token}"\n'
            + cluster.config_toml(drivers=True)
        )
        config = load_config(path)
        service = Service(config, config_path=path, notifier=Notifier(None))
        with _ServiceThread(service) as running:
            address = running.service.api_address
            assert address is not None
            if not _wait(lambda: _settled(address, old), 20):
                return SwitchResult(False, f"the controller did not adopt {old} within 20 s")
            # A replica counts as healthy after a few probe rounds; until then the
            # controller refuses (409) and says so.
            deadline = time.monotonic() + 5
            while True:
                code, answer = _call(address, "POST", "/switchover", {"to": new}, token)
                if code != 409 or time.monotonic() > deadline or "not healthy yet" not in str(
                    answer.get("message")
                ):
                    break
                time.sleep(self.interval)
            if code != 202:
                return SwitchResult(False, f"POST /switchover answered {code}: "
                                    f"{answer.get('message') or answer.get('error')}")
            if not _wait(lambda: _settled(address, new), 60):
                return SwitchResult(False, f"{new} not the settled primary within 60 s")
            records = Journal(config.journal).read()
        result = SwitchResult(False, "no switchover_completed record")
        for record in records:
            if record.get("kind") == "switchover_step" and record.get("step") == "promote":
                result.window_s = record.get("window_s")
                result.marks = dict(record.get("marks") or {})
                # Journal times are wall-clock: carry the promote over to this clock.
                result.promoted_at = time.monotonic() - (time.time() - float(record["ts"]))
            if record.get("kind") == "switchover_completed":
                details = record.get("details") or {}
                result.ok = details.get("rejoined") == [old]
                result.detail = str(details.get("detail") or record.get("message"))
        return result


def _call(address: str, method: str, path: str, body: Any = None,
          token: str = "") -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{address}{path}", data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw, code = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, code = exc.read(), exc.code
    answer = json.loads(raw) if raw else {}
    return code, answer if isinstance(answer, dict) else {}


def _settled(address: str, primary: str) -> bool:
    """``primary`` is the primary, nothing in flight, every node healthy."""
    code, snap = _call(address, "GET", "/status")
    return (
        code == 200
        and snap.get("primary") == primary
        and snap.get("failover_in_flight") is None
        and not snap.get("procedures")
        and all(n.get("health") == "ok" for n in snap.get("nodes") or [])
    )


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


SWITCHERS: dict[str, type[ProcedureSwitcher] | type[ApiSwitcher]] = {
    "procedure": ProcedureSwitcher,
    "api": ApiSwitcher,
}


@dataclass
class Trial:
    ok: bool
    detail: str
    gap_s: float | None
    window_s: float | None
    lost: int
    overlap: int
    acked: int
    reconnect_s: float | None
    phases: dict[str, float]


def longest_gap(acks: Sequence[Ack], start: float, end: float) -> float | None:
    """The longest time between two acknowledged writes around [start, end]:
    the last one before, every one during, the first one after."""
    times = sorted(a.at for a in acks)
    before = [t for t in times if t <= start][-1:]
    during = [t for t in times if start < t <= end]
    after = [t for t in times if t > end][:1]
    span = before + during + after
    return max((b - a for a, b in itertools.pairwise(span)), default=None)


def phases(marks: dict[str, float]) -> dict[str, float]:
    """Each step's share of the window, from the procedure's cumulative marks."""
    out: dict[str, float] = {}
    previous = 0.0
    for phase, mark in PHASES:
        if mark in marks:
            out[phase] = marks[mark] - previous
            previous = marks[mark]
    return out


def wait_acks(writer: Writer, port: int, count: int, timeout: float = 15.0) -> bool:
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        if sum(1 for a in writer.acks_since(since) if a.port == port) >= count:
            return True
        time.sleep(0.02)
    return False


def run_trial(switcher: Switcher, interval: float, old: str = "pg1", new: str = "pg2") -> Trial:
    with LocalCluster(nodes=3) as cluster:
        dsn = cluster.multi_host_dsn()
        create_table(dsn)
        old_port, new_port = cluster.node(old).port, cluster.node(new).port
        writer = Writer(dsn, interval=interval, statement_timeout=1.0, max_duration=120)
        writer.start()
        try:
            if not wait_acks(writer, old_port, 50):
                raise RuntimeError(f"writer does not write: {writer.stats.last_error}")
            started = time.monotonic()
            result = switcher(cluster, old, new)
            ended = time.monotonic()
            if result.ok:
                wait_acks(writer, new_port, 50)
        finally:
            stats = writer.stop()
        acks = list(stats.acks)
        lost = len(lost_writes(acks, read_ids(cluster.dsn(new)))) if result.ok else -1
        reconnect = None
        if result.promoted_at is not None:
            first = min((a.at for a in acks if a.port == new_port), default=None)
            reconnect = None if first is None else first - result.promoted_at
        return Trial(result.ok, result.detail, longest_gap(acks, started, ended),
                     result.window_s, lost, len(brain_windows(acks)), len(acks), reconnect,
                     phases(result.marks))


def _fmt(value: float | None, width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.005,
                        help="seconds between the writer's inserts (default 0.005)")
    parser.add_argument("--via", choices=sorted(SWITCHERS), default="procedure",
                        help="how the switchover is driven")
    parser.add_argument("--log-level", default="warning",
                        help="the controller's log level with --via api (to stderr)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, stream=sys.stderr)
    switcher = SWITCHERS[args.via]()
    names = [p for p, _ in PHASES]
    print(f"switchover drill: pg1 -> pg2 via {switcher.name}, writer every "
          f"{args.interval * 1000:g} ms, trials={args.trials}")
    print(f"{'trial':>5} {'gap_s':>7} {'window_s':>8} {'lost':>5} {'overlap':>7} {'acked':>6} "
          f"{'reconn_s':>8} | " + " ".join(f"{n:>7}" for n in names))
    results: list[Trial] = []
    for i in range(1, args.trials + 1):
        trial = run_trial(switcher, args.interval)
        results.append(trial)
        print(f"{i:>5} {_fmt(trial.gap_s)} {_fmt(trial.window_s, 8)} {trial.lost:>5} "
              f"{trial.overlap:>7} {trial.acked:>6} {_fmt(trial.reconnect_s, 8)} | "
              + " ".join(_fmt(trial.phases.get(n)) for n in names), flush=True)
        if not trial.ok:
            print(f"      failed: {trial.detail}", flush=True)
    gaps = [t.gap_s for t in results if t.gap_s is not None]
    windows = [t.window_s for t in results if t.window_s is not None]
    print(f"longest write gap min/median/max: {_spread(gaps)}")
    print(f"window (fence -> promoted) min/median/max: {_spread(windows)}")
    medians = {n: statistics.median(v) for n in names
               if (v := [t.phases[n] for t in results if n in t.phases])}
    print("median per step: " + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in medians.items()))
    print(f"lost acknowledged writes: {sum(max(t.lost, 0) for t in results)}; "
          f"two-writer overlaps: {sum(t.overlap for t in results)}")
    bad = [t for t in results if not t.ok or t.lost != 0 or t.overlap]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
