"""Takeover drill: controllers on etcd losing their leader, side by side with one controller.

One real 3-member etcd for the whole run (a scope per trial); per trial, three fresh
3-node LocalClusters, each with a writer inserting an id every ~10 ms through the
multi-host DSN:

* two controllers with ``[dcs]``: the leader is SIGKILLed; *takeover* is the time
  from the kill to the other controller's first round as leader
  (``term_taken_up`` in its journal). Then the primary is SIGKILLed with the new
  leader healthy: *single-fault RTO (dcs)*, kill to the first acknowledged insert on
  the new primary;
* two controllers with ``[dcs]``: the leader and the primary are SIGKILLed
  together: *double-fault RTO*;
* one controller without ``[dcs]``: the primary is SIGKILLed: *single-fault RTO
  (alone)*, today's reference.

Printed per trial, then min / median / max, and the promotions counted in every
journal (exactly one per failover is required; exit 1 otherwise). Goals (issue):
takeover <= ttl + 0.5 s, double-fault RTO <= ttl + 1.5 s, single-fault RTO with
a healthy leader no worse than alone.

    python checks/takeover_drill.py --trials 5 [--ttl 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacontrol.io.journal import Journal
from hacontrol.testing import EtcdCluster, LocalCluster
from hacontrol.testing.checker import recovery_time
from hacontrol.testing.processes import ControllerProcess
from hacontrol.testing.workload import Writer, create_table

TIMEOUT_S = 60.0


@dataclass
class Trial:
    takeover_s: float | None = None
    rto_dcs_s: float | None = None
    rto_double_s: float | None = None
    rto_alone_s: float | None = None
    promotions: int = 0
    failovers: int = 0


def _records(path: Path) -> list[dict[str, Any]]:
    return Journal(path).read() if path.exists() else []


def _wait(predicate: Any, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None


def _promotions(paths: list[Path]) -> int:
    return sum(
        1 for p in paths for r in _records(p)
        if r.get("kind") == "action_started" and r.get("action") == "Promote"
    )


@contextmanager
def _controllers(
    cluster: LocalCluster, etcd: EtcdCluster | None, workdir: Path, scope: str, count: int,
    ttl: float,
) -> Iterator[list[tuple[ControllerProcess, Path]]]:
    with ExitStack() as stack:
        procs = []
        for i in range(count):
            name = f"ctl-{scope}-{i}"
            journal = workdir / f"{name}.jsonl"
            config = workdir / f"{name}.toml"
            dcs = ""
            if etcd is not None:
                endpoints = ", ".join(f'"{e}"' for e in etcd.endpoints)
                dcs = (f'\n[dcs]\nendpoints = [{endpoints}]\nscope = "{scope}"\n'
                       f'name = "{name}"\nttl = {ttl}\n')
            config.write_text(f'journal = "{journal}"\n[api]\nenabled = false\n' + dcs
                              + cluster.config_toml())
            proc = ControllerProcess(config, workdir / f"{name}.log")
            stack.enter_context(proc)
            procs.append((proc, journal))
            # The first leads: the drill knows whom to kill.
            if i == 0 and etcd is not None and not _wait(
                lambda j=journal: any(r.get("kind") == "term_taken_up" for r in _records(j))
            ):
                raise RuntimeError(f"{name} did not lead; see {workdir}/{name}.log")
        if not _wait(lambda: any(r.get("kind") == "primary_adopted"
                                 for _, j in procs for r in _records(j))):
            raise RuntimeError(f"no controller adopted a primary; see {workdir}")
        time.sleep(1.0)  # the standbys have read the leader's facts
        yield procs


def _rto(cluster: LocalCluster, kill: Any) -> float | None:
    """Kill (``kill()``) under a write load; seconds to the first ack elsewhere."""
    dsn = cluster.multi_host_dsn()
    create_table(dsn)
    old = cluster.node("pg1")
    writer = Writer(dsn, interval=0.01, statement_timeout=1.0, max_duration=TIMEOUT_S + 10)
    writer.start()
    try:
        time.sleep(0.5)
        at = time.monotonic()
        kill()
        _wait(lambda: recovery_time(writer.acks_since(at), at, old.port) is not None)
    finally:
        stats = writer.stop()
    return recovery_time(stats.acks, at, old.port)


def run_trial(etcd: EtcdCluster, workdir: Path, n: int, ttl: float) -> Trial:
    trial = Trial()
    with LocalCluster(nodes=3) as cluster, _controllers(
        cluster, etcd, workdir, f"t{n}a", 2, ttl
    ) as procs:
        (leader, _), (_, other) = procs
        killed = time.time()
        leader.kill()
        taken = _wait(lambda: [r for r in _records(other) if r.get("kind") == "term_taken_up"
                               and float(r["ts"]) >= killed])
        trial.takeover_s = float(taken[0]["ts"]) - killed if taken else None
        trial.rto_dcs_s = _rto(cluster, cluster.node("pg1").kill)
        trial.failovers += 1
        time.sleep(1.0)
        trial.promotions += _promotions([j for _, j in procs])
    with LocalCluster(nodes=3) as cluster, _controllers(
        cluster, etcd, workdir, f"t{n}b", 2, ttl
    ) as procs:
        (leader, _), _ = procs

        def both() -> None:
            leader.kill()
            cluster.node("pg1").kill()

        trial.rto_double_s = _rto(cluster, both)
        trial.failovers += 1
        time.sleep(1.0)
        trial.promotions += _promotions([j for _, j in procs])
    with LocalCluster(nodes=3) as cluster, _controllers(
        cluster, None, workdir, f"t{n}c", 1, ttl
    ) as procs:
        trial.rto_alone_s = _rto(cluster, cluster.node("pg1").kill)
        trial.failovers += 1
        time.sleep(1.0)
        trial.promotions += _promotions([j for _, j in procs])
    return trial


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _summary(label: str, values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return f"{label}: no result"
    return (f"{label}: {min(seen):.3f} / {statistics.median(seen):.3f} / {max(seen):.3f} s "
            f"(min / median / max over {len(seen)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=3.0, help="the leader lease (dcs.ttl)")
    args = parser.parse_args()
    print(f"takeover drill: ttl={args.ttl:g} s trials={args.trials}")
    print(f"{'trial':>5} {'takeover_s':>10} {'rto_dcs_s':>9} {'rto_double_s':>12} "
          f"{'rto_alone_s':>11} promotions/failovers")
    results: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="hacontrol-takeover-") as tmp:
        os.chmod(tmp, 0o755)
        with EtcdCluster(3, base_dir=Path(tmp) / "etcd") as etcd:
            for i in range(1, args.trials + 1):
                workdir = Path(tmp) / f"trial{i}"
                workdir.mkdir()
                os.chmod(workdir, 0o755)
                t = run_trial(etcd, workdir, i, args.ttl)
                results.append(t)
                print(f"{i:>5} {_fmt(t.takeover_s):>10} {_fmt(t.rto_dcs_s):>9} "
                      f"{_fmt(t.rto_double_s):>12} {_fmt(t.rto_alone_s):>11} "
                      f"{t.promotions}/{t.failovers}", flush=True)
    print(_summary("takeover (kill -9 of the leader -> new leader acting)",
                   [t.takeover_s for t in results]))
    print(_summary("double-fault RTO (leader and primary killed together)",
                   [t.rto_double_s for t in results]))
    print(_summary("single-fault RTO, healthy leader on etcd", [t.rto_dcs_s for t in results]))
    print(_summary("single-fault RTO, one controller alone (reference)",
                   [t.rto_alone_s for t in results]))
    print(json.dumps({"goal_takeover_s": args.ttl + 0.5, "goal_double_rto_s": args.ttl + 1.5}))
    bad = [t for t in results if t.promotions != t.failovers or None in (
        t.takeover_s, t.rto_dcs_s, t.rto_double_s, t.rto_alone_s)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
