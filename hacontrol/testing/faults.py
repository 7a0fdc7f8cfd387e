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
import secrets
import shutil
import time
from typing import Any

import psycopg

from hacontrol.cli.client import ApiClient
from hacontrol.core.events import EventKind
from hacontrol.testing.fault_catalog import (
    ALL_MODES,
    FAULTS,
    MODES,
    OUTAGE_GAP_S,
    RTO_FEW_S,
    STALE_FIRST_ID,
    Fault,
    Mode,
    Timings,
    TrialResult,
    mode_unavailable,
)
from hacontrol.testing.fault_controllers import (
    CONTROLLER_FAULTS,
    ControllerPair,
    inject_controller_fault,
    standby_following,
    wait_leading,
)
from hacontrol.testing.fault_watch import (
    OperatorCommand,
    TrialWatch,
    close_quietly,
    last_failure,
    lsn_number,
    session_alive,
    toml_value,
    wait_until,
    writable_nodes,
)
from hacontrol.testing.local_cluster import LocalCluster
from hacontrol.testing.local_node import free_port
from hacontrol.testing.netem import LinkEmulator
from hacontrol.testing.processes import ControllerProcess
from hacontrol.testing.workload import TABLE, Writer, create_table

# Names importable from here as before the catalogue and the watching moved out
# (re-exports: checks/chaos.py and tests/faults import them from this module).
__all__ = [
    "ALL_MODES", "FAULTS", "MODES", "OUTAGE_GAP_S", "RTO_FEW_S", "STALE_FIRST_ID", "Fault",
    "Mode", "OperatorCommand", "Timings", "Trial", "TrialResult", "mode_unavailable",
    "writable_nodes",
]


class Trial(TrialWatch):
    """One fault, one mode, one fresh cluster. :meth:`run` never raises for a
    failed trial: the error is in the result."""

    # etcd and the second controller of the controller faults (None: one controller).
    pair: ControllerPair | None = None

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
            if self.fault.controllers > 1:
                self.pair = ControllerPair(self.workdir, stack)
                self.extra_journals = [self.pair.journal_b]
            ctl = self._controller(cluster)
            stack.callback(ctl.stop)
            ctl.start()
            if self.pair is not None:
                wait_leading(self)
                self.pair.start_standby(self.config_path.read_text(), self.journal_path)
            adopted = self._wait_record(lambda r: r.get("kind") == EventKind.PRIMARY_ADOPTED, 30, 0)
            if adopted is None:
                raise RuntimeError(f"the controller adopted no primary; see {ctl.stdout_path}")
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
            if self.pair is not None:
                standby_following(self.pair)
            fault_at = time.monotonic()
            fault_end = self._inject(cluster, ctl, fault_at, stack, client)
            time.sleep(self.t.settle)
            client.stop()
            stale.stop()
            self.result.controller_exit = ctl.returncode()
            if ctl.returncode() is not None:
                self.result.notes.append(f"the controller exited with status {ctl.returncode()} "
                                         f"during the trial: {last_failure(ctl.stdout_path)}")
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
        if self.pair is not None:
            tables["dcs"] = self.pair.dcs_table("ctl-a")
        text = f"journal = {toml_value(str(self.journal_path))}\n" + cluster.config_toml()
        for table, keys in tables.items():
            text += f"\n[{table}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
        config.write_text(text)
        return ControllerProcess(config, self.workdir / "controller.log", stop_timeout=15)

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
            ctl.kill()
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
        elif name in CONTROLLER_FAULTS:
            assert self.pair is not None
            inject_controller_fault(self, self.pair, cluster, ctl, fault_at, stack)
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
        if self._wait_record(lambda rec: rec.get("kind") == EventKind.MAINTENANCE_ON
                             and rec.get("node") == "pg3", 5.0, fault_at) is None:
            raise RuntimeError(f"pg3 not journaled in maintenance after: {said}")
        pg3.query("ALTER SYSTEM SET primary_conninfo = ''")
        pg3.query("SELECT pg_reload_conf()")
        wait_until(lambda: not pg3.query("SELECT 1 FROM pg_stat_wal_receiver"),
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

        wait_until(promoted, self.t.react, "pg_promote() did not promote pg3")
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
        stack.callback(close_quietly, report)
        report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        [(rows,)] = report.execute(f"SELECT count(*) FROM {TABLE}").fetchall()
        with psycopg.connect(pg1.dsn, autocommit=True, connect_timeout=5) as conn:
            with conn.transaction():
                conn.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
            [(lock_lsn,)] = conn.execute("SELECT pg_current_wal_lsn()::text").fetchall()
        target = lsn_number(lock_lsn)
        state: dict[str, Any] = {}

        def held() -> bool:
            [(rx, rp, wait)] = pg2.query(
                "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,"
                " (SELECT wait_event FROM pg_stat_activity WHERE backend_type = 'startup')")
            state.update(rx=lsn_number(rx), rp=lsn_number(rp), wait=wait)
            return bool(state["rx"] >= target > state["rp"])

        wait_until(held, self.t.hold_back, "pg2's replay was not held back", lambda: state)
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
        r.facts["report_open_at_end"] = session_alive(report)
        close_quietly(report)

    def _controller_kill_switchover(self, cluster: LocalCluster, ctl: ControllerProcess,
                                    stack: contextlib.ExitStack, client: Writer) -> None:
        """Switchover to pg2 (replay paused there so it cannot catch up), the
        controller SIGKILLed at its fence step, restarted; writes must resume."""
        r = self.result
        pg1, pg2 = cluster.node("pg1"), cluster.node("pg2")
        pg2.query("SELECT pg_wal_replay_pause()")
        wait_until(lambda: pg2.query("SELECT pg_get_wal_replay_pause_state()")[0][0] != (
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
        ctl.kill()
        killed_at = self.rto_from = time.monotonic()
        later = [rec.get("step") or rec.get("kind") for rec in self.records()
                 if self._mono(rec) >= asked and (
                     rec.get("kind") in ("switchover_finished", EventKind.SWITCHOVER_COMPLETED)
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
               and ctl.returncode() is None):
            time.sleep(0.05)
        acks = client.acks_since(killed_at)
        if acks:
            r.notes.append(f"writes resumed on {acks[0].server} "
                           f"{acks[0].at - killed_at:.2f} s after the kill")
        else:
            r.notes.append(f"no write acknowledged in the {time.monotonic() - killed_at:.1f} s "
                           "after the kill")
        time.sleep(self.t.hold / 2)  # a late second primary would show in the writes
