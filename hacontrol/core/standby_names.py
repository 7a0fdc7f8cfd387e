"""``synchronous_standby_names``: parse it as the primary applies it, write it, compare sets."""

from __future__ import annotations

import re
from collections.abc import Iterable

from hacontrol.core.state import SyncQuorum

__all__ = ["ASYNC", "format_standby_names", "parse_standby_names", "same_set"]

ASYNC = SyncQuorum()
_HEAD_RE = re.compile(r"^\s*(?:(any|first)\s+)?(\d+)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_PLAIN_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_KEYWORDS = frozenset({"any", "first"})


def _split_names(text: str) -> list[str]:
    """Standby names of a comma-separated list; double-quoted names keep commas."""
    names: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == '"' and text[i + 1 : i + 2] == '"':
                current.append('"')
                i += 1
            elif c == '"':
                quoted = False
            else:
                current.append(c)
        elif c == '"':
            quoted = True
        elif c == ",":
            names.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    names.append("".join(current).strip())
    return [n for n in names if n]


def parse_standby_names(
    text: str | None, primary: str | None, nodes: Iterable[str]
) -> SyncQuorum | None:
    """``synchronous_standby_names`` as the set ``primary`` applies (None: unparsable).

    Forms: ``''`` (asynchronous), ``ANY k (...)``, ``FIRST k (...)``, ``k (...)``
    (FIRST) and a bare list (FIRST 1). Names match node names case-insensitively,
    as PostgreSQL matches application names; ``*`` stands for every other node;
    the primary itself is dropped (a server never waits for itself).
    """
    if text is None:
        return None
    if not text.strip():
        return ASYNC
    match = _HEAD_RE.match(text)
    if match is not None:
        method = (match.group(1) or "first").lower()
        k = int(match.group(2))
        raw = _split_names(match.group(3))
    else:
        if "(" in text or ")" in text:
            return None
        method, k, raw = "first", 1, _split_names(text)
    if not raw:
        return None
    by_lower = {n.lower(): n for n in nodes}
    own = primary.lower() if primary is not None else None
    if "*" in raw:
        members = {n for n in by_lower.values() if n.lower() != own}
    else:
        members = {by_lower.get(n.lower(), n) for n in raw if n.lower() != own}
    if k <= 0 or not members:
        return ASYNC
    return SyncQuorum(frozenset(members), k, method)


def _quote(name: str) -> str:
    if _PLAIN_NAME_RE.match(name) and name.lower() not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def format_standby_names(k: int, members: Iterable[str]) -> str:
    """``ANY k (a, b)``; empty (asynchronous) when k is 0 or there is no member."""
    names = sorted(set(members))
    if k <= 0 or not names:
        return ""
    return f"ANY {k} ({', '.join(_quote(n) for n in names)})"


def same_set(a: SyncQuorum | None, b: SyncQuorum | None) -> bool:
    """True when two sets make commits wait for the same thing."""
    if a is None or b is None:
        return a is b
    if not a.synchronous and not b.synchronous:
        return True
    return (a.members, a.k, a.method) == (b.members, b.k, b.method)
