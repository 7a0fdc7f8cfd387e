"""History under load: does reading the journal through the API hold up health checks?

A real 3-node LocalCluster, the real controller service (``hacontrol run``'s
Service, as a subprocess, probing the cluster and serving the API on a loopback
port) over a journal of ``--events`` records (default 200,000, about 55 MB). While
a separate prober process asks ``GET /health`` and ``GET /nodes/pg1/primary``
(HAProxy's check) every 50 ms, waves of ``--parallel`` (default 50) concurrent
``GET /history?limit=1`` go out, each wave with 2 x ``limit=1000`` and 1 x
``limit=10000`` beside them. Printed: p50 / p99 / max latency of the health
checks and of the history requests, the gaps between the controller's probe
rounds (they should stay at ``probe_interval``), and how many checks took longer
than HAProxy's ``timeout check`` (2 s in docs/haproxy.cfg).

    python checks/bench_history.py                 # the code as it is
    python checks/bench_history.py --before        # GET /history as before the fix:
                                                   # the whole file read in the event loop
    python checks/bench_history.py --compare       # both, one after the other

``--before`` replaces only the /history handler of the running service by the
old one (every line of the journal parsed, synchronously, on each request), so
the two runs differ in nothing else. Every process the script starts is stopped
by its PID, the cluster too, also on failure; everything is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hacontrol.testing.processes import ChildProcess

HEALTH_PATHS = ("/health", "/nodes/pg1/primary")
PROBE_EVERY_S = 0.05
# HAProxy's "timeout check" in docs/haproxy.cfg: a slower answer is a failed check.
HAPROXY_TIMEOUT_S = 2.0
HAPROXY_INTER_S = 0.5
HAPROXY_FALL = 2
REQUEST_TIMEOUT_S = 600.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RUN_DEADLINE_S = 1200.0

# Kinds that recover() ignores, so the filler changes nothing the controller restores.
_FILLER = (
    ("action_started", "Repoint", "replica {node} streams from the old primary; repoint it at"
     " pg1 (timeline 1) so that it follows the new primary and stays a failover candidate"),
    ("action_finished", "Repoint", "primary_conninfo set and configuration reloaded on {node};"
     " its WAL receiver restarts and connects to pg1 within a round or two"),
    ("node_unreachable", None, "{node} failed 3 probes in a row over 0.61 s: connection"
     " refused (is the server running on that host and accepting TCP/IP connections?)"),
    ("node_recovered", None, "{node} answered 3 probes in a row after being unreachable for"
     " 4.2 s; it counts as healthy again and may be a failover candidate"),
)


def build_journal(path: Path, events: int) -> int:
    """A journal of ``events`` realistic records that leave the controller's recovered
    state alone (pg1 adopted first); returns its size in bytes."""
    start = time.time() - events * 0.5
    with path.open("w", encoding="utf-8") as handle:
        first = {"seq": 1, "ts": start, "kind": "primary_adopted", "node": "pg1",
                 "severity": "info", "message": "pg1 adopted as the primary (timeline 1)"}
        handle.write(json.dumps(first, separators=(",", ":")) + "\n")
        for seq in range(2, events + 1):
            kind, action, text = _FILLER[seq % len(_FILLER)]
            node = f"pg{seq % 3 + 1}"
            record: dict[str, Any] = {"seq": seq, "ts": start + seq * 0.5, "kind": kind,
                                      "node": node, "severity": "info",
                                      "message": text.format(node=node)}
            if action:
                record.update(action=action, status="succeeded", detail="3.1 ms")
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path.stat().st_size


# --------------------------------------------------------------------------- the server


def legacy_read(path: Path, limit: int) -> list[dict[str, Any]]:
    """Journal.read(limit) before the fix: every line of the file parsed."""
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records[-limit:]


def serve(config_path: Path, before: bool, rounds_out: Path) -> int:
    """Run the controller service; with ``before``, GET /history as it was."""
    from aiohttp import web

    from hacontrol.config import load_config
    from hacontrol.service import api
    from hacontrol.service.api_history import DEFAULT_HISTORY, MAX_HISTORY
    from hacontrol.service.api_input import int_param
    from hacontrol.service.logs import configure_logging
    from hacontrol.service.service import Service

    config = load_config(config_path)
    configure_logging("warning", json=True)
    if before:
        journal_path = Path(config.journal)

        async def legacy_history(request: web.Request) -> web.Response:
            limit = int_param(request, "limit", 1, MAX_HISTORY) or DEFAULT_HISTORY
            return api._json({"events": legacy_read(journal_path, limit)})

        api._history = legacy_history  # type: ignore[assignment]
    service = Service(config, config_path=config_path)
    rounds: list[float] = []
    service.round_listeners.append(lambda _result: rounds.append(time.time()))
    try:
        return asyncio.run(service.run())
    finally:
        rounds_out.write_text(json.dumps(rounds))


# --------------------------------------------------------------------------- the prober


def probe(base: str, stop_file: Path, out: Path) -> int:
    """Ask the health checks every 50 ms until ``stop_file`` exists; one JSON list of
    [wall time sent, path, seconds, status] to ``out``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    samples: list[tuple[float, str, float, int]] = []
    deadline = time.monotonic() + RUN_DEADLINE_S
    turn = 0
    while not stop_file.exists() and time.monotonic() < deadline:
        path = HEALTH_PATHS[turn % len(HEALTH_PATHS)]
        turn += 1
        sent, started = time.time(), time.perf_counter()
        try:
            with opener.open(base + path, timeout=REQUEST_TIMEOUT_S) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        samples.append((sent, path, time.perf_counter() - started, status))
        time.sleep(PROBE_EVERY_S)
    out.write_text(json.dumps(samples))
    return 0


