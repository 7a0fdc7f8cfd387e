"""Watching a fault trial: the journal, the operator's side (the controller's API
and command line), the analysis of the acknowledged writes, and small helpers the
fault injections share."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from hacontrol.cli.client import ApiClient, Unreachable
from hacontrol.core.events import EventKind
from hacontrol.io.journal import Journal
from hacontrol.testing.checker import (
    Ack,
    brain_windows,
    lost_writes,
    outage_time,
    takeover_time,
    windows_after,
)
from hacontrol.testing.fault_catalog import (
    FAULTS,
    MODES,
    OUTAGE_GAP_S,
    Timings,
    TrialResult,
)
from hacontrol.testing.local_cluster import LocalCluster
from hacontrol.testing.workload import read_ids

# Journal kinds that make a node the primary without a switchover.
_TAKEN_OVER = (EventKind.PRIMARY_ADOPTED, EventKind.FAILOVER_COMPLETED)


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


class TrialWatch:
    """A trial's state and what it reads: records, promotions, fences, the API.
    :class:`hacontrol.testing.faults.Trial` adds the run and the fault injections."""

    def __init__(self, fault: str, mode: str, workdir: Path,
                 timings: Timings | None = None) -> None:
        self.fault = FAULTS[fault]
        self.mode = MODES[mode]
        self.workdir = workdir
        self.t = timings or Timings()
        self.journal_path = workdir / "journal.jsonl"
        # The other controllers' journals (controller faults: two controllers on etcd).
        self.extra_journals: list[Path] = []
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
        """Every controller's journal records, oldest first."""
        paths = [self.journal_path, *self.extra_journals]
        found = [r for path in paths if path.exists() for r in Journal(path).read()]
        return found if len(paths) == 1 else sorted(found, key=lambda r: float(r.get("ts", 0)))

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
            taken_over = kind in _TAKEN_OVER and node != old
            switched = kind == EventKind.SWITCHOVER_COMPLETED and node != old
            promote = kind == EventKind.PROMOTE_SUCCEEDED
            if promote or switched or (taken_over and node not in promoted):
                promoted.append(node)
        return promoted

    def _wait_failover(self, since: float) -> bool:
        deadline = time.monotonic() + self.t.react
        found = False
        while not found and time.monotonic() < deadline:
            found = bool(self.promotions(since)) and any(
                self._mono(r) >= since and r.get("kind") in (EventKind.FAILOVER_COMPLETED,
                                                               EventKind.PRIMARY_ADOPTED)
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

    def _analyse(self, cluster: LocalCluster, acks: list[Ack], client_acks: list[Ack],
                 fault_at: float, fault_end: float) -> None:
        r = self.result
        records = self.records()
        r.failovers_seen = len(self.promotions(fault_at))
        primaries = [rec["node"] for rec in records
                     if rec.get("kind") in (*_TAKEN_OVER, EventKind.SWITCHOVER_COMPLETED)]
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


def wait_until(check: Callable[[], bool], timeout: float, what: str,
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


def lsn_number(text: object) -> int:
    """An LSN as a number (0 for NULL)."""
    if not text:
        return 0
    hi, lo = str(text).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def session_alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s session still answers."""
    if conn.closed:
        return False
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def last_failure(log: Path) -> str:
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


def close_quietly(conn: psycopg.Connection[Any]) -> None:
    """Close ``conn``, whatever state it is in."""
    with contextlib.suppress(Exception):
        conn.close()


def toml_value(value: Any) -> str:
    """One TOML value (strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
