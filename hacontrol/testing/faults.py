"""One fault trial: a namespaced cluster, the real controller, two writers, one fault.

Per trial: a fresh 3-node :class:`LocalCluster` with every node in its own
network namespace, ``hacontrol run`` as a subprocess on the host side (so it can
be SIGKILLed), and two writers:

* ``client``: in the client namespace, through the multi-host DSN with
  target_session_attrs=read-write, as an application;
* ``stale``: inside pg1's namespace, connected to pg1 directly, as a client
  that never learns about a failover (a partition of pg1 does not cut it off).

Then one fault of :data:`FAULTS` hits pg1 (pg3 for ``partition-replica``),
the harness waits for the controller to react, heals, and the checker
(:mod:`hacontrol.testing.checker`) reads the acknowledged writes against the
final primary. Every process, namespace and rule is removed in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from hacontrol.config import ConfigError, config_from_mapping
from hacontrol.journal import Journal
from hacontrol.testing.checker import (
    Ack,
    Window,
    brain_windows,
    lost_writes,
    outage_time,
    takeover_time,
    windows_after,
)
from hacontrol.testing.local_cluster import LocalCluster
from hacontrol.testing.netem import Impairment, LinkEmulator
from hacontrol.testing.workload import Writer, create_table, read_ids

STALE_FIRST_ID = 1_000_000_000
# A stall of the client's writes shorter than this is scheduling noise, not an outage.
OUTAGE_GAP_S = 0.5


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault of the matrix and what the controller should do about it."""

    name: str
    failovers: int  # expected promotions
    what: str


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("kill", 1, "SIGKILL of the primary and all its processes; restarted after the "
          "failover (returns as a stale primary)"),
    Fault("hang-short", 0, "SIGSTOP of the primary for less than the detection window"),
    Fault("hang-long", 1, "SIGSTOP of the primary until well after the failover, then SIGCONT"),
    Fault("partition-controller", 0, "primary cut off from the controller only"),
    Fault("partition-primary", 1, "primary cut off from everyone (its stale client keeps "
          "writing to it), healed after the failover"),
    Fault("partition-replica", 0, "one replica cut off from everyone"),
    Fault("netem", 0, "latency, jitter and loss on the controller's links to every node"),
    Fault("controller-kill", 1, "primary SIGKILLed, controller SIGKILLed as soon as it "
          "journals the start of the promotion, then restarted"),
)}


@dataclass(frozen=True, slots=True)
class Mode:
    """Replication mode: server-side synchronous replication and the controller's
    configuration tables for it (``{"replication": {...}}``)."""

    name: str
    server_sync: bool
    controller: dict[str, dict[str, Any]] = field(default_factory=dict)


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("async", False),
    # synchronous_standby_names = 'ANY 1 (pg1, pg2, pg3)' on every node, set by
    # the harness; the controller does not know about it.
    Mode("sync", True),
    # The controller manages synchronous_standby_names = 'ANY 1 (...)' and fails
    # over only to a replica that holds every acknowledged commit.
    Mode("quorum", False, {"replication": {"synchronous": "quorum", "quorum": 1}}),
)}


def mode_unavailable(mode: Mode) -> str | None:
    """Why the controller cannot run ``mode`` yet, or None when it can."""
    if not mode.controller:
        return None
    probe = {"nodes": [{"name": "a", "dsn": "host=127.0.0.1"},
                       {"name": "b", "dsn": "host=127.0.0.2"}], **mode.controller}
    try:
        config_from_mapping(probe)
    except ConfigError as exc:
        return f"the controller does not accept {mode.controller}: {exc.problems[0]}"
    return None


@dataclass(frozen=True, slots=True)
class Timings:
    """How long each phase lasts (seconds)."""

    warmup: float = 1.5
    hang_short: float = 1.0
    hold: float = 10.0  # partitions without a failover, and the minimum hold with one
    netem: float = 60.0
    impairment: Impairment = field(default_factory=lambda: Impairment(0.3, 0.2, 0.10))
    netem_direction: str = "in"
    react: float = 30.0  # how long the controller may take to fail over or fence
    settle: float = 2.0


@dataclass
class TrialResult:
    """What one trial showed."""

    fault: str
    mode: str
    failovers_expected: int
    failovers_seen: int = 0
    rto: float | None = None
    acked: int = 0
    lost: int = 0
    lost_by_writer: dict[str, int] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    windows_after_fence: list[Window] = field(default_factory=list)
    fenced_at: float | None = None
    final_primary: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """No error, the expected number of failovers, no split brain after the fence."""
        return (
            self.error is None
            and self.failovers_seen == self.failovers_expected
            and not self.windows_after_fence
        )


