"""Helpers for the unscripted-fault tests (tests/integration/test_unscripted_faults.py):
a controller subprocess stopped by PID, configuration files, small SQL checks,
frozen processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from hacontrol.io.journal import Journal
from hacontrol.testing import LocalCluster, processes
from hacontrol.testing.local_node import Node, free_port
from hacontrol.testing.workload import CREATE_SQL, TABLE
from tests.integration.support import wait_until

TOKEN = "unscripted-faults-token-0123456789"


# -- configuration ----------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """One TOML value (strings JSON-quoted, which TOML accepts for basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_config(
    cluster: LocalCluster,
    directory: Path,
    *,
    journal: Path | None = None,
    api: bool = True,
    drivers: bool = False,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    top: Mapping[str, Any] | None = None,
    name: str = "hacontrol.toml",
) -> Path:
    """A controller configuration file for ``cluster``: default timings unless
    ``sections`` say otherwise, the API on a free loopback port (fixed in the file, so
    a restarted controller listens where the first did) or disabled."""
    tables: dict[str, dict[str, Any]] = {}
    if api:
        tables["api"] = {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN}
    else:
        tables["api"] = {"enabled": False}
    for section, values in (sections or {}).items():
        tables.setdefault(section, {}).update(values)
    lines = [f"journal = {toml_value(str(journal or directory / 'journal.jsonl'))}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in (top or {}).items()]
    for section, values in tables.items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path = directory / name
    path.write_text("\n".join(lines) + "\n" + cluster.config_toml(drivers=drivers))
    return path


def api_address(config: Path) -> str:
    """The ``host:port`` the configuration's API listens on."""
    for line in config.read_text().splitlines():
        if line.startswith("listen = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"no api.listen in {config}")


def api_status(config: Path) -> dict[str, Any] | None:
    """GET /status of the controller the configuration names; None when it does not
    answer (not running yet, or gone)."""
    try:
        with urllib.request.urlopen(f"http://{api_address(config)}/status", timeout=2) as resp:
            body = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def settled_on(config: Path, primary: str) -> bool:
    """The controller behind ``config`` has ``primary`` and every node healthy (and ran
    enough rounds for every replica to count as a healthy candidate)."""
    snap = api_status(config)
    return bool(
        snap is not None
        and snap.get("primary") == primary
        and snap.get("failover_in_flight") is None
        and int(snap.get("rounds") or 0) >= 5
        and all(n.get("health") == "ok" for n in snap.get("nodes", []))
    )


# -- the controller as a subprocess --------------------------------------------------------


class ControllerProcess(processes.ControllerProcess):
    """``hacontrol run --config CONFIG`` in a subprocess, signalled by its PID only,
    stdout and stderr in ``LABEL.out`` and ``LABEL.err`` in ``directory``; use as a
    context manager (SIGTERM, then SIGKILL, on exit)."""

    def __init__(self, config: Path, directory: Path, label: str = "controller") -> None:
        super().__init__(config, directory / f"{label}.out", stderr=directory / f"{label}.err")


def cli(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """The real ``hacontrol`` CLI (``python -m hacontrol ARGS --config CONFIG``); bounded."""
    return subprocess.run(
        [sys.executable, "-m", "hacontrol", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


# -- journal ---------------------------------------------------------------------------


def records(journal: Path) -> list[dict[str, Any]]:
    """Every journal record (an absent journal has none)."""
    return Journal(journal).read() if journal.exists() else []


def kind_records(recs: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in recs if r.get("kind") == kind]


def names_node(record: Mapping[str, Any], node: str) -> bool:
    """The record is about ``node``: its ``node`` field, or a node list in its details."""
    if record.get("node") == node:
        return True
    details = record.get("details") or {}
    for key in ("node", "nodes", "name"):
        value = details.get(key)
        if value == node or (isinstance(value, list) and node in value):
            return True
    return False


def critical_about(recs: Sequence[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    """Records of severity "critical" naming ``node``."""
    return [r for r in recs if r.get("severity") == "critical" and names_node(r, node)]


# One polling helper for every integration test.
wait_for = wait_until


# -- SQL checks ------------------------------------------------------------------------


def in_recovery(node: Node) -> bool | None:
    """pg_is_in_recovery(), or None when the node does not answer."""
    try:
        return bool(node.query("SELECT pg_is_in_recovery()")[0][0])
    except psycopg.Error:
        return None


def read_only(node: Node) -> bool | None:
    """True when the node refuses writes by default (default_transaction_read_only on,
    or in recovery); None when it does not answer."""
    try:
        row = node.query(
            "SELECT current_setting('default_transaction_read_only'), pg_is_in_recovery()"
        )[0]
    except psycopg.Error:
        return None
    return row[0] == "on" or bool(row[1])


def can_write(node: Node) -> bool:
    """One insert on exactly this node, as a read-write client would (a default
    read-only transaction refuses it)."""
    try:
        with psycopg.connect(node.dsn, autocommit=True, connect_timeout=2) as conn:
            conn.execute(CREATE_SQL)
            conn.execute(f"INSERT INTO {TABLE} (id) VALUES (-(extract(epoch FROM clock_timestamp())"
                         " * 1000000)::bigint)")
        return True
    except psycopg.Error:
        return False


def receiver(node: Node) -> tuple[str, int | None] | None:
    """(status, sender_port) of the node's WAL receiver, or None (none, or no answer)."""
    try:
        rows = node.query("SELECT status, sender_port FROM pg_stat_wal_receiver")
    except psycopg.Error:
        return None
    if not rows or rows[0][0] is None:
        return None
    return str(rows[0][0]), (int(rows[0][1]) if rows[0][1] is not None else None)


def lsn_of(node: Node, expr: str) -> int:
    """An LSN-valued SQL expression evaluated on ``node``, as bytes."""
    value = node.query(f"SELECT ({expr}) - '0/0'::pg_lsn")[0][0]
    return int(value)


def walsender_pid(primary: Node, application_name: str) -> int:
    rows = primary.query(
        "SELECT pid FROM pg_stat_replication WHERE application_name = %s", (application_name,)
    )
    assert rows, f"no walsender for {application_name} on {primary.name}"
    return int(rows[0][0])


def walreceiver_pid(replica: Node) -> int:
    rows = replica.query("SELECT pid FROM pg_stat_wal_receiver")
    assert rows and rows[0][0] is not None, f"{replica.name} has no WAL receiver"
    return int(rows[0][0])


@contextlib.contextmanager
def stopped(pids: Sequence[int]) -> Iterator[list[int]]:
    """SIGSTOP ``pids`` (in order) for the block; SIGCONT them (in reverse) at the end,
    also on failure. The list yielded may be emptied to resume some earlier."""
    frozen: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        yield frozen
    finally:
        for pid in reversed(frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def resume(frozen: list[int], pid: int) -> None:
    """SIGCONT one process from a :func:`stopped` block now."""
    if pid in frozen:
        frozen.remove(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def primaries_among(cluster: LocalCluster, names: Sequence[str]) -> list[str]:
    """Which of ``names`` answer that they are out of recovery."""
    return [n for n in names if in_recovery(cluster.node(n)) is False]
