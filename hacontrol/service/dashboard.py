"""The web dashboard: a static page at ``/`` kept live over Server-Sent Events.

``GET /`` is the page, ``GET /dashboard/{asset}`` its script and style (shipped in
the package, no CDN, no build step), ``GET /dashboard/stream`` the live feed: one
``update`` event at once, then one whenever a round completes or the journal gains
a record (at most :data:`PUSH_INTERVAL_S` apart), and in any case every
:data:`TICK_S`. Each update carries the ``/status`` view, the records journaled
since the last update, and the nodes' probe latency over the last minute. The page
falls back to polling ``/status`` where the stream cannot be held open.

Nothing here can hold up the controller: a slow client only fills its own socket
buffer (and is dropped after aiohttp-sse's send timeout); the view and latency of
an update are built once per change and shared by every client, only the records
a client has not seen yet are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from hacontrol.redact import redact_text, redact_value

log = structlog.get_logger("hacontrol.dashboard")

# Seconds of probe latency the sparklines show, and the points sent per node.
LATENCY_WINDOW_S = 60.0
LATENCY_POINTS = 120
# Journal records the feed keeps for a client that connects (the page loads more
# from /history).
FEED_RECORDS = 100
# At most four updates a second per client, and one at least every TICK_S.
PUSH_INTERVAL_S = 0.25
TICK_S = 1.0
PING_S = 15.0
# The page's EventSource reconnects this many milliseconds after a lost stream.
RECONNECT_MS = 1000

ASSETS: Mapping[str, str] = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
# The page may load nothing from anywhere but the controller.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """One probe of one node: when (wall clock), and its latency (None: it failed)."""

    at: float
    latency_ms: float | None


class LatencyHistory:
    """The probe latencies of the last :data:`LATENCY_WINDOW_S` seconds, per node."""

    def __init__(self, window_s: float = LATENCY_WINDOW_S, max_samples: int = 4096) -> None:
        self.window_s = window_s
        self._max = max_samples
        self._samples: dict[str, deque[ProbeSample]] = {}

    def record(self, node: str, latency_s: float | None, reachable: bool, at: float) -> None:
        """One probe of ``node``; a failed one is kept as a gap."""
        samples = self._samples.setdefault(node, deque(maxlen=self._max))
        ms = round(latency_s * 1000, 2) if reachable and latency_s is not None else None
        samples.append(ProbeSample(at, ms))
        while samples and samples[0].at < at - self.window_s:
            samples.popleft()

    def keep_only(self, nodes: Iterable[str]) -> None:
        """Forget nodes that left the configuration."""
        wanted = set(nodes)
        for name in [n for n in self._samples if n not in wanted]:
            del self._samples[name]

    def to_json(self, now: float, points: int = LATENCY_POINTS) -> list[dict[str, Any]]:
        """Per node ``{"node": name, "points": [[seconds_ago, ms_or_null], ...]}``, oldest
        first, at most ``points`` (evenly thinned; a failure in a thinned stretch is
        kept, it matters most). A list, not a mapping: node names are data."""
        out: list[dict[str, Any]] = []
        for node, samples in sorted(self._samples.items()):
            recent = [s for s in samples if s.at >= now - self.window_s]
            step = max(1, -(-len(recent) // points))
            chosen: list[Any] = []
            for start in range(0, len(recent), step):
                chunk = recent[start:start + step]
                failed = next((s for s in chunk if s.latency_ms is None), None)
                sample = failed or max(chunk, key=lambda s: s.latency_ms or 0.0)
                chosen.append([round(now - sample.at, 2), sample.latency_ms])
            out.append({"node": node, "points": chosen})
        return out


class DashboardFeed:
    """What the stream sends: bumped by every completed round and journal record."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.latency = LatencyHistory()
        self.records: deque[dict[str, Any]] = deque(maxlen=FEED_RECORDS)
        self.version = 0
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # (version, built at, JSON members): the part of an update every client shares.
        self._shared: tuple[int, float, str] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def round_done(self, probes: Iterable[tuple[str, float | None, bool]]) -> None:
        """A round completed with these ``(node, latency_s, reachable)`` probes."""
        now = self.clock()
        for node, latency_s, reachable in probes:
            self.latency.record(node, latency_s, reachable, now)
        self._bump()

    def record(self, record: dict[str, Any]) -> None:
        """A record was journaled (a journal listener)."""
        self.records.append(redact_value(record))
        self._bump()

    def close(self) -> None:
        """End every stream (the API is shutting down)."""
        self._closed = True
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                # A record journaled from another thread: wake the streams in theirs.
                loop.call_soon_threadsafe(self._changed.set)
                return
        self._changed.set()

    async def wait(self, seen: int, timeout: float) -> None:
        """Until the feed moved past version ``seen``, it closed, or ``timeout`` passed."""
        self._loop = asyncio.get_running_loop()
        if self.version != seen or self._closed:
            return
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def records_after(self, seq: int | None) -> list[dict[str, Any]]:
        """The kept records newer than ``seq`` (all of them for None)."""
        if seq is None:
            return list(self.records)
        return [r for r in self.records if _seq(r) > seq]

    def missed(self, seq: int | None) -> bool:
        """True when records after ``seq`` were already dropped from the feed (a client
        that fell that far behind must reload the history)."""
        return seq is not None and bool(self.records) and _seq(self.records[0]) > seq + 1 \
            and len(self.records) == self.records.maxlen

    def shared_part(self, status: StatusSource) -> str:
        """The view and the latency as JSON members, built once per version (at most
        once per :data:`TICK_S` while nothing changes) for every client."""
        now = self.clock()
        cached = self._shared
        if cached is not None and cached[0] == self.version and now - cached[1] < TICK_S:
            return cached[2]
        view = {k: v for k, v in status().items() if k != "events"}
        text = (
            '"status":' + json.dumps(redact_value(view), default=str, separators=(",", ":"))
            + ',"latency":' + json.dumps(self.latency.to_json(now), separators=(",", ":"))
        )
        self._shared = (self.version, now, text)
        return text


