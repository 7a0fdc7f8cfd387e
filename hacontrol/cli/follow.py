"""Following a request the controller carries out in the background (a failover,
a switchover, a rejoin) until it ends, and the exit code of how it ended."""

from __future__ import annotations

import time
from typing import Any

import click

from hacontrol.cli.client import ApiClient, Unreachable, status_row
from hacontrol.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from hacontrol.core.events import EventKind


def wait_for_primary(client: ApiClient, old: str | None, target: str | None,
                     timeout: float, since: float = 0.0) -> int:
    """Follow a failover/switchover in flight until it ends; the exit code. ``since``:
    wall-clock time of the request (older journal records do not explain a failure)."""
    started = time.monotonic()
    last_line = ""
    while time.monotonic() - started < timeout:
        try:
            code, snap = client.get("/status")
        except Unreachable as exc:
            click.echo(f"error: {exc}", err=True)
            return EXIT_UNREACHABLE
        if code == 200 and isinstance(snap, dict):
            primary = snap.get("primary")
            flight = snap.get("failover_in_flight")
            line = f"  ... primary {primary or 'none'}" + (
                f", {flight} being promoted" if flight else ""
            )
            if line != last_line:
                click.echo(line)
                last_line = line
            done = flight is None and primary is not None and (
                primary == target if target else primary != old
            )
            if done:
                elapsed = time.monotonic() - started
                node = status_row(snap, primary)
                click.echo(f"done: {primary} is the primary (timeline {node.get('timeline')}),"
                           f" {elapsed:.1f} s")
                return EXIT_OK
            if flight is None and time.monotonic() - started > 1.0:
                why = _last_message(client, _OPERATION_FAILED, since)
                click.echo(f"failed: nothing in flight and the primary is {primary}"
                           + (f": {why}" if why else "; see 'hacontrol history'"), err=True)
                return EXIT_FAILED
        time.sleep(0.2)
    click.echo(f"failed: not finished after {timeout:g} s; see 'hacontrol history'", err=True)
    return EXIT_FAILED


def _last_message(client: ApiClient, kinds: tuple[str, ...], since: float) -> str:
    """The message of the latest journal record of one of ``kinds`` written at or
    after wall-clock ``since`` ('' if none)."""
    try:
        records = client.events({"limit": 50, "kind": ",".join(kinds), "since": since})
    except Unreachable:
        return ""
    for record in reversed(records):
        if record.get("kind") in kinds and float(record.get("ts") or 0) >= since:
            return str(record.get("message") or "")
    return ""


# How an operation the operator asked for can end without its promotion.
_OPERATION_FAILED = (EventKind.SWITCHOVER_ABORTED, EventKind.SWITCHOVER_ABANDONED,
                     EventKind.FAILOVER_FAILED, EventKind.FAILOVER_ABANDONED)
_REJOIN_ENDS = (EventKind.NODE_REJOINED, EventKind.REJOIN_FAILED)


def _rejoin_outcome(client: ApiClient, node: str) -> dict[str, Any] | None:
    """The latest node_rejoined / rejoin_failed record of ``node``, if any."""
    records = client.events({"limit": 200, "kind": ",".join(_REJOIN_ENDS), "node": node})
    for record in reversed(records):
        if record.get("node") == node and record.get("kind") in _REJOIN_ENDS:
            return dict(record)
    return None


def wait_for_rejoin(client: ApiClient, node: str, timeout: float) -> int:
    """Follow a rejoin the controller runs in the background until it ends; the exit code."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            code, snap = client.get("/status")
            if code == 200 and isinstance(snap, dict) and node not in (
                snap.get("rejoining") or []
            ):
                outcome = _rejoin_outcome(client, node) or {}
                elapsed = time.monotonic() - started
                if outcome.get("kind") == EventKind.NODE_REJOINED:
                    click.echo(f"done: {outcome.get('message')} ({elapsed:.1f} s)")
                    return EXIT_OK
                message = outcome.get("message") or "see 'hacontrol history'"
                click.echo(f"failed: {message}", err=True)
                return EXIT_FAILED
        except Unreachable as exc:
            click.echo(f"error: {exc}", err=True)
            return EXIT_UNREACHABLE
        time.sleep(0.2)
    click.echo(f"failed: the rejoin of {node} has not finished after {timeout:g} s; it goes on"
               " in the controller: see 'hacontrol status' and 'hacontrol history'", err=True)
    return EXIT_FAILED
