"""Failover drill: how long writes are unavailable when the primary dies, and what is lost.

Per trial: a fresh 3-node LocalCluster, the controller as a subprocess
(`hacontrol run`), a writer inserting an id every ~10 ms through the multi-host
DSN (target_session_attrs=read-write) and recording every acknowledged id. Then
the primary is SIGKILLed (--fault kill) or frozen with SIGSTOP (--fault stop).
Printed per trial: RTO (fault -> first acknowledged insert on the new primary),
when the controller declared the failure (failure_confirmed) and when pg_promote
returned (promote_succeeded), both from the journal, and the acknowledged ids
missing afterwards; then min / median / max. Exit 1 if a trial did not fail over.
With --sync quorum the cluster starts synchronous (LocalCluster(sync=True)) and the
controller runs with [replication] synchronous = "quorum", quorum = 1: lost writes
must then be 0 (exit 1 otherwise).

    python checks/failover_drill.py --trials 5 [--fault kill|stop] [--profile default|fast]
        [--sync off|quorum] [--slots on|off]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hacontrol.testing import LocalCluster
from hacontrol.testing.checker import lost_writes, recovery_time
from hacontrol.testing.workload import Writer, create_table, read_ids

# The documented fast profile (docs/configuration.md): shorter interval and window.
PROFILES: dict[str, str] = {
    "default": "",
    "fast": "[timing]\nprobe_interval = 0.1\nprobe_timeout = 0.5\ndetection_window = 0.2\n"
    "failure_threshold = 3\n",
}


# [replication] keys for --sync (docs/synchronous.md) and --slots (docs/slots.md).
SYNC_MODES: dict[str, str] = {
    "off": "",
    "quorum": 'synchronous = "quorum"\nquorum = 1\n',
}
SLOTS: dict[str, str] = {"on": "", "off": "slots = false\n"}


@dataclass
class Trial:
    rto_s: float | None
    declared_s: float | None
    promoted_s: float | None
    lost: int
    acked: int
    new_primary: str | None


def _journal_times(path: Path, since_wall: float) -> tuple[float | None, float | None, str | None]:
    declared = promoted = None
    new_primary = None
    if not path.exists():
        return None, None, None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        ts = float(record.get("ts", 0))
        if ts < since_wall:
            continue
        if record.get("kind") == "failure_confirmed" and declared is None:
            declared = ts - since_wall
        if record.get("kind") == "promote_succeeded" and promoted is None:
            promoted = ts - since_wall
        if record.get("kind") == "failover_completed" and new_primary is None:
            new_primary = record.get("node")
    return declared, promoted, new_primary


def _wait_journal(path: Path, kind: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and f'"kind":"{kind}"' in path.read_text():
            return True
        time.sleep(0.05)
    return False


def run_trial(
    fault: str, profile: str, workdir: Path, sync: str = "off", slots: str = "on"
) -> Trial:
    with LocalCluster(nodes=3, sync=sync == "quorum") as cluster:
        config = workdir / "hacontrol.toml"
        journal = workdir / "journal.jsonl"
        journal.unlink(missing_ok=True)
        config.write_text(
            f'journal = "{journal}"\n' + cluster.config_toml() + PROFILES[profile]
            # The drill measures failover, not the API: no listener to collide with.
            + "\n[api]\nenabled = false\n"
            + "[replication]\n" + SYNC_MODES[sync] + SLOTS[slots]
        )
        log = (workdir / "controller.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "hacontrol", "run", "--config", str(config), "--json-logs"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            if not _wait_journal(journal, "primary_adopted", 30):
                raise RuntimeError(f"controller did not adopt a primary; see {log.name}")
            primary = cluster.node("pg1")
            dsn = cluster.multi_host_dsn()
            create_table(dsn)
            writer = Writer(dsn, interval=0.01, statement_timeout=1.0, max_duration=120)
            writer.start()
            try:
                time.sleep(1.0)
                fault_wall, fault_at = time.time(), time.monotonic()
                if fault == "kill":
                    primary.kill()
                else:
                    primary.freeze()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    acks = writer.acks_since(fault_at)
                    if recovery_time(acks, fault_at, primary.port) is not None:
                        break
                    time.sleep(0.05)
                time.sleep(1.0)
            finally:
                stats = writer.stop()
            rto = recovery_time(stats.acks, fault_at, primary.port)
            # A hung old primary makes each probe round last a probe timeout, so
            # completion is journaled a little after clients already write.
            _wait_journal(journal, "failover_completed", 15)
            declared, promoted, new_primary = _journal_times(journal, fault_wall)
            lost = -1
            if new_primary is not None:
                lost = len(lost_writes(stats.acks, read_ids(cluster.dsn(new_primary))))
            if fault == "stop":
                primary.thaw()
            return Trial(rto, declared, promoted, lost, len(stats.acks), new_primary)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--fault", choices=["kill", "stop"], default="kill")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument("--sync", choices=sorted(SYNC_MODES), default="off")
    parser.add_argument("--slots", choices=sorted(SLOTS), default="on",
                        help="member slots (the default) or none")
    args = parser.parse_args()
    results: list[Trial] = []
    print(f"failover drill: fault={args.fault} profile={args.profile} sync={args.sync} "
          f"slots={args.slots} trials={args.trials}")
    print(f"{'trial':>5} {'rto_s':>7} {'declared_s':>10} {'promoted_s':>10} {'lost':>5} "
          f"{'acked':>6} new_primary")
    with tempfile.TemporaryDirectory(prefix="hacontrol-drill-") as tmp:
        os.chmod(tmp, 0o755)
        for i in range(1, args.trials + 1):
            trial = run_trial(args.fault, args.profile, Path(tmp), args.sync, args.slots)
            results.append(trial)
            print(f"{i:>5} {_fmt(trial.rto_s):>7} {_fmt(trial.declared_s):>10} "
                  f"{_fmt(trial.promoted_s):>10} {trial.lost:>5} {trial.acked:>6} "
                  f"{trial.new_primary or '-'}", flush=True)
    rtos = [t.rto_s for t in results if t.rto_s is not None]
    if rtos:
        print(f"RTO min/median/max: {min(rtos):.3f} / {statistics.median(rtos):.3f} / "
              f"{max(rtos):.3f} s over {len(rtos)} trials; "
              f"lost acknowledged writes: {sum(max(t.lost, 0) for t in results)}")
        if args.sync == "off":
            print("lost writes: asynchronous replication loses what the primary acknowledged "
                  "but no replica had received when it died; this drill reports them, never "
                  "hides them")
        else:
            print("lost writes: quorum mode promises none; any would fail this drill")
    failed = [t for t in results if t.rto_s is None or t.new_primary is None]
    if args.sync == "quorum":
        failed += [t for t in results if t.lost != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
