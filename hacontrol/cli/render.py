"""The command line's text for people: the status view (header, node table, latest
events), journal records on one line, and the widths they fit into."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import sys
import textwrap
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_WIDTH = 80
# Shown for a value that is not known this round; "-" is for one that does not apply.
UNKNOWN = "?"
NOT_APPLICABLE = "-"


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


def stamp(ts: Any, compact: bool = False) -> str:
    """A journal time as UTC, marked so: ``2026-12-01 21:40:12.345Z``, or
    ``12-01 21:40:12Z`` when ``compact``."""
    try:
        when = datetime.datetime.fromtimestamp(float(ts or 0), datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return "?" * (15 if compact else 24)
    if compact:
        return f"{when:%m-%d %H:%M:%S}Z"
    return f"{when:%Y-%m-%d %H:%M:%S.%f}"[:-3] + "Z"


def event_line(record: Mapping[str, Any], compact: bool = False) -> str:
    """One journal record on one line; ``compact`` leaves more room for its text
    (the status view, where lines are clipped to the terminal)."""
    node = record.get("node") or "-"
    text = record.get("message") or record.get("detail") or record.get("reason") or ""
    if compact:
        return f"{stamp(record.get('ts'), True)} {record.get('kind', '?'):<20} {node:<4} {text}"
    return f"{stamp(record.get('ts'))}  {record.get('kind', '?'):<22} {node:<8} {text}"


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."


def wrap(text: str, width: int, indent: str = "  ") -> list[str]:
    """``text`` in lines of ``width`` columns (20 at least), the later ones indented."""
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
    return [part for text in lines for part in wrap(text, width)]


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


def human_bytes(count: int) -> str:
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
                cells["LAG"] = human_bytes(head_lsn - received)
            elif isinstance(row.get("lag_bytes"), int):
                cells["LAG"] = human_bytes(int(row["lag_bytes"]))
            else:
                cells["LAG"] = UNKNOWN
            replayed = _lsn(row.get("replay_lsn"))
            cells["REPLAY"] = (
                human_bytes(max(0, received - replayed))
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
        return wrap(f"(probed directly: no controller answering at {result.get('api')})", width)
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
        lines.extend(wrap(f"failover BLOCKED: {why}", width))
        if blocked.get("way_out"):
            lines.extend(wrap(f"  way out: {blocked['way_out']}", width, indent="    "))
    return lines


def render_status(result: dict[str, Any], width: int | None = None,
                  max_events: int = 5) -> str:
    """The human status view: where it came from, the table, the latest events;
    every line within ``width`` columns (default: the terminal's, 80 without one)."""
    width = width or terminal_width()
    rows = result.get("nodes") or []
    lines = status_header(result, width)
    lines.extend(render_nodes(rows, cluster_primary(result), width))
    lines.extend(_clip(line, width) for line in slot_lines(rows))
    lines.extend(_clip(line, width) for line in controllers_lines(result.get("controllers")))
    events = (result.get("events") or [])[-max_events:] if max_events > 0 else []
    if events:
        lines.append("")
        lines.append("latest events (UTC):")
        lines.extend(_clip("  " + event_line(e, compact=True), width) for e in events)
    return "\n".join(lines)


def slot_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per replication slot: where, kind, active, WAL retained, sync state."""
    lines: list[str] = []
    for row in rows:
        for slot in row.get("slots") or ():
            retained = slot.get("retained_bytes")
            text = (f"  {row.get('name')}: {slot.get('name')} {slot.get('kind')}"
                    f" {'active' if slot.get('active') else 'inactive'}"
                    f", retains {human_bytes(retained) if retained is not None else '-'}")
            if slot.get("synced"):
                text += ", synced"
            if not slot.get("valid", True):
                text += f", INVALID ({slot.get('wal_status') or 'invalidated'})"
            lines.append(text)
    return ["", "replication slots:", *lines] if lines else []


def controllers_lines(controllers: dict[str, Any] | None) -> list[str]:
    """The controllers of a ``[dcs]`` scope: who leads, with which epoch, last seen."""
    if not controllers:
        return []
    lines = ["", "controllers (etcd " + ("up" if controllers.get("dcs_up") else
                                         f"DOWN: {controllers.get('dcs') or 'no answer'}") + "):"]
    members = controllers.get("members") or []
    if not members:
        lines.append("  none seen yet")
    for member in members:
        name = str(member.get("name"))
        role = str(member.get("role") or "standby")
        epoch = member.get("epoch")
        seen = member.get("last_seen_s")
        mark = "*" if name == controllers.get("name") else " "
        lines.append(
            f" {mark}{name:<16} {role:<8} "
            f"{'epoch ' + str(epoch) if role == 'leader' and epoch is not None else '':<12} "
            f"{'seen ' + format(seen, 'g') + ' s ago' if seen is not None else 'never seen'}"
            f"{'  api ' + str(member['api']) if member.get('api') else ''}"
        )
    if controllers.get("leader") is None:
        lines.append("  no controller leads now: no automatic failover until one does")
    return lines