# --------------------------------------------------------------------------- the load


@dataclass
class Run:
    """What one run measured."""

    mode: str
    health: dict[str, list[float]] = field(default_factory=dict)
    idle: dict[str, list[float]] = field(default_factory=dict)
    history: dict[int, list[float]] = field(default_factory=dict)
    failed: int = 0
    gaps: list[float] = field(default_factory=list)
    load_s: float = 0.0


async def fire(base: str, parallel: int, waves: int, run: Run) -> None:
    """``waves`` waves of ``parallel`` /history?limit=1 and a few bigger ones, at once."""
    limits = [1] * parallel + [1000, 1000, 10000]
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     trust_env=False) as session:

        async def one(limit: int) -> None:
            started = time.perf_counter()
            try:
                async with session.get(f"{base}/history?limit={limit}") as resp:
                    body = await resp.json()
                    ok = resp.status == 200 and len(body["events"]) == limit
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                ok = False
            if ok:
                run.history.setdefault(limit, []).append(time.perf_counter() - started)
            else:
                run.failed += 1

        for _ in range(waves):
            await asyncio.gather(*(one(limit) for limit in limits))
            await asyncio.sleep(0.5)


def child(args: list[str], log: Path) -> ChildProcess:
    """This script run again as a child with ``args``, stopped by its PID (SIGTERM,
    then SIGKILL) when its ``with`` block ends."""
    return ChildProcess([sys.executable, __file__, *args], log, stop_timeout=STOP_TIMEOUT_S)


def measure(config: Path, work: Path, mode: str, parallel: int, waves: int) -> Run:
    """One run against a fresh controller process on the same cluster and journal."""
    from hacontrol.config import load_config

    listen = load_config(config).api.listen
    base = f"http://{listen}"
    run = Run(mode)
    rounds_out, samples_out = work / f"rounds-{mode}.json", work / f"samples-{mode}.json"
    stop_file = work / f"stop-{mode}"
    stop_file.unlink(missing_ok=True)
    serve_args = ["--serve", str(config), "--rounds-out", str(rounds_out)]
    with child(serve_args + (["--before"] if mode == "before" else []),
               work / f"controller-{mode}.log") as server:
        if not server.wait_http(base + "/nodes/pg1/primary", START_TIMEOUT_S):
            raise RuntimeError(f"the controller did not adopt pg1; see {work}/controller-{mode}"
                               f".log (exit {server.returncode()})")
        with child(["--probe", base, "--stop-file", str(stop_file), "--out", str(samples_out)],
                   work / f"prober-{mode}.log") as prober:
            time.sleep(3.0)  # idle baseline
            load_from = time.time()
            asyncio.run(fire(base, parallel, waves, run))
            load_to = time.time()
            time.sleep(1.0)
            stop_file.touch()
            prober.wait_exit(REQUEST_TIMEOUT_S)
        run.load_s = load_to - load_from
    samples = json.loads(samples_out.read_text()) if samples_out.exists() else []
    for sent, path, seconds, status in samples:
        if status != 200:
            run.failed += 1
        if sent < load_from:
            run.idle.setdefault(path, []).append(seconds)
        elif sent <= load_to:
            run.health.setdefault(path, []).append(seconds)
    rounds = json.loads(rounds_out.read_text()) if rounds_out.exists() else []
    # From the last round before the load to the first one after it: a loop held up
    # by the load shows as one long gap.
    before = [t for t in rounds if t < load_from][-1:]
    after = [t for t in rounds if t > load_to][:1]
    inside = before + [t for t in rounds if load_from <= t <= load_to] + after
    run.gaps = [b - a for a, b in itertools.pairwise(inside)]
    return run


