"""The `hacontrol` command line.

Exit codes (docs/cli.md):

* 0 — done;
* 1 — refused or failed (a request the controller refused, an action that
  failed, no node reachable, the service stopped on a failure, a confirmation
  answered no);
* 2 — bad usage or an invalid configuration file (also a missing or wrong API
  token, and a request the API rejects as malformed);
* 3 — the controller's API is not reachable (commands that need it).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import shutil
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from hacontrol import __version__
from hacontrol.config import Config, ConfigError, check_config, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

API_TIMEOUT_S = 2.0
DEFAULT_WIDTH = 80
# Shown for a value that is not known this round; "-" is for one that does not apply.
UNKNOWN = "?"
NOT_APPLICABLE = "-"

F = TypeVar("F", bound=Callable[..., Any])


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


def api_options(command: F) -> F:
    """``--api HOST:PORT`` and ``--use-proxy``, for commands that talk to the API."""
    command = click.option(
        "--use-proxy",
        "use_proxy",
        is_flag=True,
        default=False,
        envvar="HACONTROL_USE_PROXY",
        help="Reach the API through the proxy in http_proxy/HTTP_PROXY (never done"
        " otherwise: the bearer token would go to the proxy). Env: HACONTROL_USE_PROXY=1.",
    )(command)
    return click.option(
        "--api",
        "api_address",
        default=None,
        envvar="HACONTROL_API_ADDRESS",
        metavar="HOST:PORT",
        help="The running controller's API [default: api.listen from the configuration]. "
        "Env: HACONTROL_API_ADDRESS.",
    )(command)


def terminal_width() -> int:
    """Columns to fit output into: COLUMNS, else the terminal's when stdout is one,
    else 80."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns or DEFAULT_WIDTH
    except (AttributeError, ValueError, OSError):
        pass
    return DEFAULT_WIDTH


def _interactive() -> bool:
    """Whether a person can see a question and answer it: stdin and stderr (where
    the question goes) are terminals. Scripts, pipes and captured runs are not."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- API client


class Unreachable(Exception):
    """No controller answered at the API address."""


class ApiClient:
    """A tiny blocking JSON client for the controller's API (stdlib only).

    Environment proxies (``http_proxy``, ``HTTP_PROXY``, ``all_proxy``) are ignored
    unless ``use_proxy``: the API is the controller's own address, usually loopback,
    and a proxy would receive the bearer token of every command.
    """

    def __init__(
        self, address: str, token: str = "", timeout: float = API_TIMEOUT_S,
        use_proxy: bool = False,
    ) -> None:
        self.address = address
        self.token = token
        self.timeout = timeout
        self.use_proxy = use_proxy
        handlers = [] if use_proxy else [urllib.request.ProxyHandler({})]
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def for_config(cls, config: Config, address: str | None,
                   use_proxy: bool = False) -> ApiClient:
        """The client for ``--api`` or the configuration's ``api.listen``."""
        if address is None:
            host, port = config.api.address()
            # A wildcard listen address is reached on loopback.
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return cls(address, config.api.bearer_token(), use_proxy=use_proxy)

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
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
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
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "-c", "config_path", default=None, type=click.Path(dir_okay=False),
              envvar="HACONTROL_CONFIG", help=CONFIG_HELP)
def check_config_command(path: str | None, config_path: str | None) -> None:
    """Validate a configuration file and explain what it makes the controller do.

    The file is PATH, or -c/--config PATH, or HACONTROL_CONFIG, like every command.
    """
    source = click.get_current_context().get_parameter_source("config_path")
    if path and config_path and path != config_path and source is ParameterSource.COMMANDLINE:
        _exit(EXIT_USAGE, f"error: two configuration files given ({path} and --config"
                          f" {config_path}); give one")
    chosen = path or config_path
    if not chosen:
        _exit(EXIT_USAGE, "error: no configuration file given: hacontrol check-config PATH"
                          " (or -c/--config PATH, or HACONTROL_CONFIG=PATH)")
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