def _seq(record: dict[str, Any]) -> int:
    value = record.get("seq")
    return value if isinstance(value, int) else 0


FEED: web.AppKey[DashboardFeed] = web.AppKey("hacontrol_dashboard_feed")
StatusSource = Callable[[], dict[str, Any]]
STATUS: web.AppKey[StatusSource] = web.AppKey("hacontrol_dashboard_status")


def _asset_text(name: str) -> str:
    return resources.files("hacontrol.service").joinpath("static", name).read_text("utf-8")


async def _page(request: web.Request) -> web.Response:
    response = web.Response(text=_asset_text("index.html"), content_type="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise web.HTTPNotFound(reason=f"no dashboard asset {name!r}")
    response = web.Response(text=_asset_text(name), content_type=ASSETS[name])
    response.headers.update(SECURITY_HEADERS)
    return response


def update_body(shared: str, records: list[dict[str, Any]], at: float, gap: bool) -> str:
    """One update: when, the shared view and latency, this client's new records, and
    whether records it never got were dropped meanwhile (``gap``)."""
    fresh = json.dumps(records, default=str, separators=(",", ":"))
    return f'{{"at":{at!r},{shared},"records":{fresh},"gap":{"true" if gap else "false"}}}'



async def _stream(request: web.Request) -> EventSourceResponse:
    feed, status = request.app[FEED], request.app[STATUS]
    async with sse_response(request, ping_interval=PING_S) as stream:
        # A controller that restarts comes back in about a second; ask for no longer.
        await stream.send("hello", event="hello", retry=RECONNECT_MS)
        last_seq: int | None = None
        seen = -1
        while stream.is_connected() and not feed.closed:
            await feed.wait(seen, TICK_S)
            if feed.closed:
                break
            seen = feed.version
            # Taken before the send: what is journaled while it waits goes next time.
            fresh = feed.records_after(last_seq)
            try:
                body = update_body(feed.shared_part(status), fresh, feed.clock(),
                                   feed.missed(last_seq))
            except Exception as exc:  # headers are sent: no error answer is possible now
                log.error("dashboard_update_failed",
                          error=f"{type(exc).__name__}: {redact_text(str(exc))}")
                break
            try:
                await stream.send(body, event="update")
            except (ConnectionError, TimeoutError, RuntimeError):
                break  # the page went away, or stopped reading for send_timeout
            if fresh:
                last_seq = _seq(fresh[-1])
            await asyncio.sleep(PUSH_INTERVAL_S)
    return stream


def add_dashboard(app: web.Application, feed: DashboardFeed, status: StatusSource) -> None:
    """Serve the page, its assets and the stream from ``app``."""
    app[FEED] = feed
    app[STATUS] = status

    async def close_streams(_app: web.Application) -> None:
        feed.close()

    app.on_shutdown.append(close_streams)
    app.router.add_get("/", _page)
    app.router.add_get("/dashboard/stream", _stream)
    app.router.add_get("/dashboard/{asset}", _asset)
