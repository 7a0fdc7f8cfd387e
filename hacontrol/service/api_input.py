"""Validation of the API's request input: a malformed value is answered with 400."""

from __future__ import annotations

import re

from aiohttp import web

# At most this many names in one filter.
MAX_FILTERS = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


class BadInput(Exception):
    """Malformed request input: answered with 400 and this message."""


def int_param(request: web.Request, name: str, low: int, high: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    allowed = f"a whole number from {low} to {high}" if high is not None else (
        f"a whole number >= {low}"
    )
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name}: must be {allowed} (got {raw[:40]!r})") from None
    if value < low or (high is not None and value > high):
        raise BadInput(f"{name}: must be {allowed} (got {value})")
    return value


def names_param(request: web.Request, name: str) -> frozenset[str] | None:
    """``name=a&name=b`` and ``name=a,b`` alike; None when not given."""
    raw = request.query.getall(name, [])
    if not raw:
        return None
    names = {part.strip() for value in raw for part in value.split(",") if part.strip()}
    if not names:
        raise BadInput(f"{name}: give at least one name (e.g. {name}=a,b)")
    if len(names) > MAX_FILTERS:
        raise BadInput(f"{name}: at most {MAX_FILTERS} names (got {len(names)})")
    for value in sorted(names):
        if not _NAME_RE.match(value):
            raise BadInput(f"{name}: not a name: {value[:40]!r}")
    return frozenset(names)
