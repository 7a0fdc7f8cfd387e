"""The `hacontrol` command line: the command group, ``check-config``, ``run`` and
``demo``; the commands that read (commands_read.py) and the ones that ask the
controller to act (commands_requests.py) join it here.

Exit codes: see :mod:`hacontrol.cli.exit_codes` (docs/cli.md).
"""

from __future__ import annotations

import asyncio
import sys

import click
from click.core import ParameterSource

from hacontrol import __version__
from hacontrol.cli import commands_read, commands_requests
from hacontrol.cli.exit_codes import EXIT_FAILED, EXIT_USAGE, exit_with
from hacontrol.cli.options import CONFIG_HELP, config_option, load_or_exit
from hacontrol.config import check_config

# The client's names stay importable from here for the code written when the whole
# command line was this one module (hacontrol.testing.faults).
__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hacontrol")
def main() -> None:
    """hacontrol: keeps a PostgreSQL streaming-replication cluster writable."""


@main.command("check-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "-c", "config_path", default=None, type=click.Path(dir_okay=False),
              envvar="HACONTROL_CONFIG", help=CONFIG_HELP)
def check_config_command(path: str | None, config_path: str | None) -> None:
    """Validate a configuration file and explain what it makes the controller do.

    The file is PATH, or -c/--config PATH, or HACONTROL_CONFIG, like every command.
    """
    source = click.get_current_context().get_parameter_source("config_path")
    if path and config_path and path != config_path and source is ParameterSource.COMMANDLINE:
        exit_with(EXIT_USAGE, f"error: two configuration files given ({path} and --config"
                              f" {config_path}); give one")
    chosen = path or config_path
    if not chosen:
        exit_with(EXIT_USAGE, "error: no configuration file given: hacontrol check-config"
                              " PATH (or -c/--config PATH, or HACONTROL_CONFIG=PATH)")
    code, text = check_config(chosen)
    click.echo(text, err=code != 0)
    sys.exit(code)


@main.command()
@config_option
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--json-logs/--console-logs", default=None,
              help="Log format (default: JSON unless stderr is a terminal).")
def run(config_path: str, log_level: str, json_logs: bool | None) -> None:
    """Run the controller (with its API) until SIGTERM or SIGINT; SIGHUP reloads.

    Exit codes: 0 clean stop, 1 failure, 2 invalid configuration.
    """
    from hacontrol.service.logs import configure_logging
    from hacontrol.service.service import Service

    config = load_or_exit(config_path)
    configure_logging(log_level, json=json_logs)
    from hacontrol.service.recovery import ForeignJournalError

    try:
        service = Service(config, config_path=config_path)
    except OSError as exc:
        exit_with(EXIT_FAILED,
                  f"error: cannot start: {exc.strerror or exc}: {exc.filename or ''}")
    except ForeignJournalError as exc:
        exit_with(EXIT_USAGE, f"error: {exc}")
    sys.exit(asyncio.run(service.run()))


@main.command()
@click.option("--scenario", type=click.Choice(["failover"]), default=None,
              help="Run a scenario non-interactively and print its timeline.")
@click.option("--nodes", "size", type=click.IntRange(2, 9), default=3, show_default=True)
def demo(scenario: str | None, size: int) -> None:
    """A local cluster, the controller and a live view: kill the primary, watch the failover.

    With --scenario failover: kill the primary under a write load, wait for the
    failover, restart the old primary to show it fenced, print a timeline, clean
    up. Exit 0 when the failover happened, 1 otherwise.
    """
    from hacontrol.cli.demo import run_demo

    sys.exit(run_demo(scenario=scenario, size=size))


for _command in (
    commands_read.status, commands_read.history,
    commands_requests.pause, commands_requests.resume, commands_requests.maintenance,
    commands_requests.rejoin, commands_requests.switchover, commands_requests.failover,
):
    main.add_command(_command)


def _add_cluster_commands() -> None:
    try:
        from hacontrol.cli.cluster import cluster
    except ImportError:  # the test harness is optional
        return
    main.add_command(cluster)


_add_cluster_commands()
