"""One fault trial: a namespaced cluster, the real controller, two writers, one fault.

Per trial: a fresh 3-node :class:`LocalCluster` with every node in its own
network namespace, ``hacontrol run`` as a subprocess on the host side (so it can
be SIGKILLed), and two writers:

* ``client``: in the client namespace, through the multi-host DSN with
  target_session_attrs=read-write, as an application;
* ``stale``: inside pg1's namespace, connected to pg1 directly, as a client
  that never learns about a failover (a partition of pg1 does not cut it off).

Then one fault of :data:`FAULTS` hits pg1 (pg3 for ``partition-replica`` and
``stray-promote``), the harness waits for the controller to react, heals, and
the checker (:mod:`hacontrol.testing.checker`) reads the acknowledged writes
against the final primary. Every process, namespace and rule is removed in
``finally``.

Faults that act as an operator (``stray-promote``, ``controller-kill-switchover``)
enable the controller's API on a free loopback port with a bearer token (in a
0600 file of the trial's directory) and call the ``hacontrol`` command line, as
an operator would. What a fault must show beyond the failover count (the final
primary, nodes left read-only, lossless modes, an RTO bound) is in its
:class:`Fault`; ``checks/chaos.py`` turns every miss into a violation.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from hacontrol.cli import ApiClient, Unreachable
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
from hacontrol.testing.local_cluster import LocalCluster, free_port
from hacontrol.testing.netem import Impairment, LinkEmulator
from hacontrol.testing.workload import TABLE, Writer, create_table, read_ids

STALE_FIRST_ID = 1_000_000_000
# A stall of the client's writes shorter than this is scheduling noise, not an outage.
OUTAGE_GAP_S = 0.5
ALL_MODES = frozenset({"async", "sync", "quorum"})
# "Writes resume within a few seconds": the bound for faults that promise it. A
# controller restart plus a round of probes take 1-3 s on a 2-core machine; this
# leaves room for scheduling noise and still fails a wait on a timeout (30 s
# promote timeout, 30 s max_standby_streaming_delay, 300 s cool-down).
RTO_FEW_S = 10.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault of the matrix and what the controller should do about it."""

    name: str
    failovers: int  # expected promotions (the least accepted)
    what: str
    # The most promotions accepted (None: exactly ``failovers``).
    max_failovers: int | None = None
    # Modes in which no acknowledged write may be lost.
    lossless: frozenset[str] = frozenset({"quorum"})
    # The node the controller must follow at the end (None: any).
    final_primary: str | None = None
    # A node the controller must fence (journaled Fence that succeeded) and that
    # must not take writes at the end.
    must_fence: str | None = None
    # Exactly one node takes writes at the end, and it is the controller's primary.
    one_writable: bool = False
    # Writes must resume within this many seconds (the RTO column).
    rto_limit: float | None = None
    # "takeover": fault -> first client write on another node than pg1;
    # "resume": the fault's mark (e.g. a kill) -> first client write after it;
    # "outage": end of the client's first stall (faults without a failover).
    rto: str = ""
    # The fault talks to the controller's API (operator commands).
    api: bool = False

    @property
    def most_failovers(self) -> int:
        return self.failovers if self.max_failovers is None else self.max_failovers

    @property
    def rto_kind(self) -> str:
        return self.rto or ("takeover" if self.failovers else "outage")


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
    Fault("stray-promote", 0, "pg3 put in maintenance through the CLI, its replication cut "
          "for 3 s under writes, then pg_promote() on it by hand (an operator's mistake)",
          lossless=ALL_MODES, final_primary="pg1", must_fence="pg3", api=True),
    Fault("replay-conflict", 1, "a repeatable-read report open on pg2 holds back its replay "
          "of an ACCESS EXCLUSIVE lock taken on pg1; then pg1 SIGKILLed (and restarted)",
          lossless=frozenset({"sync", "quorum"}), one_writable=True, rto_limit=RTO_FEW_S),
    # Either outcome is right after the restart: the target promoted and kept, or
    # the fence on pg1 lifted (hence 0 or 1 promotions).
    Fault("controller-kill-switchover", 0, "switchover to pg2 through the CLI (pg2's replay "
          "paused), controller SIGKILLed at the fence step and restarted",
          max_failovers=1, lossless=ALL_MODES, one_writable=True, rto_limit=RTO_FEW_S,
          rto="resume", api=True),
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
    stray_lag: float = 3.0  # stray-promote: pg3 cut off from replication this long
    hold_back: float = 5.0  # how long a replay hold-back may take to show
    operator: float = 30.0  # bound on one `hacontrol` command