class ControllerProcess:
    """``hacontrol run`` as a subprocess, stopped by PID."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hacontrol", "run", "--config", str(self.config),
                 "--json-logs"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


class Trial:
    """One fault, one mode, one fresh cluster. :meth:`run` never raises for a
    failed trial: the error is in the result."""

    def __init__(self, fault: str, mode: str, workdir: Path,
                 timings: Timings | None = None) -> None:
        self.fault = FAULTS[fault]
        self.mode = MODES[mode]
        self.workdir = workdir
        self.t = timings or Timings()
        self.journal_path = workdir / "journal.jsonl"
        self.result = TrialResult(fault, mode, self.fault.failovers)
        self._clock_offset = time.time() - time.monotonic()

    # -- journal -------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        return Journal(self.journal_path).read() if self.journal_path.exists() else []

    def _mono(self, record: dict[str, Any]) -> float:
        return float(record.get("ts", 0.0)) - self._clock_offset

    def _wait_record(self, match: Callable[[dict[str, Any]], bool], timeout: float,
                     since: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.records():
                if self._mono(r) >= since and match(r):
                    return r
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def promotions(self, since: float, old: str = "pg1") -> list[str]:
        """Nodes promoted since ``since``: promote_succeeded records, plus a node a
        restarted controller adopted as the new primary because its predecessor
        died between pg_promote and the journal record."""
        promoted: list[str] = []
        for r in self.records():
            if self._mono(r) < since:
                continue
            node, kind = str(r.get("node")), r.get("kind")
            adopted = kind == "primary_adopted" and node != old and node not in promoted
            if kind == "promote_succeeded" or adopted:
                promoted.append(node)
        return promoted

    def _wait_failover(self, since: float) -> bool:
        deadline = time.monotonic() + self.t.react
        found = False
        while not found and time.monotonic() < deadline:
            found = bool(self.promotions(since)) and any(
                self._mono(r) >= since and r.get("kind") in ("failover_completed",
                                                               "primary_adopted")
                for r in self.records())
            if not found:
                time.sleep(0.05)
        if not found:
            self.result.notes.append(f"no failover within {self.t.react:g} s")
        return found

    def _wait_fence(self, node: str, since: float) -> None:
        found = self._wait_record(
            lambda r: r.get("kind") == "action_finished" and r.get("action") == "Fence"
            and r.get("node") == node and r.get("status") == "succeeded",
            self.t.react, since)
        if found is None:
            self.result.notes.append(f"{node} not fenced within {self.t.react:g} s")
        else:
            self.result.fenced_at = self._mono(found)

    # -- the run -------------------------------------------------------------------

    def run(self) -> TrialResult:
        started = time.monotonic()
        try:
            self._run()
        except Exception as exc:  # a broken trial is a result, not a crash of the suite
            self.result.error = f"{type(exc).__name__}: {exc}"
        self.result.seconds = time.monotonic() - started
        return self.result

    def _run(self) -> None:
        self.journal_path.unlink(missing_ok=True)
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(
                LocalCluster(nodes=3, sync=self.mode.server_sync, netns=True))
            ctl = self._controller(cluster)
            stack.callback(ctl.stop)
            ctl.start()
            if self._wait_record(lambda r: r.get("kind") == "primary_adopted", 30, 0) is None:
                raise RuntimeError(f"the controller adopted no primary; see {ctl.log}")
            create_table(cluster.dsn("pg1"))
            cluster.wait_replayed(cluster.current_lsn("pg1"), timeout=10)
            cli, pg1 = cluster.client_netns, cluster.node("pg1")
            assert cli is not None and pg1.netns is not None
            client = Writer(cluster.multi_host_dsn(), netns=cli.name, name="client",
                            max_duration=600)
            stale = Writer(pg1.dsn, netns=pg1.netns.name, name="stale",
                           first_id=STALE_FIRST_ID, max_duration=600)
            for w in (client, stale):
                stack.callback(w.stop)
                w.start()
            time.sleep(self.t.warmup)
            if not client.acks_since(0) or not stale.acks_since(0):
                raise RuntimeError(f"writers not writing before the fault: "
                                   f"{client.stats.last_error} / {stale.stats.last_error}")
            fault_at = time.monotonic()
            fault_end = self._inject(cluster, ctl, fault_at)
            time.sleep(self.t.settle)
            client.stop()
            stale.stop()
            self._analyse(cluster, [*client.stats.acks, *stale.stats.acks],
                          list(client.stats.acks), fault_at, fault_end)

    def _controller(self, cluster: LocalCluster) -> ControllerProcess:
        config = self.workdir / "hacontrol.toml"
        tables = {"api": {"enabled": False}, **self.mode.controller}
        text = f"journal = {_toml(str(self.journal_path))}\n" + cluster.config_toml()
        for table, keys in tables.items():
            text += f"\n[{table}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
        config.write_text(text)
        return ControllerProcess(config, self.workdir / "controller.log")

    def _inject(self, cluster: LocalCluster, ctl: ControllerProcess, fault_at: float) -> float:
        """Carry out the fault; returns when it ended (monotonic)."""
        pg1 = cluster.node("pg1")
        assert pg1.netns is not None
        name = self.fault.name
        if name == "kill":
            pg1.kill()
            if self._wait_failover(fault_at):
                pg1.start()
                self._wait_fence("pg1", fault_at)
        elif name == "hang-short":
            pg1.freeze()
            try:
                time.sleep(self.t.hang_short)
            finally:
                pg1.thaw()
            end = time.monotonic()
            time.sleep(self.t.hold / 2)  # long enough for a wrong decision to show
            return end
        elif name == "hang-long":
            pg1.freeze()
            try:
                self._wait_failover(fault_at)
                time.sleep(1.0)
            finally:
                pg1.thaw()
            self._wait_fence("pg1", fault_at)
        elif name == "partition-controller":
            pg1.netns.partition([cluster.host_address])
            try:
                time.sleep(self.t.hold)
            finally:
                pg1.netns.heal()
        elif name == "partition-primary":
            pg1.netns.partition()
            try:
                self._wait_failover(fault_at)
                time.sleep(max(0.0, fault_at + self.t.hold - time.monotonic()))
            finally:
                pg1.netns.heal()
            self._wait_fence("pg1", fault_at)
        elif name == "partition-replica":
            pg3 = cluster.node("pg3")
            assert pg3.netns is not None
            pg3.netns.partition()
            try:
                time.sleep(self.t.hold)
            finally:
                pg3.netns.heal()
        elif name == "netem":
            with LinkEmulator() as emulator:
                for node in cluster.nodes:
                    assert node.netns is not None
                    emulator.apply(node.netns, cluster.host_address, self.t.impairment,
                                   self.t.netem_direction)
                time.sleep(self.t.netem)
                seen = sum(s for s, _ in emulator.stats().values())
                dropped = sum(d for _, d in emulator.stats().values())
            self.result.notes.append(
                f"{self.t.impairment} on {seen} packets ({dropped} dropped)")
        elif name == "controller-kill":
            pg1.kill()
            # Killed with the promotion in flight. (Killed between failover_started
            # and the Promote action, a restarted controller sees an unresolved
            # failover and holds off until the cool-down ends: see docs/reliability.md.)
            started = self._wait_record(
                lambda r: r.get("kind") == "action_started" and r.get("action") == "Promote",
                self.t.react, fault_at)
            ctl.stop(signal.SIGKILL)
            if started is None:
                self.result.notes.append("the promotion never started")
            ctl.start()
            if self._wait_failover(fault_at):
                pg1.start()
                self._wait_fence("pg1", fault_at)
        else:
            raise ValueError(f"unknown fault {name!r}")
        return time.monotonic()

    def _analyse(self, cluster: LocalCluster, acks: list[Ack], client_acks: list[Ack],
                 fault_at: float, fault_end: float) -> None:
        r = self.result
        records = self.records()
        r.failovers_seen = len(self.promotions(fault_at))
        primaries = [rec["node"] for rec in records
                     if rec.get("kind") in ("primary_adopted", "failover_completed")]
        r.final_primary = primaries[-1] if primaries else None
        r.acked = len(acks)
        present: set[int] | None = None
        if r.final_primary is not None:
            try:
                present = read_ids(cluster.dsn(r.final_primary))
            except psycopg.Error as exc:
                r.notes.append(f"final primary {r.final_primary} unreadable: "
                               f"{str(exc).strip().splitlines()[0]}")
        if present is not None:
            missing = set(lost_writes(acks, present))
            r.lost = len(missing)
            for ack in acks:
                if ack.id in missing:
                    r.lost_by_writer[ack.writer] = r.lost_by_writer.get(ack.writer, 0) + 1
        else:
            r.notes.append("no readable primary at the end: lost writes not counted")
        r.windows = brain_windows(acks)
        r.windows_after_fence = (
            windows_after(r.windows, r.fenced_at) if r.fenced_at is not None else r.windows
        )
        if self.fault.failovers:
            r.rto = takeover_time(client_acks, fault_at, "pg1")
        else:
            r.rto = outage_time(client_acks, fault_at, fault_end, OUTAGE_GAP_S)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
