"""The commands that ask the controller to act: ``pause``, ``resume``,
``maintenance``, ``rejoin``, ``switchover`` and ``failover``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from hacontrol.cli.client import ApiClient, controller_status, post_request, report_answer
from hacontrol.cli.confirm import change_plan, confirm
from hacontrol.cli.follow import wait_for_primary, wait_for_rejoin
from hacontrol.cli.options import controller_options, load_or_exit
from hacontrol.config import Config

F = TypeVar("F", bound=Callable[..., Any])


def wait_options(follow_help: str, default_timeout: float) -> Callable[[F], F]:
    """``--wait/--no-wait`` (follow what the controller does until it ends) and the
    ``--timeout`` of that wait."""

    def add(command: F) -> F:
        command = click.option("--timeout", default=default_timeout, show_default=True,
                               type=click.FloatRange(min=1),
                               help="Seconds --wait waits at most.")(command)
        return click.option("--wait/--no-wait", default=True, show_default=True,
                            help=follow_help)(command)

    return add


follow_primary_options = wait_options(
    "Follow the operation until the new primary is in place.", 90.0)
yes_option = click.option("--yes", "-y", "yes", is_flag=True,
                          help="Do not ask for confirmation (never asked when stdin is not a"
                          " terminal).")


def _simple(config_path: str, api_address: str | None, use_proxy: bool, kind: str,
            body: dict[str, Any]) -> NoReturn:
    config = load_or_exit(config_path)
    client = ApiClient.for_config(config, api_address, use_proxy)
    code, answer = post_request(client, config, kind, body)
    sys.exit(report_answer(code, answer))


@click.command()
@controller_options
def pause(config_path: str, api_address: str | None, use_proxy: bool) -> None:
    """Stop automatic actions (probing, reporting and the API go on)."""
    _simple(config_path, api_address, use_proxy, "pause", {})


@click.command()
@controller_options
def resume(config_path: str, api_address: str | None, use_proxy: bool) -> None:
    """Act on failures again after a pause."""
    _simple(config_path, api_address, use_proxy, "resume", {})


@click.command()
@controller_options
@click.argument("node")
@click.argument("state", type=click.Choice(["on", "off"]))
def maintenance(config_path: str, api_address: str | None, use_proxy: bool, node: str,
                state: str) -> None:
    """Put NODE in maintenance (never promoted, its failure starts no failover) or take it out."""
    _simple(config_path, api_address, use_proxy, "maintenance",
            {"node": node, "on": state == "on"})


@click.command()
@controller_options
@click.argument("node")
@wait_options("Follow the rejoin until it ends.", 600.0)
def rejoin(config_path: str, api_address: str | None, use_proxy: bool, node: str, wait: bool,
           timeout: float) -> None:
    """Rejoin NODE as a replica of the primary. With a driver the controller runs the
    procedure (stop, pg_rewind, standby configuration, start, verify); without one,
    this reports that NODE was rejoined by hand and clears its fence."""
    config = load_or_exit(config_path)
    client = ApiClient.for_config(config, api_address, use_proxy)
    code, answer = post_request(client, config, "rejoin", {"node": node})
    result = report_answer(code, answer)
    if code != 202 or not wait:
        sys.exit(result)
    sys.exit(wait_for_rejoin(client, node, timeout))


def _change_primary(config: Config, api_address: str | None, use_proxy: bool, kind: str,
                    body: dict[str, Any], wait: bool, timeout: float, yes: bool) -> NoReturn:
    client = ApiClient.for_config(config, api_address, use_proxy)
    before = controller_status(client)
    confirm(change_plan(kind, before, body), yes)
    old = before.get("primary") if before else None
    since = time.time()
    code, answer = post_request(client, config, kind, body)
    result = report_answer(code, answer)
    if code != 202 or not wait:
        sys.exit(result)
    flight = answer.get("in_flight") or {}
    sys.exit(wait_for_primary(client, old, body.get("to") or flight.get("candidate"), timeout,
                              since))


@click.command()
@controller_options
@click.option("--to", "to", default=None, help="The new primary [default: the best candidate].")
@follow_primary_options
@yes_option
def switchover(config_path: str, api_address: str | None, use_proxy: bool, to: str | None,
               wait: bool, timeout: float, yes: bool) -> None:
    """Planned change of primary, without data loss. On a terminal it asks first
    (writes pause briefly); --yes does not."""
    config = load_or_exit(config_path)
    _change_primary(config, api_address, use_proxy, "switchover", {"to": to} if to else {},
                    wait, timeout, yes)


@click.command()
@controller_options
@click.option("--to", "to", required=True, help="The node to promote.")
@click.option("--force", is_flag=True,
              help="Promote even where the candidate checks refuse (lag, health, priority 0...).")
@follow_primary_options
@yes_option
def failover(config_path: str, api_address: str | None, use_proxy: bool, to: str, force: bool,
             wait: bool, timeout: float, yes: bool) -> None:
    """Promote a node now (primary down, manual mode, or a specific node wanted). On a
    terminal it asks first (unreplicated writes can be lost); --yes does not."""
    config = load_or_exit(config_path)
    _change_primary(config, api_address, use_proxy, "failover", {"to": to, "force": force},
                    wait, timeout, yes)
