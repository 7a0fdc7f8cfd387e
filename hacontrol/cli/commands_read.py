"""The commands that read: ``status`` (from the controller, else by probing every
node) and ``history`` (from the controller, else from the journal file)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import click

from hacontrol.cli.client import ApiClient, Unreachable, controller_status
from hacontrol.cli.exit_codes import EXIT_FAILED, EXIT_USAGE, exit_with
from hacontrol.cli.options import controller_options, load_or_exit
from hacontrol.cli.render import event_line, render_status, stamp
from hacontrol.config import Config


def _status_direct(config: Config) -> dict[str, Any]:
    """Every node probed once from here, with the fences and maintenance the journal records."""
    from hacontrol.io.journal import Journal
    from hacontrol.io.probe import probe_once
    from hacontrol.service.snapshot import view_rows

    specs = config.node_specs()
    try:
        recovered = Journal(config.journal).recover()
        fenced, maintenance = recovered.fenced, recovered.maintenance
    except OSError:
        fenced = maintenance = frozenset()
    view = asyncio.run(probe_once(specs, config.timing.probe_timeout))
    rows = [row.to_json() for row in view_rows(specs, view, fenced=fenced,
                                                maintenance=maintenance)]
    return {"nodes": rows}


def _status_once(config: Config, client: ApiClient) -> dict[str, Any]:
    snap = controller_status(client)
    if snap is not None:
        return {"source": "controller", "api": client.address, **snap}
    return {"source": "direct probe", "api": client.address, **_status_direct(config)}


@click.command()
@controller_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", "-w", is_flag=True, help="Redraw every --interval seconds.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many views [default: until Ctrl-C].")
def status(config_path: str, api_address: str | None, use_proxy: bool, as_json: bool,
           watch: bool, interval: float, count: int | None) -> None:
    """Show every node: role, timeline, LSN, lag, health, breaker.

    Reads GET /status from the running controller when it answers, and probes
    every node directly otherwise; the first line says which. Exit 1 when no
    node is reachable.
    """
    config = load_or_exit(config_path)
    client = ApiClient.for_config(config, api_address, use_proxy)
    shown = 0
    result: dict[str, Any] = {}
    redraw = watch and not as_json and sys.stdout.isatty()
    try:
        while True:
            result = _status_once(config, client)
            if as_json:
                from hacontrol.service.api import honest_snapshot

                text = json.dumps(honest_snapshot(result), indent=None if watch else 2)
            else:
                text = render_status(result)
            if redraw:
                click.echo("\x1b[H\x1b[2J", nl=False)
            elif watch and shown and not as_json:
                click.echo("")
            click.echo(text)
            shown += 1
            if not watch or (count is not None and shown >= count):
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    if not any(row.get("reachable") for row in result.get("nodes") or []):
        sys.exit(EXIT_FAILED)


# -- history


def _names(values: Sequence[str]) -> frozenset[str] | None:
    names = frozenset(p.strip() for v in values for p in v.split(",") if p.strip())
    return names or None


@click.command()
@controller_options
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--node", "nodes", multiple=True, metavar="NODE",
              help="Only events about NODE (repeat it, or give a comma list).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (repeat it, or give a comma list), e.g."
              " --kind failover_started,failover_completed.")
@click.option("--since", "since_text", metavar="WHEN",
              help="Only events from WHEN on: a duration back from now (10m, 2h, 1d), an ISO"
              " 8601 time (2026-12-01T21:40:00Z; UTC without an offset) or epoch seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--journal", "from_journal", is_flag=True,
              help="Read the journal file even when a controller answers.")
def history(config_path: str, api_address: str | None, use_proxy: bool, limit: int,
            nodes: tuple[str, ...], kinds: tuple[str, ...], since_text: str | None,
            as_json: bool, from_journal: bool) -> None:
    """Show the controller's journal: detections, decisions, actions, results.

    From the running controller's API when it answers, else from the journal file
    (its rotated files too). Times are UTC.
    """
    from hacontrol.io.journal import Journal
    from hacontrol.io.journal_lines import matches, parse_since

    since: float | None = None
    if since_text is not None:
        try:
            since = parse_since(since_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    node_set, kind_set = _names(nodes), _names(kinds)
    config = load_or_exit(config_path)
    client = ApiClient.for_config(config, api_address, use_proxy)
    records: list[dict[str, Any]] | None = None
    source = f"journal {config.journal}"
    if not from_journal:
        query: list[tuple[str, str]] = [("limit", str(limit))]
        if kind_set:
            query.append(("kind", ",".join(sorted(kind_set))))
        if node_set:
            query.append(("node", ",".join(sorted(node_set))))
        if since is not None:
            query.append(("since", f"{since:.3f}"))
        try:
            code, body = client.get("/history?" + urllib.parse.urlencode(query))
            if code == 400 and isinstance(body, dict):
                exit_with(EXIT_USAGE, f"error: {body.get('error')}")
            if code == 200 and isinstance(body, dict):
                # A controller from before the filters existed ignores them: filter here too.
                records = [r for r in body.get("events") or []
                           if isinstance(r, dict) and matches(r, kind_set, node_set, since)]
                source = f"controller at {client.address}"
        except Unreachable:
            pass
    if records is None:
        try:
            records = Journal(config.journal).read(
                limit=limit, kinds=kind_set, nodes=node_set, since=since
            )
        except OSError as exc:
            exit_with(EXIT_FAILED, f"error: cannot read {config.journal}: {exc.strerror or exc}")
    records = records[-limit:]
    what = []
    if kind_set:
        what.append(f"kind {','.join(sorted(kind_set))}")
    if node_set:
        what.append(f"node {','.join(sorted(node_set))}")
    if since is not None:
        what.append(f"since {stamp(since)}")
    matching = f" matching {', '.join(what)}" if what else ""
    if not records:
        click.echo(f"no events recorded{matching} ({source})")
        return
    click.echo(f"({len(records)} events{matching} from the {source}; times are UTC)",
               err=as_json)
    for record in records:
        click.echo(json.dumps(record) if as_json else event_line(record))