def _stats(values: list[float]) -> str:
    if not values:
        return f"{0:>6}  {'-':>9} {'-':>9} {'-':>9}"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"{len(values):>6}  {statistics.median(ordered) * 1000:>9.1f}"
            f" {p99 * 1000:>9.1f} {ordered[-1] * 1000:>9.1f}")


def report(run: Run, size: int, events: int, parallel: int, waves: int) -> None:
    title = ("before the fix: whole journal parsed in the event loop per request"
             if run.mode == "before" else
             "after the fix: read from the tail, in worker threads")
    print(f"\n== {title}")
    print(f"journal {events} events, {size / 1e6:.1f} MB; {waves} wave(s) of {parallel} x"
          f" /history?limit=1 + 2 x limit=1000 + 1 x limit=10000, all at once;"
          f" load lasted {run.load_s:.1f} s")
    print(f"{'':<34}{'n':>6}  {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for path in HEALTH_PATHS:
        print(f"{'idle    GET ' + path:<34}{_stats(run.idle.get(path, []))}")
    for path in HEALTH_PATHS:
        print(f"{'loaded  GET ' + path:<34}{_stats(run.health.get(path, []))}")
    for limit in sorted(run.history):
        print(f"{'        GET /history?limit=' + str(limit):<34}{_stats(run.history[limit])}")
    print(f"{'probe round gaps under load':<34}{_stats(run.gaps)}")
    slow = sum(1 for values in run.health.values() for s in values if s > HAPROXY_TIMEOUT_S)
    checks = sum(len(v) for v in run.health.values())
    print(f"health checks over HAProxy's {HAPROXY_TIMEOUT_S:g} s timeout: {slow} of {checks};"
          f" failed requests: {run.failed}")
    # HAProxy checks every `inter` whatever the answers; each one unanswered within
    # `timeout check` fails, and `fall` failures in a row mark the server down.
    stall = max((s for values in run.health.values() for s in values), default=0.0)
    down = stall >= HAPROXY_TIMEOUT_S + (HAPROXY_FALL - 1) * HAPROXY_INTER_S
    print(f"longest wait for a health check: {stall:.2f} s -> HAProxy (inter"
          f" {HAPROXY_INTER_S:g} s, timeout check {HAPROXY_TIMEOUT_S:g} s, fall {HAPROXY_FALL})"
          + (f" marks pg1 DOWN for about {stall - HAPROXY_TIMEOUT_S:.0f} s" if down
             else " keeps pg1 up"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument("--waves", type=int, default=5,
                        help="waves of requests (--before: 1 unless given; each takes minutes)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--before", action="store_true",
                      help="measure GET /history as it was before the fix")
    mode.add_argument("--compare", action="store_true", help="before, then after")
    # Internal: the two helper processes.
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rounds-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.before, args.rounds_out)
    if args.probe:
        return probe(args.probe, args.stop_file, args.out)

    from hacontrol.testing import LocalCluster
    from hacontrol.testing.local_node import free_port

    modes = ["before", "after"] if args.compare else ["before" if args.before else "after"]
    explicit_waves = "--waves" in sys.argv
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp, \
            LocalCluster(nodes=3) as cluster:
        work = Path(tmp)
        # The postgres OS user (when run as root) must not need to read it; 0o700 is fine.
        os.chmod(work, 0o700)
        journal = work / "journal.jsonl"
        size = build_journal(journal, args.events)
        config = work / "hacontrol.toml"
        config.write_text(
            f'journal = "{journal}"\n\n[api]\nlisten = "127.0.0.1:{free_port()}"\n'
            'token = "bench-token-0123456789abcdef0123"\n' + cluster.config_toml()
        )
        print(f"cluster up: {', '.join(f'{n.name}:{n.port}' for n in cluster.nodes)};"
              f" journal {journal.name}: {args.events} events, {size / 1e6:.1f} MB")
        for name in modes:
            waves = args.waves if explicit_waves or name == "after" else 1
            run = measure(config, work, name, args.parallel, waves)
            report(run, size, args.events, args.parallel, waves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
