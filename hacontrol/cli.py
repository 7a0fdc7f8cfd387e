"""The `hacontrol` command line.

Exit codes (docs/cli.md):

* 0 — done;
* 1 — refused or failed (a request the controller refused, an action that
  failed, no node reachable, the service stopped on a failure);
* 2 — bad usage or an invalid configuration file (also a missing or wrong API
  token, and a request the API rejects as malformed);
* 3 — the controller's API is not reachable (commands that need it).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, NoReturn

import click

from hacontrol import __version__
from hacontrol.config import Config, ConfigError, check_config, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

API_TIMEOUT_S = 2.0


def _load(path: str) -> Config:
    """Load a configuration or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_USAGE)


def _exit(code: int, message: str | None = None) -> NoReturn:
    if message:
        click.echo(message, err=code != EXIT_OK)
    sys.exit(code)


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    envvar="HACONTROL_CONFIG",
    help="Configuration file (TOML). Env: HACONTROL_CONFIG.",
)
api_option = click.option(
    "--api",
    "api_address",
    default=None,
    envvar="HACONTROL_API_ADDRESS",
    metavar="HOST:PORT",
    help="The running controller's API [default: api.listen from the configuration]. "
    "Env: HACONTROL_API_ADDRESS.",
)


# --------------------------------------------------------------------------- API client


class Unreachable(Exception):
    """No controller answered at the API address."""


