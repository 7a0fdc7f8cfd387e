"""The `hacontrol` command line.

Exit codes: 0 success; 1 the operation failed (e.g. a node could not be
reached); 2 bad usage or an invalid configuration file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import click

from hacontrol import __version__
from hacontrol.config import Config, ConfigError, check_config, load_config

EXIT_FAILED = 1
EXIT_USAGE = 2


def _load(path: str) -> Config:
    """Load a configuration or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USAGE)


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="HACONTROL_CONFIG",
    help="Configuration file (TOML). Env: HACONTROL_CONFIG.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hacontrol")
def main() -> None:
    """hacontrol: keeps a PostgreSQL streaming-replication cluster writable."""


@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
def check_config_command(path: str) -> None:
    """Validate a configuration file and explain what it makes the controller do."""
    code, text = check_config(path)
    click.echo(text, err=code != 0)
    sys.exit(code)


@main.command()
@config_option
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--json-logs/--console-logs", default=None,
              help="Log format (default: JSON unless stderr is a terminal).")
def run(config_path: str, log_level: str, json_logs: bool | None) -> None:
    """Run the controller until SIGTERM or SIGINT."""
    from hacontrol.controller import Controller
    from hacontrol.logs import configure_logging

    config = _load(config_path)
    configure_logging(log_level, json=json_logs)

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Controller(config).run(stop)

    asyncio.run(main_loop())


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(config_path: str, as_json: bool) -> None:
    """Probe every node once and show role, timeline, LSN, lag and health."""
    from hacontrol.journal import Journal
    from hacontrol.probe import probe_once
    from hacontrol.status import render_table, view_rows

    config = _load(config_path)
    specs = config.node_specs()
    recovered = Journal(config.journal).recover()
    view = asyncio.run(probe_once(specs, config.timing.probe_timeout))
    rows = view_rows(specs, view, fenced=recovered.fenced, maintenance=recovered.maintenance)
    result: dict[str, Any] = {"source": "direct probe", "nodes": rows}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"(probed directly) {len(result['nodes'])} nodes")
        click.echo(render_table(result["nodes"]))
    if not any(row["reachable"] for row in result["nodes"]):
        sys.exit(EXIT_FAILED)


@main.command()
@config_option
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def history(config_path: str, limit: int, as_json: bool) -> None:
    """Show the controller's journal: detections, decisions, actions, results."""
    import datetime

    from hacontrol.journal import Journal

    config = _load(config_path)
    records = Journal(config.journal).read(limit=limit)
    if not records:
        click.echo(f"no events recorded in {config.journal}")
        return
    for record in records:
        if as_json:
            click.echo(json.dumps(record))
            continue
        when = datetime.datetime.fromtimestamp(record.get("ts", 0), datetime.UTC)
        node = record.get("node") or "-"
        text = record.get("message") or record.get("detail") or record.get("reason") or ""
        click.echo(f"{when:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f"  {record['kind']:<22} {node:<8} {text}")