def _stamp(ts: Any, compact: bool = False) -> str:
    """A journal time as UTC, marked so: ``2026-12-01 21:40:12.345Z``, or
    ``12-01 21:40:12Z`` when ``compact``."""
    try:
        when = datetime.datetime.fromtimestamp(float(ts or 0), datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return "?" * (15 if compact else 24)
    if compact:
        return f"{when:%m-%d %H:%M:%S}Z"
    return f"{when:%Y-%m-%d %H:%M:%S.%f}"[:-3] + "Z"


def _event_line(record: Mapping[str, Any], compact: bool = False) -> str:
    """One journal record on one line; ``compact`` leaves more room for its text
    (the status view, where lines are clipped to the terminal)."""
    node = record.get("node") or "-"
    text = record.get("message") or record.get("detail") or record.get("reason") or ""
    if compact:
        return f"{_stamp(record.get('ts'), True)} {record.get('kind', '?'):<20} {node:<4} {text}"
    return f"{_stamp(record.get('ts'))}  {record.get('kind', '?'):<22} {node:<8} {text}"


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."


def _wrap(text: str, width: int, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, width=max(width, 20), subsequent_indent=indent,
                         break_on_hyphens=False) or [""]


def _wrap_items(prefix: str, items: Sequence[str], width: int) -> list[str]:
    """``prefix`` and ``items`` joined by ", ", broken into lines between items only."""
    lines: list[str] = []
    line = prefix
    for number, item in enumerate(items):
        piece = item + ("," if number < len(items) - 1 else "")
        if line.strip() and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = "  " + piece
        else:
            line = f"{line} {piece}" if line else piece
    lines.append(line)
    return [part for text in lines for part in _wrap(text, width)]


def _lsn(value: Any) -> int | None:
    """An ``X/Y`` LSN as an integer; None for anything else (``-``, null)."""
    if not isinstance(value, str) or "/" not in value:
        return None
    high, _, low = value.partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        return None


def _lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _size(count: int) -> str:
    """Bytes for people: ``0 B``, ``512 B``, ``4.0 KiB``, ``12 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


_DSN_HOST_RE = re.compile(r"(?:^|\s)host\s*=\s*'?([^\s',]+)")
_DSN_PORT_RE = re.compile(r"(?:^|\s)port\s*=\s*'?(\d+)")


def _dsn_address(dsn: Any) -> str | None:
    """``host:port`` of a (redacted) node DSN, key/value or URI; None if unclear."""
    if not isinstance(dsn, str) or not dsn:
        return None
    if "://" in dsn:
        try:
            parts = urllib.parse.urlsplit(dsn)
            host, port = parts.hostname, parts.port or 5432
        except ValueError:
            return None
        return f"{host}:{port}" if host else None
    host_match = _DSN_HOST_RE.search(dsn)
    port_match = _DSN_PORT_RE.search(dsn)
    if host_match is None:
        return None
    return f"{host_match[1]}:{port_match[1] if port_match else 5432}"


def cluster_primary(result: Mapping[str, Any]) -> str | None:
    """The controller's primary; in a direct probe, the one writable, unfenced
    primary if there is exactly one."""
    if "primary" in result:
        primary = result.get("primary")
        return str(primary) if primary else None
    writable = [
        str(r.get("name")) for r in result.get("nodes") or []
        if r.get("reachable") and r.get("role") == "primary" and not r.get("fenced")
        and not r.get("read_only")
    ]
    return writable[0] if len(writable) == 1 else None


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    # When the table is too wide, the column with the lowest ``keep`` goes first.
    keep: int


# In display order.
TABLE_COLUMNS = (
    _Column("NODE", 100), _Column("ROLE", 99), _Column("TL", 98), _Column("LSN", 97),
    _Column("LAG", 96), _Column("REPLAY", 6), _Column("DELAY", 1), _Column("UPSTREAM", 4),
    _Column("HEALTH", 95), _Column("BREAKER", 3), _Column("PRIO", 2),
)
_ESSENTIAL = 90


def node_cells(rows: Sequence[Mapping[str, Any]], primary: str | None) -> list[dict[str, str]]:
    """The table's text, one dict (header -> cell) per node row.

    Nothing stale or made up: a node not reached this round shows ``?`` for every
    measurement; a replica's timeline only while it streams (otherwise PostgreSQL
    reports its last checkpoint's, which can be older); LSNs and lags all come from
    the same round. A replica's LSN is what it received, REPLAY how much of that it
    has still to replay. The primary's position was read a moment before its
    replicas were: when a streaming replica on its timeline has received more, the
    primary has at least that much, and that is what is shown for it.
    """
    addresses = {a: str(r.get("name")) for r in rows if (a := _dsn_address(r.get("dsn")))}
    by_name = {str(r.get("name")): r for r in rows}
    head = by_name.get(primary or "")
    head_ok = bool(head and head.get("reachable") and head.get("role") == "primary")
    head_tl = head.get("timeline") if head_ok and head else None
    head_lsn = _lsn(head.get("lsn")) if head_ok and head else None

    def streams_on_head_timeline(row: Mapping[str, Any]) -> bool:
        return (bool(row.get("reachable")) and row.get("role") == "replica"
                and row.get("receiver_status") == "streaming"
                and head_tl is not None and row.get("timeline") == head_tl)

    if head_lsn is not None:
        for row in rows:
            received = _lsn(row.get("lsn"))
            if received is not None and streams_on_head_timeline(row):
                head_lsn = max(head_lsn, received)
    table = []
    for row in rows:
        name = str(row.get("name"))
        role = str(row.get("role") or "unknown")
        fenced = bool(row.get("fenced"))
        breaker = row.get("breaker")
        cells = {
            "NODE": name,
            "HEALTH": str(row.get("health") or UNKNOWN),
            "BREAKER": str(breaker) if breaker else NOT_APPLICABLE,
            "PRIO": str(row.get("priority")) if row.get("priority") is not None else UNKNOWN,
        }
        if not row.get("reachable"):
            cells["ROLE"] = "unknown" if role == "unknown" else f"{role}?"
            for column in ("TL", "LSN", "LAG", "REPLAY", "DELAY", "UPSTREAM"):
                cells[column] = UNKNOWN
            table.append(cells)
            continue
        timeline = row.get("timeline")
        received = _lsn(row.get("lsn"))
        if role == "primary":
            if name == primary or (primary is None and not fenced):
                cells["ROLE"] = "primary"
            else:
                cells["ROLE"] = "primary (fenced)" if fenced else "primary (stray)"
            cells["TL"] = str(timeline) if timeline is not None else UNKNOWN
            shown = head_lsn if name == primary and head_lsn is not None else received
            cells["LSN"] = _lsn_text(shown) if shown is not None else UNKNOWN
            for column in ("LAG", "REPLAY", "DELAY", "UPSTREAM"):
                cells[column] = NOT_APPLICABLE
        elif role == "replica":
            cells["ROLE"] = "replica"
            streaming = row.get("receiver_status") == "streaming"
            cells["TL"] = str(timeline) if streaming and timeline is not None else UNKNOWN
            cells["LSN"] = _lsn_text(received) if received is not None else UNKNOWN
            if head_lsn is not None and received is not None and received <= head_lsn:
                cells["LAG"] = _size(head_lsn - received)
            elif isinstance(row.get("lag_bytes"), int):
                cells["LAG"] = _size(int(row["lag_bytes"]))
            else:
                cells["LAG"] = UNKNOWN
            replayed = _lsn(row.get("replay_lsn"))
            cells["REPLAY"] = (
                _size(max(0, received - replayed))
                if received is not None and replayed is not None else UNKNOWN
            )
            delay = row.get("replay_lag_s")
            cells["DELAY"] = f"{float(delay):.1f}s" if isinstance(delay, int | float) else UNKNOWN
            upstream = row.get("upstream")
            cells["UPSTREAM"] = (
                addresses.get(str(upstream), str(upstream)) if upstream else NOT_APPLICABLE
            )
        else:
            cells["ROLE"] = role
            for column in ("TL", "LSN", "LAG", "REPLAY", "DELAY", "UPSTREAM"):
                cells[column] = UNKNOWN
        table.append(cells)
    return table


def _layout(table: Sequence[Mapping[str, str]], columns: Sequence[_Column]) -> list[str]:
    cells = [[c.header for c in columns]] + [[row[c.header] for c in columns] for row in table]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in cells]


def render_nodes(rows: Sequence[Mapping[str, Any]], primary: str | None,
                 width: int = DEFAULT_WIDTH) -> list[str]:
    """The node table within ``width`` columns: the least needed columns are left
    out until it fits (a breaker that is not closed is then noted below)."""
    table = node_cells(rows, primary)
    columns = list(TABLE_COLUMNS)
    lines = _layout(table, columns)
    while max(len(line) for line in lines) > width:
        optional = [c for c in columns if c.keep < _ESSENTIAL]
        if not optional:
            break
        columns.remove(min(optional, key=lambda c: c.keep))
        lines = _layout(table, columns)
    shown = {c.header for c in columns}
    for row, cells in zip(rows, table, strict=True):
        notes = []
        if "BREAKER" not in shown and cells["BREAKER"] not in ("closed", NOT_APPLICABLE):
            notes.append(f"breaker {cells['BREAKER']}")
        if row.get("error"):
            notes.append(str(row["error"]))
        if notes:
            lines.append(_clip(f"  {cells['NODE']}: " + "; ".join(notes), width))
    return lines


def _maintenance(result: Mapping[str, Any]) -> list[str]:
    listed = result.get("maintenance")
    if isinstance(listed, list | tuple):
        return [str(n) for n in listed]
    return [str(r.get("name")) for r in result.get("nodes") or [] if r.get("maintenance")]


def status_header(result: Mapping[str, Any], width: int = DEFAULT_WIDTH) -> list[str]:
    """Where the view comes from and the cluster-wide flags, within ``width``."""
    if result.get("source") != "controller":
        return _wrap(f"(probed directly: no controller answering at {result.get('api')})", width)
    flags = [f"primary {result.get('primary') or 'none'}", f"mode {result.get('mode')}"]
    if result.get("paused"):
        flags.append("PAUSED")
    maintenance = _maintenance(result)
    if maintenance:
        flags.append(f"maintenance {' '.join(maintenance)}")
    if result.get("failover_in_flight"):
        flags.append(f"failover to {result['failover_in_flight']} in flight")
    if result.get("rejoining"):
        flags.append(f"rejoining {' '.join(str(n) for n in result['rejoining'])}")
    flags.append(f"round {result.get('rounds')} ({result.get('last_round_ms')} ms)")
    lines = _wrap_items(f"(from the controller at {result.get('api')})", flags, width)
    blocked = result.get("failover_blocked")
    if isinstance(blocked, Mapping):
        why = blocked.get("message") or blocked.get("reason") or "see 'hacontrol history'"
        lines.extend(_wrap(f"failover BLOCKED: {why}", width))
        if blocked.get("way_out"):
            lines.extend(_wrap(f"  way out: {blocked['way_out']}", width, indent="    "))
    return lines


def render_status(result: dict[str, Any], width: int | None = None,
                  max_events: int = 5) -> str:
    """The human status view: where it came from, the table, the latest events;
    every line within ``width`` columns (default: the terminal's, 80 without one)."""
    width = width or terminal_width()
    rows = result.get("nodes") or []
    lines = status_header(result, width)
    lines.extend(render_nodes(rows, cluster_primary(result), width))
    events = (result.get("events") or [])[-max_events:] if max_events > 0 else []
    if events:
        lines.append("")
        lines.append("latest events (UTC):")
        lines.extend(_clip("  " + _event_line(e, compact=True), width) for e in events)
    return "\n".join(lines)


def _status_once(config: Config, client: ApiClient) -> dict[str, Any]:
    snap = _status_from_api(client)
    if snap is not None:
        return {"source": "controller", "api": client.address, **snap}
    return {"source": "direct probe", "api": client.address, **_status_direct(config)}


@main.command()
@config_option
@api_options
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
    config = _load(config_path)
    client = ApiClient.for_config(config, api_address, use_proxy)
    shown = 0
    result: dict[str, Any] = {}
    redraw = watch and not as_json and sys.stdout.isatty()
    try:
        while True:
            result = _status_once(config, client)
            if as_json:
                from hacontrol.api import honest_snapshot

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


@main.command()
@config_option
@api_options
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
    from hacontrol.journal import Journal, matches, parse_since

    since: float | None = None
    if since_text is not None:
        try:
            since = parse_since(since_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    node_set, kind_set = _names(nodes), _names(kinds)
    config = _load(config_path)
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
                _exit(EXIT_USAGE, f"error: {body.get('error')}")
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
            _exit(EXIT_FAILED, f"error: cannot read {config.journal}: {exc.strerror or exc}")
    records = records[-limit:]
    what = []
    if kind_set:
        what.append(f"kind {','.join(sorted(kind_set))}")
    if node_set:
        what.append(f"node {','.join(sorted(node_set))}")
    if since is not None:
        what.append(f"since {_stamp(since)}")
    matching = f" matching {', '.join(what)}" if what else ""
    if not records:
        click.echo(f"no events recorded{matching} ({source})")
        return
    click.echo(f"({len(records)} events{matching} from the {source}; times are UTC)",
               err=as_json)
    for record in records:
        click.echo(json.dumps(record) if as_json else _event_line(record))


# -- commands through the API


def _post(config: Config, api_address: str | None, use_proxy: bool, kind: str,
          body: dict[str, Any]) -> tuple[ApiClient, int, dict[str, Any]]:
    client = ApiClient.for_config(config, api_address, use_proxy)
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


def _simple(config_path: str, api_address: str | None, use_proxy: bool, kind: str,
            body: dict[str, Any]) -> NoReturn:
    config = _load(config_path)
    _, code, answer = _post(config, api_address, use_proxy, kind, body)
    sys.exit(_result(code, answer))


@main.command()
@config_option
@api_options
def pause(config_path: str, api_address: str | None, use_proxy: bool) -> None:
    """Stop automatic actions (probing, reporting and the API go on)."""
    _simple(config_path, api_address, use_proxy, "pause", {})


@main.command()
@config_option
@api_options
def resume(config_path: str, api_address: str | None, use_proxy: bool) -> None:
    """Act on failures again after a pause."""
    _simple(config_path, api_address, use_proxy, "resume", {})


@main.command()
@config_option
@api_options
@click.argument("node")
@click.argument("state", type=click.Choice(["on", "off"]))
def maintenance(config_path: str, api_address: str | None, use_proxy: bool, node: str,
                state: str) -> None:
    """Put NODE in maintenance (never promoted, its failure starts no failover) or take it out."""
    _simple(config_path, api_address, use_proxy, "maintenance",
            {"node": node, "on": state == "on"})


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
    query = urllib.parse.urlencode({"limit": 50, "kind": ",".join(kinds), "since": since})
    try:
        code, answer = client.get(f"/history?{query}")
    except Unreachable:
        return ""
    records = answer.get("events") if code == 200 and isinstance(answer, dict) else None
    for record in reversed(records or []):
        if record.get("kind") in kinds and float(record.get("ts") or 0) >= since:
            return str(record.get("message") or "")
    return ""


def _node_row(snap: Mapping[str, Any] | None, name: str | None) -> Mapping[str, Any]:
    for row in (snap or {}).get("nodes") or []:
        if row.get("name") == name:
            found: Mapping[str, Any] = row
            return found
    return {}


def change_plan(kind: str, before: Mapping[str, Any] | None, body: Mapping[str, Any]) -> list[str]:
    """What a switchover or failover is about to do, for the confirmation prompt."""
    old = before.get("primary") if before else None
    old_text = str(old) if old else "the current primary (unknown: the controller did not say)"
    target = body.get("to")
    if kind == "switchover":
        new = str(target) if target else "the best candidate (the controller picks it)"
        return [
            f"switchover: the primary moves from {old_text} to {new}.",
            "Writes pause briefly (usually a few seconds): the old primary stops taking"
            " writes, the new one catches up with it and is promoted, and clients reconnect"
            " to the new primary. No acknowledged write is lost.",
        ]
    old_row = _node_row(before, old)
    if old and old_row:
        state = "writable" if old_row.get("health") == "ok" else str(old_row.get("health"))
        old_text = f"{old} ({state})"
    lag = _node_row(before, target).get("lag_bytes")
    behind = f" ({target} was {_size(int(lag))} behind at the last look)" if isinstance(
        lag, int) else ""
    lines = [
        f"failover: promote {target} now; the primary is {old_text}.",
        f"A failover can lose writes: what {old or 'the old primary'} acknowledged but"
        f" {target} had not received is gone once {target} is promoted{behind}. The old"
        " primary is fenced if it comes back.",
    ]
    if body.get("force"):
        lines.append("--force: the candidate checks (lag, health, priority, maintenance) are"
                     " overridden.")
    return lines


def _confirm(plan: Sequence[str], yes: bool) -> None:
    """Ask before acting, on a terminal only: scripts (stdin not a terminal) and --yes
    go ahead without a question, as before."""
    if yes or not _interactive():
        return
    for line in plan:
        for part in _wrap(line, terminal_width(), indent=""):
            click.echo(part, err=True)
    try:
        go = click.confirm("Proceed?", default=False, err=True)
    except click.Abort:
        go = False
    if not go:
        _exit(EXIT_FAILED, "not done: nothing was changed")


def _change_primary(config: Config, api_address: str | None, use_proxy: bool, kind: str,
                    body: dict[str, Any], wait: bool, timeout: float, yes: bool) -> NoReturn:
    client = ApiClient.for_config(config, api_address, use_proxy)
    before = _status_from_api(client)
    _confirm(change_plan(kind, before, body), yes)
    old = before.get("primary") if before else None
    since = time.time()
    client, code, answer = _post(config, api_address, use_proxy, kind, body)
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
yes_option = click.option("--yes", "-y", "yes", is_flag=True,
                          help="Do not ask for confirmation (never asked when stdin is not a"
                          " terminal).")


def _rejoin_outcome(client: ApiClient, node: str) -> dict[str, Any] | None:
    """The latest node_rejoined / rejoin_failed record of ``node``, if any."""
    query = urllib.parse.urlencode({"limit": 200, "kind": "node_rejoined,rejoin_failed",
                                    "node": node})
    code, answer = client.get(f"/history?{query}")
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
@api_options
@click.argument("node")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the rejoin until it ends.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds --wait waits at most.")
def rejoin(config_path: str, api_address: str | None, use_proxy: bool, node: str, wait: bool,
           timeout: float) -> None:
    """Rejoin NODE as a replica of the primary. With a driver the controller runs the
    procedure (stop, pg_rewind, standby configuration, start, verify); without one,
    this reports that NODE was rejoined by hand and clears its fence."""
    config = _load(config_path)
    client, code, answer = _post(config, api_address, use_proxy, "rejoin", {"node": node})
    result = _result(code, answer)
    if code != 202 or not wait:
        sys.exit(result)
    sys.exit(_wait_for_rejoin(client, node, timeout))


@main.command()
@config_option
@api_options
@click.option("--to", "to", default=None, help="The new primary [default: the best candidate].")
@wait_option
@timeout_option
@yes_option
def switchover(config_path: str, api_address: str | None, use_proxy: bool, to: str | None,
               wait: bool, timeout: float, yes: bool) -> None:
    """Planned change of primary, without data loss. On a terminal it asks first
    (writes pause briefly); --yes does not."""
    config = _load(config_path)
    _change_primary(config, api_address, use_proxy, "switchover", {"to": to} if to else {},
                    wait, timeout, yes)


@main.command()
@config_option
@api_options
@click.option("--to", "to", required=True, help="The node to promote.")
@click.option("--force", is_flag=True,
              help="Promote even where the candidate checks refuse (lag, health, priority 0...).")
@wait_option
@timeout_option
@yes_option
def failover(config_path: str, api_address: str | None, use_proxy: bool, to: str, force: bool,
             wait: bool, timeout: float, yes: bool) -> None:
    """Promote a node now (primary down, manual mode, or a specific node wanted). On a
    terminal it asks first (unreplicated writes can be lost); --yes does not."""
    config = _load(config_path)
    _change_primary(config, api_address, use_proxy, "failover", {"to": to, "force": force},
                    wait, timeout, yes)


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
