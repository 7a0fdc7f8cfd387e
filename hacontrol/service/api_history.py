"""``GET /history``: the validated query, and the answer built in a worker thread."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from hacontrol.io.journal_lines import matches, parse_since
from hacontrol.redact import might_hold_secret, redact_value
from hacontrol.service.api_input import BadInput, int_param, names_param

DEFAULT_HISTORY = 100
MAX_HISTORY = 10_000


class HistorySource(Protocol):
    """Where the events come from (the API's backend)."""

    def history(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` journal events, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """What ``GET /history`` asks for: the last ``limit`` events that match."""

    limit: int = DEFAULT_HISTORY
    kinds: frozenset[str] | None = None
    nodes: frozenset[str] | None = None
    since: float | None = None

    @property
    def filtered(self) -> bool:
        return self.kinds is not None or self.nodes is not None or self.since is not None


def history_query(request: web.Request) -> HistoryQuery:
    """The validated query of a ``GET /history`` request (400 on bad input)."""
    limit = int_param(request, "limit", 1, MAX_HISTORY) or DEFAULT_HISTORY
    since: float | None = None
    raw = request.query.get("since")
    if raw is not None:
        try:
            since = parse_since(raw)
        except ValueError as exc:
            raise BadInput(f"since: {exc}") from None
    return HistoryQuery(limit, names_param(request, "kind"), names_param(request, "node"),
                        since)


def scrub_events(events: list[dict[str, Any]]) -> list[Any]:
    """``events`` as redact_value would leave them, at a fraction of its cost."""
    return [
        redact_value(event)
        if might_hold_secret(json.dumps(event, ensure_ascii=False, default=str))
        else event
        for event in events
    ]


def history_body(backend: HistorySource, query: HistoryQuery, filters: bool) -> str:
    """The JSON answer to ``query`` (runs in a worker thread)."""
    if not query.filtered:
        events = backend.history(query.limit)
    elif filters:
        history: Callable[..., list[dict[str, Any]]] = backend.history
        events = history(query.limit, kinds=query.kinds, nodes=query.nodes, since=query.since)
    else:
        found = [e for e in backend.history(MAX_HISTORY)
                 if matches(e, query.kinds, query.nodes, query.since)]
        events = found[-query.limit:]
    return json.dumps({"events": scrub_events(events)}, default=str, separators=(",", ":"))


def takes_history_filters(backend: HistorySource) -> bool:
    """Whether ``backend.history`` accepts ``kinds``, ``nodes`` and ``since``."""
    try:
        parameters = inspect.signature(backend.history).parameters
    except (TypeError, ValueError):
        return False
    return {"kinds", "nodes", "since"} <= set(parameters)