class ApiClient:
    """A tiny blocking JSON client for the controller's API (stdlib only)."""

    def __init__(self, address: str, token: str = "", timeout: float = API_TIMEOUT_S) -> None:
        self.address = address
        self.token = token
        self.timeout = timeout

    @classmethod
    def for_config(cls, config: Config, address: str | None) -> ApiClient:
        """The client for ``--api`` or the configuration's ``api.listen``."""
        if address is None:
            host, port = config.api.address()
            # A wildcard listen address is reached on loopback.
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(address, config.api.bearer_token())

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON body); raises :class:`Unreachable`."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if method == "POST" and self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"no controller answering at {self.address} ({reason})") from None

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``."""
        return self.request("GET", path)

    def reachable(self) -> bool:
        """Whether a controller answers ``GET /health``."""
        try:
            status, _ = self.request("GET", "/health", timeout=1.0)
        except Unreachable:
            return False
        return status == 200


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"error": raw.decode(errors="replace")[:200]}


# --------------------------------------------------------------------------- commands


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
    """Run the controller (with its API) until SIGTERM or SIGINT; SIGHUP reloads.

    Exit codes: 0 clean stop, 1 failure, 2 invalid configuration.
    """
    from hacontrol.logs import configure_logging
    from hacontrol.service import Service

    config = _load(config_path)
    configure_logging(log_level, json=json_logs)
    from hacontrol.controller import ForeignJournalError

    try:
        service = Service(config, config_path=config_path)
    except OSError as exc:
        _exit(EXIT_FAILED, f"error: cannot start: {exc.strerror or exc}: {exc.filename or ''}")
    except ForeignJournalError as exc:
        _exit(EXIT_USAGE, f"error: {exc}")
    sys.exit(asyncio.run(service.run()))


# -- status


def _status_from_api(client: ApiClient) -> dict[str, Any] | None:
    try:
        status, body = client.get("/status")
    except Unreachable:
        return None
    return body if status == 200 and isinstance(body, dict) else None


def _status_direct(config: Config) -> dict[str, Any]:
    from hacontrol.journal import Journal
    from hacontrol.probe import probe_once
    from hacontrol.status import view_rows

    specs = config.node_specs()
    try:
        recovered = Journal(config.journal).recover()
        fenced, maintenance = recovered.fenced, recovered.maintenance
    except OSError:
        fenced = maintenance = frozenset()
    view = asyncio.run(probe_once(specs, config.timing.probe_timeout))
    rows = view_rows(specs, view, fenced=fenced, maintenance=maintenance)
    return {"nodes": rows}


def _event_line(record: dict[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(float(record.get("ts", 0)), datetime.UTC)
    node = record.get("node") or "-"
    text = record.get("message") or record.get("detail") or record.get("reason") or ""
    stamp = f"{when:%Y-%m-%d %H:%M:%S.%f}"[:-3]
    return f"{stamp}  {record.get('kind', '?'):<22} {node:<8} {text}"


def render_status(result: dict[str, Any]) -> str:
    """The human status view: where it came from, the table, the latest events."""
    from hacontrol.status import render_table

    lines = []
    if result.get("source") == "controller":
        flags = [f"primary {result.get('primary') or 'none'}", f"mode {result.get('mode')}"]
        if result.get("paused"):
            flags.append("PAUSED")
        if result.get("failover_in_flight"):
            flags.append(f"failover to {result['failover_in_flight']} in flight")
        flags.append(f"round {result.get('rounds')} ({result.get('last_round_ms')} ms)")
        lines.append(f"(from the controller at {result['api']}) " + ", ".join(flags))
    else:
        lines.append(f"(probed directly: no controller answering at {result['api']})")
    lines.append(render_table(result.get("nodes") or []))
    events = result.get("events") or []
    if events:
        lines.append("")
        lines.append("latest events:")
        lines.extend("  " + _event_line(e) for e in events[-5:])
    return "\n".join(lines)


def _status_once(config: Config, client: ApiClient) -> dict[str, Any]:
    snap = _status_from_api(client)
    if snap is not None:
        return {"source": "controller", "api": client.address, **snap}
    return {"source": "direct probe", "api": client.address, **_status_direct(config)}


@main.command()
@config_option
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", "-w", is_flag=True, help="Redraw every --interval seconds.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many views [default: until Ctrl-C].")
def status(config_path: str, api_address: str | None, as_json: bool, watch: bool,
           interval: float, count: int | None) -> None:
    """Show every node: role, timeline, LSN, lag, health, breaker.

    Reads GET /status from the running controller when it answers, and probes
    every node directly otherwise; the first line says which. Exit 1 when no
    node is reachable.
    """
    config = _load(config_path)
    client = ApiClient.for_config(config, api_address)
    shown = 0
    result: dict[str, Any] = {}
    redraw = watch and not as_json and sys.stdout.isatty()
    try:
        while True:
            result = _status_once(config, client)
            text = json.dumps(result, indent=None if watch else 2) if as_json else (
                render_status(result)
            )
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


@main.command()
@config_option
@api_option
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--journal", "from_journal", is_flag=True,
              help="Read the journal file even when a controller answers.")
def history(config_path: str, api_address: str | None, limit: int, as_json: bool,
            from_journal: bool) -> None:
    """Show the controller's journal: detections, decisions, actions, results.

    From the running controller's API when it answers, else from the journal file.
    """
    from hacontrol.journal import Journal

    config = _load(config_path)
    client = ApiClient.for_config(config, api_address)
    records: list[dict[str, Any]] | None = None
    source = f"journal {config.journal}"
    if not from_journal:
        try:
            code, body = client.get(f"/history?limit={limit}")
            if code == 200 and isinstance(body, dict):
                records = list(body.get("events") or [])
                source = f"controller at {client.address}"
        except Unreachable:
            pass
    if records is None:
        try:
            records = Journal(config.journal).read(limit=limit)
        except OSError as exc:
            _exit(EXIT_FAILED, f"error: cannot read {config.journal}: {exc.strerror or exc}")
    if not records:
        click.echo(f"no events recorded ({source})")
        return
    click.echo(f"({len(records)} events from the {source})", err=as_json)
    for record in records:
        click.echo(json.dumps(record) if as_json else _event_line(record))


# -- commands through the API


def _post(config: Config, api_address: str | None, kind: str,
          body: dict[str, Any]) -> tuple[ApiClient, int, dict[str, Any]]:
    client = ApiClient.for_config(config, api_address)
    try:
        # A command can wait for its action (a promotion: up to promote_timeout).
        code, answer = client.request(
            "POST", f"/{kind}", body, timeout=config.timing.promote_timeout + 30.0
        )
    except Unreachable as exc:
        _exit(EXIT_UNREACHABLE,
              f"error: {exc}; is 'hacontrol run' running? (or pass --api HOST:PORT)")
    return client, code, answer if isinstance(answer, dict) else {}


def _result(code: int, answer: dict[str, Any]) -> int:
    """Print the result line for a command's answer; its exit code."""
    message = answer.get("message") or answer.get("error") or ""
    if code == 200:
        click.echo(f"done: {message}")
        return EXIT_OK
    if code == 202:
        click.echo(f"accepted: {message}")
        return EXIT_OK
    if code in (401, 403):
        click.echo(f"error: {message} (set api.token_file or HACONTROL_API__TOKEN)", err=True)
        return EXIT_USAGE
    if code == 400:
        click.echo(f"error: {message}", err=True)
        return EXIT_USAGE
    if code == 409:
        click.echo(f"refused: {message}", err=True)
        return EXIT_FAILED
    click.echo(f"failed ({code}): {message}", err=True)
    return EXIT_FAILED


def _simple(config_path: str, api_address: str | None, kind: str,
            body: dict[str, Any]) -> NoReturn:
    config = _load(config_path)
    _, code, answer = _post(config, api_address, kind, body)
    sys.exit(_result(code, answer))


@main.command()
@config_option
@api_option
def pause(config_path: str, api_address: str | None) -> None:
    """Stop automatic actions (probing, reporting and the API go on)."""
    _simple(config_path, api_address, "pause", {})


@main.command()
@config_option
@api_option
def resume(config_path: str, api_address: str | None) -> None:
    """Act on failures again after a pause."""
    _simple(config_path, api_address, "resume", {})