@dataclass
class TrialResult:
    """What one trial showed."""

    fault: str
    mode: str
    failovers_expected: int
    failovers_max: int = -1  # -1: same as failovers_expected
    failovers_seen: int = 0
    rto: float | None = None
    acked: int = 0
    lost: int = 0
    lost_by_writer: dict[str, int] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    windows_after_fence: list[Window] = field(default_factory=list)
    fenced_at: float | None = None
    final_primary: str | None = None
    # Nodes that took writes at the end (out of recovery, not read-only); None when
    # the trial did not get that far.
    writable_at_end: list[str] | None = None
    lost_counted: bool = False
    # The controller's exit status when it ended by itself during the trial.
    controller_exit: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # What the fault's mechanics showed (e.g. pg3_promoted, replay_held_bytes).
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.failovers_max < 0:
            self.failovers_max = self.failovers_expected

    @property
    def ok(self) -> bool:
        """No error, an accepted number of failovers, no split brain after the fence.
        (checks/chaos.py's ``violations`` checks the fault's other expectations.)"""
        return (
            self.error is None
            and self.failovers_expected <= self.failovers_seen <= self.failovers_max
            and not self.windows_after_fence
        )


class ControllerProcess:
    """``hacontrol run`` as a subprocess, stopped by PID."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def exit_code(self) -> int | None:
        """The exit status when the started controller has ended by itself."""
        proc = self.proc
        return proc.poll() if proc is not None else None

    @property
    def pid(self) -> int | None:
        """The running controller's PID (None when it is not running)."""
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

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


