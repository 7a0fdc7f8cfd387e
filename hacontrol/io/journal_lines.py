"""Reading journal files: lines from the end backwards, records, and the filters
:meth:`hacontrol.io.journal.Journal.read` applies."""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

# Bytes read per step when walking a file backwards: a few dozen records.
READ_BLOCK = 64 * 1024

_TS_RE = re.compile(rb'"ts"\s*:\s*(-?[0-9][0-9.eE+-]*)')


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The record a journal line holds, None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:  # a torn line (a crash mid-write) or bytes that are not UTF-8
        return None
    return record if isinstance(record, dict) else None


def lines_backwards(path: Path, block: int = READ_BLOCK) -> Iterator[bytes]:
    """The non-empty lines of ``path``, last first, without their newline; nothing
    if the file does not exist. Reads ``block`` bytes at a time from the end."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        partial = b""
        while position > 0:
            size = min(block, position)
            position -= size
            handle.seek(position)
            lines = (handle.read(size) + partial).split(b"\n")
            # The first piece may be the end of a line that starts in an earlier block.
            partial = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if partial:
            yield partial


def record_ts(line: bytes) -> float | None:
    """A line's ``ts`` without parsing the whole record (None: none found)."""
    match = _TS_RE.search(line)
    if match is None:
        return None
    try:
        return float(match[1])
    except ValueError:
        return None


_DURATION_RE = re.compile(
    r"^(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|weeks?)$", re.IGNORECASE
)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """The wall-clock time (seconds since the epoch) a ``since`` value names.

    Accepted: a duration back from ``now`` (``90s``, ``10m``, ``2h``, ``1d``, ``1w``),
    an ISO 8601 time (``2026-12-01T21:40:12Z``, ``2026-12-01 21:40``; without an
    offset it is UTC), or seconds since the epoch (``1764625212``). Raises
    ValueError with a message saying what is accepted.
    """
    value = text.strip()
    duration = _DURATION_RE.match(value)
    if duration is not None:
        unit = duration[2][0].lower()
        return (time.time() if now is None else now) - float(duration[1]) * _UNIT_S[unit]
    try:
        return float(value) if re.fullmatch(r"\d+(?:\.\d+)?", value) else _iso(value)
    except ValueError:
        raise ValueError(
            f"not a time: {text[:40]!r}; give a duration back from now (90s, 10m, 2h, 1d),"
            " an ISO 8601 time (2026-12-01T21:40:12Z; UTC without an offset) or seconds"
            " since the epoch"
        ) from None


def _iso(value: str) -> float:
    when = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def matches(
    record: Mapping[str, Any],
    kinds: Collection[str] | None = None,
    nodes: Collection[str] | None = None,
    since: float | None = None,
) -> bool:
    """Whether ``record`` passes the filters :meth:`Journal.read` applies."""
    if kinds is not None and record.get("kind") not in kinds:
        return False
    if nodes is not None and record.get("node") not in nodes:
        return False
    if since is not None:
        try:
            return float(record.get("ts") or 0.0) >= since
        except (TypeError, ValueError):
            return False
    return True