@main.command()
@config_option
@api_option
@click.argument("node")
@click.argument("state", type=click.Choice(["on", "off"]))
def maintenance(config_path: str, api_address: str | None, node: str, state: str) -> None:
    """Put NODE in maintenance (never promoted, its failure starts no failover) or take it out."""
    _simple(config_path, api_address, "maintenance", {"node": node, "on": state == "on"})


def _wait_for_primary(client: ApiClient, old: str | None, target: str | None,
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
                node: dict[str, Any] = next(
                    (n for n in snap.get("nodes") or [] if n.get("name") == primary), {}
                )
                click.echo(f"done: {primary} is the primary (timeline {node.get('timeline')}),"
                           f" {elapsed:.1f} s")
                return EXIT_OK
            if flight is None and time.monotonic() - started > 1.0:
                why = _last_message(client, ("switchover_aborted", "switchover_abandoned",
                                             "failover_failed", "failover_abandoned"), since)
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
        code, answer = client.get("/history?limit=50")
    except Unreachable:
        return ""
    records = answer.get("events") if code == 200 and isinstance(answer, dict) else None
    for record in reversed(records or []):
        if record.get("kind") in kinds and float(record.get("ts") or 0) >= since:
            return str(record.get("message") or "")
    return ""


def _change_primary(config: Config, api_address: str | None, kind: str, body: dict[str, Any],
                    wait: bool, timeout: float) -> NoReturn:
    client = ApiClient.for_config(config, api_address)
    before = _status_from_api(client)
    old = before.get("primary") if before else None
    since = time.time()
    client, code, answer = _post(config, api_address, kind, body)
    result = _result(code, answer)
    if code != 202 or not wait:
        sys.exit(result)
    flight = answer.get("in_flight") or {}
    sys.exit(_wait_for_primary(client, old, body.get("to") or flight.get("candidate"), timeout,
                               since))


wait_option = click.option("--wait/--no-wait", default=True, show_default=True,
                           help="Follow the operation until the new primary is in place.")
timeout_option = click.option("--timeout", default=90.0, show_default=True,
                              type=click.FloatRange(min=1), help="Seconds --wait waits at most.")


def _rejoin_outcome(client: ApiClient, node: str) -> dict[str, Any] | None:
    """The latest node_rejoined / rejoin_failed record of ``node``, if any."""
    code, answer = client.get("/history?limit=200")
    records = answer.get("events") if code == 200 and isinstance(answer, dict) else None
    for record in reversed(records or []):
        if record.get("node") == node and record.get("kind") in ("node_rejoined",
                                                                 "rejoin_failed"):
            return dict(record)
    return None


def _wait_for_rejoin(client: ApiClient, node: str, timeout: float) -> int:
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
                if outcome.get("kind") == "node_rejoined":
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


@main.command()
@config_option
@api_option
@click.argument("node")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the rejoin until it ends.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds --wait waits at most.")
def rejoin(config_path: str, api_address: str | None, node: str, wait: bool,
           timeout: float) -> None:
    """Rejoin NODE as a replica of the primary. With a driver the controller runs the
    procedure (stop, pg_rewind, standby configuration, start, verify); without one,
    this reports that NODE was rejoined by hand and clears its fence."""
    config = _load(config_path)
    client, code, answer = _post(config, api_address, "rejoin", {"node": node})
    result = _result(code, answer)
    if code != 202 or not wait:
        sys.exit(result)
    sys.exit(_wait_for_rejoin(client, node, timeout))


@main.command()
@config_option
@api_option
@click.option("--to", "to", default=None, help="The new primary [default: the best candidate].")
@wait_option
@timeout_option
def switchover(config_path: str, api_address: str | None, to: str | None, wait: bool,
               timeout: float) -> None:
    """Planned change of primary, without data loss."""
    config = _load(config_path)
    _change_primary(config, api_address, "switchover", {"to": to} if to else {}, wait, timeout)


@main.command()
@config_option
@api_option
@click.option("--to", "to", required=True, help="The node to promote.")
@click.option("--force", is_flag=True,
              help="Promote even where the candidate checks refuse (lag, health, priority 0...).")
@wait_option
@timeout_option
def failover(config_path: str, api_address: str | None, to: str, force: bool, wait: bool,
             timeout: float) -> None:
    """Promote a node now (primary down, manual mode, or a specific node wanted)."""
    config = _load(config_path)
    _change_primary(config, api_address, "failover", {"to": to, "force": force}, wait, timeout)


# -- demo and the local test cluster


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
    from hacontrol.demo import run_demo

    sys.exit(run_demo(scenario=scenario, size=size))


def _add_cluster_commands() -> None:
    try:
        from hacontrol.testing.cluster_cli import cluster
    except ImportError:  # the test harness is optional
        return
    main.add_command(cluster)


_add_cluster_commands()