class OperatorCommand:
    """One ``hacontrol`` command (``--config`` added) run in the background, as an
    operator would from a shell; its output goes to ``log`` (appended) and it is
    stopped by PID."""

    def __init__(self, config: Path, args: tuple[str, ...], log: Path) -> None:
        self.argv = [sys.executable, "-m", "hacontrol", args[0], "--config", str(config),
                     *args[1:]]
        self.text = "hacontrol " + " ".join(args)
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self._offset = 0

    def start(self) -> None:
        with self.log.open("a") as out:
            out.write(f"$ {self.text}\n")
            out.flush()
            self._offset = out.tell()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, text=True)

    def failed(self) -> str | None:
        """Why the command failed, once it exited non-zero (None while it runs or
        when it succeeded)."""
        proc = self.proc
        if proc is None or proc.poll() in (None, 0):
            return None
        return f"'{self.text}' exited {proc.returncode}: {self.output()}"

    def output(self) -> str:
        try:
            with self.log.open() as f:
                f.seek(self._offset)
                return " ".join(f.read().split())
        except OSError:
            return ""

    def finish(self, timeout: float) -> str:
        """Wait (bounded) for the command; its output. RuntimeError when it exits
        non-zero or does not end within ``timeout``."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"'{self.text}' did not finish within {timeout:g} s") from None
        why = self.failed()
        if why is not None:
            raise RuntimeError(why)
        return self.output()

    def stop(self) -> None:
        """SIGKILL the command by PID if it still runs."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
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
        self.result = TrialResult(fault, mode, self.fault.failovers,
                                  self.fault.most_failovers)
        self._clock_offset = time.time() - time.monotonic()
        self.config_path = workdir / "hacontrol.toml"
        self.api: ApiClient | None = None
        # When the RTO clock starts for faults whose RTO is not measured from the
        # start of the fault (set by _inject: a kill in the middle of the fault).
        self.rto_from: float | None = None

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
        """Nodes promoted since ``since``: promote_succeeded records, a completed
        switchover, plus a node a restarted controller took over as the new primary
        because its predecessor died between pg_promote and the journal record (it
        completes the failover it resumed, or adopts the node)."""
        promoted: list[str] = []
        for r in self.records():
            if self._mono(r) < since:
                continue
            node, kind = str(r.get("node")), r.get("kind")
            taken_over = kind in ("primary_adopted", "failover_completed") and node != old
            switched = kind == "switchover_completed" and node != old
            if kind == "promote_succeeded" or switched or (taken_over and node not in promoted):
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

    # -- operator side: the controller's API and command line ----------------------

    def _wait_api(self, timeout: float = 15.0) -> None:
        api = self.api
        assert api is not None
        deadline = time.monotonic() + timeout
        while not api.reachable():
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the controller's API at {api.address} did not answer "
                                   f"within {timeout:g} s")
            time.sleep(0.1)

    def _operator(self, *args: str) -> str:
        """Run ``hacontrol ARGS --config <the trial's>`` (bounded) as an operator
        would; its output. RuntimeError when it exits non-zero."""
        command = OperatorCommand(self.config_path, args, self.workdir / "operator.log")
        command.start()
        try:
            return command.finish(self.t.operator)
        finally:
            command.stop()

    def _controller_primary(self) -> str | None:
        """The primary the running controller reports (GET /status), if it answers."""
        if self.api is None:
            return None
        try:
            code, snap = self.api.get("/status")
        except Unreachable:
            return None
        if code != 200 or not isinstance(snap, dict):
            return None
        primary = snap.get("primary")
        return str(primary) if primary else None

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
            stack.callback(self._keep_server_logs, cluster)  # runs before the cluster goes
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
            if self.api is not None:
                self._wait_api()
            fault_at = time.monotonic()
            fault_end = self._inject(cluster, ctl, fault_at, stack, client)
            time.sleep(self.t.settle)
            client.stop()
            stale.stop()
            self.result.controller_exit = ctl.exit_code
            if ctl.exit_code is not None:
                self.result.notes.append(f"the controller exited with status {ctl.exit_code} "
                                         f"during the trial: {_last_failure(ctl.log)}")
            self._analyse(cluster, [*client.stats.acks, *stale.stats.acks],
                          list(client.stats.acks), fault_at, fault_end)

    def _keep_server_logs(self, cluster: LocalCluster) -> None:
        """Copy every server's log next to the journal and the controller's log (the
        cluster's directory goes with it)."""
        for node in cluster.nodes:
            with contextlib.suppress(OSError):
                shutil.copyfile(node.log_path, self.workdir / f"{node.name}.log")

    def _controller(self, cluster: LocalCluster) -> ControllerProcess:
        config = self.config_path
        tables: dict[str, dict[str, Any]] = {"api": {"enabled": False}, **self.mode.controller}
        if self.fault.api:
            # Operator commands need the API and a token: a loopback port nobody
            # uses, and a token file only root can read.
            token = self.workdir / "api.token"
            token.touch(mode=0o600)
            token.chmod(0o600)
            token.write_text(secrets.token_hex(24) + "\n")
            listen = f"127.0.0.1:{free_port()}"
            tables["api"] = {"enabled": True, "listen": listen, "token_file": str(token)}
            self.api = ApiClient(listen)
        text = f"journal = {_toml(str(self.journal_path))}\n" + cluster.config_toml()
        for table, keys in tables.items():
            text += f"\n[{table}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
        config.write_text(text)
        return ControllerProcess(config, self.workdir / "controller.log")

    def _inject(self, cluster: LocalCluster, ctl: ControllerProcess, fault_at: float,
                stack: contextlib.ExitStack, client: Writer) -> float:
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
            # Killed with the promotion in flight: the restarted controller resumes the
            # failover (re-drives it to the same candidate, or completes it).
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
        elif name == "stray-promote":
            self._stray_promote(cluster, fault_at)
        elif name == "replay-conflict":
            self._replay_conflict(cluster, stack)
        elif name == "controller-kill-switchover":
            self._controller_kill_switchover(cluster, ctl, stack, client)
        else:
            raise ValueError(f"unknown fault {name!r}")
        return time.monotonic()

    # -- the faults that need more than a few lines --------------------------------

    def _stray_promote(self, cluster: LocalCluster, fault_at: float) -> None:
        """pg3 in maintenance (CLI), its WAL receiver stopped for a while under
        writes, then pg_promote() on it behind the controller's back."""
        r = self.result
        pg3 = cluster.node("pg3")
        said = self._operator("maintenance", "pg3", "on")
        if self._wait_record(lambda rec: rec.get("kind") == "maintenance_on"
                             and rec.get("node") == "pg3", 5.0, fault_at) is None:
            raise RuntimeError(f"pg3 not journaled in maintenance after: {said}")
        pg3.query("ALTER SYSTEM SET primary_conninfo = ''")
        pg3.query("SELECT pg_reload_conf()")
        _wait_until(lambda: not pg3.query("SELECT 1 FROM pg_stat_wal_receiver"),
                    self.t.hold_back, "pg3's WAL receiver did not stop")
        time.sleep(self.t.stray_lag)  # the writers go on; pg3 falls behind
        receiving = bool(pg3.query("SELECT 1 FROM pg_stat_wal_receiver"))
        behind = cluster.current_lsn("pg1") - (pg3.replay_lsn() or 0)
        r.facts.update(pg3_behind_bytes=behind, pg3_receiver_back=receiving)
        promoted_at = time.monotonic()
        # Without waiting in the call: the controller may fence pg3 (ending every
        # session on it) the moment it is out of recovery, this one included.
        [(done,)] = pg3.query("SELECT pg_promote(false)")
        if not done:
            raise RuntimeError("pg_promote() on pg3 refused to signal the promotion")
        found: list[str] = []

        def promoted() -> bool:
            [(recovery, timeline)] = pg3.query(
                "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN"
                " substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END")
            if not recovery:
                found.append(str(timeline))
            return not recovery

        _wait_until(promoted, self.t.react, "pg_promote() did not promote pg3")
        r.facts["pg3_promoted"] = True
        r.facts["pg3_timeline"] = int(found[0], 16)
        r.notes.append(f"pg3 in maintenance, promoted by hand on timeline "
                       f"{r.facts['pg3_timeline']} {behind} bytes behind pg1"
                       + (" (its WAL receiver had come back)" if receiving else ""))
        self._wait_fence("pg3", promoted_at)
        if r.fenced_at is not None:
            r.notes.append(f"pg3 fenced {r.fenced_at - promoted_at:.2f} s after its promotion")
        time.sleep(self.t.hold / 2)  # long enough for a wrong adoption or failover to show

    def _replay_conflict(self, cluster: LocalCluster, stack: contextlib.ExitStack) -> None:
        """A report on pg2 holds back pg2's replay of a lock pg1 takes; then pg1 dies."""
        r = self.result
        pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
        report = psycopg.connect(pg2.dsn, autocommit=True, connect_timeout=5,
                                 application_name="chaos-report")
        stack.callback(_close, report)
        report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        [(rows,)] = report.execute(f"SELECT count(*) FROM {TABLE}").fetchall()
        with psycopg.connect(pg1.dsn, autocommit=True, connect_timeout=5) as conn:
            with conn.transaction():
                conn.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
            [(lock_lsn,)] = conn.execute("SELECT pg_current_wal_lsn()::text").fetchall()
        target = _lsn(lock_lsn)
        state: dict[str, Any] = {}

        def held() -> bool:
            [(rx, rp, wait)] = pg2.query(
                "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,"
                " (SELECT wait_event FROM pg_stat_activity WHERE backend_type = 'startup')")
            state.update(rx=_lsn(rx), rp=_lsn(rp), wait=wait)
            return bool(state["rx"] >= target > state["rp"])

        _wait_until(held, self.t.hold_back, "pg2's replay was not held back", lambda: state)
        time.sleep(0.5)  # the writers go on: pg2 receives more it cannot replay
        held()
        if not state["rp"] < target:
            raise RuntimeError(f"pg2 replayed past the lock before the kill: {state}")
        gap = state["rx"] - state["rp"]
        [(delay,)] = pg2.query("SELECT current_setting('max_standby_streaming_delay')")
        r.facts.update(replay_held_bytes=gap, startup_wait=state["wait"],
                       max_standby_streaming_delay=delay, report_rows=rows)
        r.notes.append(f"pg2 replay held back {gap} bytes behind what it received (startup "
                       f"waits on {state['wait']}; max_standby_streaming_delay {delay})")
        self.rto_from = time.monotonic()
        pg1.kill()
        if self._wait_failover(self.rto_from):
            r.notes.append(f"{', '.join(self.promotions(self.rto_from))} promoted after the kill")
            pg1.start()
            self._wait_fence("pg1", self.rto_from)
        r.facts["report_open_at_end"] = _alive(report)
        _close(report)

    def _controller_kill_switchover(self, cluster: LocalCluster, ctl: ControllerProcess,
                                    stack: contextlib.ExitStack, client: Writer) -> None:
        """Switchover to pg2 (replay paused there so it cannot catch up), the
        controller SIGKILLed at its fence step, restarted; writes must resume."""
        r = self.result
        pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
        pg2.query("SELECT pg_wal_replay_pause()")
        _wait_until(lambda: pg2.query("SELECT pg_get_wal_replay_pause_state()")[0][0] != (
            "not paused"), self.t.hold_back, "pg2's replay did not pause")
        asked = time.monotonic()
        # In the background, as an operator's shell would: the kill must not wait for
        # the command to exit.
        command = OperatorCommand(self.config_path, ("switchover", "--to", "pg2", "--no-wait"),
                                  self.workdir / "operator.log")
        stack.callback(command.stop)
        command.start()
        fence: dict[str, Any] | None = None
        deadline = asked + self.t.react
        while fence is None and time.monotonic() < deadline:
            fence = next((rec for rec in self.records() if self._mono(rec) >= asked
                          and rec.get("kind") == "switchover_step"
                          and rec.get("step") == "fence"), None)
            why = command.failed()
            if fence is None and why is not None:
                raise RuntimeError(f"the switchover was not accepted: {why}")
            if fence is None:
                time.sleep(0.02)
        if fence is None:
            raise RuntimeError(f"the switchover never journaled its fence step "
                               f"({command.output() or 'no answer'})")
        pid = ctl.pid
        ctl.stop(signal.SIGKILL)
        killed_at = self.rto_from = time.monotonic()
        later = [rec.get("step") or rec.get("kind") for rec in self.records()
                 if self._mono(rec) >= asked and (
                     rec.get("kind") in ("switchover_finished", "switchover_completed")
                     or rec.get("step") in ("promote", "rollback_start"))]
        [(pg2_recovery, pause)] = pg2.query(
            "SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state()")
        [(pg1_ro,)] = pg1.query("SELECT current_setting('default_transaction_read_only')")
        r.facts.update(killed_after_fence_s=round(killed_at - self._mono(fence), 3),
                       controller_pid=pid, pg2_in_recovery_at_kill=pg2_recovery,
                       pg1_read_only_at_kill=pg1_ro, steps_after_fence=later,
                       fence_ok=fence.get("ok"))
        if later or not pg2_recovery:
            raise RuntimeError(f"the controller was killed too late: {later or 'pg2 promoted'}")
        r.notes.append(f"controller (pid {pid}) SIGKILLed {killed_at - self._mono(fence):.2f} s "
                       f"after the fence step (fence ok={fence.get('ok')}, pg1 "
                       f"read-only={pg1_ro}, pg2 replay {pause})")
        ctl.start()  # same configuration, same journal
        pg2.query("SELECT pg_wal_replay_resume()")  # the hold-back is lifted again
        with contextlib.suppress(RuntimeError):  # answered before the kill; else exit 3
            command.finish(5.0)
        r.facts["switchover_command"] = command.output()
        deadline = killed_at + self.t.react
        while (not client.acks_since(killed_at) and time.monotonic() < deadline
               and ctl.exit_code is None):
            time.sleep(0.05)
        acks = client.acks_since(killed_at)
        if acks:
            r.notes.append(f"writes resumed on {acks[0].server} "
                           f"{acks[0].at - killed_at:.2f} s after the kill")
        else:
            r.notes.append(f"no write acknowledged in the {time.monotonic() - killed_at:.1f} s "
                           "after the kill")
        time.sleep(self.t.hold / 2)  # a late second primary would show in the writes

    def _analyse(self, cluster: LocalCluster, acks: list[Ack], client_acks: list[Ack],
                 fault_at: float, fault_end: float) -> None:
        r = self.result
        records = self.records()
        r.failovers_seen = len(self.promotions(fault_at))
        primaries = [rec["node"] for rec in records if rec.get("kind") in (
            "primary_adopted", "failover_completed", "switchover_completed")]
        r.final_primary = primaries[-1] if primaries else None
        live = self._controller_primary()
        if live is not None and live != r.final_primary:
            r.notes.append(f"the controller reports {live} as the primary, its journal last "
                           f"named {r.final_primary}")
            r.final_primary = live
        r.writable_at_end = writable_nodes(cluster)
        r.acked = len(acks)
        present: set[int] | None = None
        if r.final_primary is not None:
            try:
                present = read_ids(cluster.dsn(r.final_primary))
            except psycopg.Error as exc:
                r.notes.append(f"final primary {r.final_primary} unreadable: "
                               f"{str(exc).strip().splitlines()[0]}")
        if present is not None:
            r.lost_counted = True
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
        since = self.rto_from if self.rto_from is not None else fault_at
        kind = self.fault.rto_kind
        if kind == "takeover":
            r.rto = takeover_time(client_acks, since, "pg1")
        elif kind == "resume":
            after = sorted(a.at for a in client_acks if a.at >= since)
            r.rto = after[0] - since if after else None
        else:
            r.rto = outage_time(client_acks, since, fault_end, OUTAGE_GAP_S)


