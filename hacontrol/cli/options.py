"""Options shared by the commands, and loading the configuration they name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from hacontrol.cli.exit_codes import EXIT_USAGE, exit_with
from hacontrol.config import Config, ConfigError, load_config

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_HELP = "Configuration file (TOML). Env: HACONTROL_CONFIG."
config_option = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="HACONTROL_CONFIG",
    help=CONFIG_HELP,
)


def controller_options(command: F) -> F:
    """``--config``, ``--api HOST:PORT`` and ``--use-proxy``, for commands that talk
    to the controller's API."""
    command = click.option(
        "--use-proxy",
        "use_proxy",
        is_flag=True,
        default=False,
        envvar="HACONTROL_USE_PROXY",
        help="Reach the API through the proxy in http_proxy/HTTP_PROXY (never done"
        " otherwise: the bearer token would go to the proxy). Env: HACONTROL_USE_PROXY=1.",
    )(command)
    command = click.option(
        "--api",
        "api_address",
        default=None,
        envvar="HACONTROL_API_ADDRESS",
        metavar="HOST:PORT",
        help="The running controller's API [default: api.listen from the configuration]. "
        "Env: HACONTROL_API_ADDRESS.",
    )(command)
    return config_option(command)


def load_or_exit(path: str) -> Config:
    """Load a configuration or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        exit_with(EXIT_USAGE)