def writable_nodes(cluster: LocalCluster) -> list[str]:
    """Nodes that take writes now: out of recovery and not read-only for a new session
    (a fenced node is read-only). A node that does not answer takes none."""
    found = []
    for node in cluster.nodes:
        if node.frozen or not node.is_running():
            continue
        try:
            [(recovery, read_only)] = node.query(
                "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
        except psycopg.Error:
            continue
        if not recovery and read_only != "on":
            found.append(node.name)
    return found


def _wait_until(check: Callable[[], bool], timeout: float, what: str,
                state: Callable[[], object] | None = None) -> None:
    """Poll ``check`` (psycopg errors count as not yet) until it holds; RuntimeError
    with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except psycopg.Error:
            pass
        if time.monotonic() >= deadline:
            detail = f" ({state()})" if state is not None else ""
            raise RuntimeError(f"{what} within {timeout:g} s{detail}")
        time.sleep(0.05)


def _lsn(text: object) -> int:
    """An LSN as a number (0 for NULL)."""
    if not text:
        return 0
    hi, lo = str(text).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s session still answers."""
    if conn.closed:
        return False
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _last_failure(log: Path) -> str:
    """The last error the controller logged (its JSON log's controller_failed), if any."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    records = []
    for line in lines[-200:]:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    failed = [r for r in records if r.get("event") == "controller_failed"] or [
        r for r in records if r.get("level") == "error"]
    if not failed:
        return "no error logged"
    return f"{failed[-1].get('event')}: {failed[-1].get('error') or failed[-1].get('message')}"


def _close(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
