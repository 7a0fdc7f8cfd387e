"""The dashboard's server side without a database: the page and its assets (nothing
from elsewhere), the stream's events, the feed's latency window, redaction."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from hacontrol.service.api import build_app
from hacontrol.service.dashboard import (
    FEED_RECORDS,
    LATENCY_POINTS,
    DashboardFeed,
    LatencyHistory,
    update_body,
)
from tests.unit.test_api import FakeBackend

STATIC = Path(__file__).resolve().parents[2] / "hacontrol" / "service" / "static"


async def _events(client: TestClient[Any, Any], count: int, timeout: float = 5.0) -> list[
        tuple[str, str]]:
    """The first ``count`` (event, data) pairs of the stream."""
    response = await client.get("/dashboard/stream")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    found: list[tuple[str, str]] = []
    event, data = "message", ""

    async def read() -> None:
        nonlocal event, data
        while len(found) < count:
            line = (await response.content.readline()).decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif line == "" and data:
                found.append((event, data))
                event, data = "message", ""

    await asyncio.wait_for(read(), timeout)
    response.close()
    return found


async def test_the_page_and_its_assets_come_from_the_controller_only() -> None:
    async with TestClient(TestServer(build_app(FakeBackend()))) as client:
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        for asset, kind in (("dashboard.js", "application/javascript"),
                            ("dashboard.css", "text/css")):
            assert f"/dashboard/{asset}" in html
            response = await client.get(f"/dashboard/{asset}")
            assert response.status == 200 and response.content_type == kind
        for missing in ("/dashboard/index.py", "/dashboard/..%2Fapi.py", "/dashboard/x.js"):
            assert (await client.get(missing)).status == 404
    # No address outside the controller in anything the page loads.
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (STATIC / name).read_text()
        addresses = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"']*", text)
        # The SVG namespace is a name, not something fetched.
        assert [a for a in addresses if a != "http://www.w3.org/2000/svg"] == [], name
        assert "@import" not in text and "fonts.googleapis" not in text


async def test_the_stream_says_hello_then_sends_the_view_and_new_records() -> None:
    backend = FakeBackend()
    backend.snap["events"] = [{"seq": 1, "kind": "old"}]
    feed = DashboardFeed()
    feed.record({"seq": 5, "ts": 1.0, "kind": "primary_failed", "node": "pg1"})
    feed.round_done([("pg1", 0.002, True), ("pg2", None, False)])
    async with TestClient(TestServer(build_app(backend, feed=feed))) as client:
        events = await _events(client, 2)
    assert events[0][0] == "hello"
    kind, data = events[1]
    assert kind == "update"
    update = json.loads(data)
    assert update["status"]["primary"] == "pg1" and "events" not in update["status"]
    assert [r["seq"] for r in update["records"]] == [5] and update["gap"] is False
    latency = {entry["node"]: entry["points"] for entry in update["latency"]}
    assert latency["pg1"][0][1] == 2.0 and latency["pg2"][0][1] is None


async def test_an_idle_stream_still_updates_every_tick_and_ends_on_shutdown() -> None:
    feed = DashboardFeed()
    async with TestClient(TestServer(build_app(FakeBackend(), feed=feed))) as client:
        events = await _events(client, 3, timeout=4.0)
        assert [e for e, _ in events] == ["hello", "update", "update"]
        response = await client.get("/dashboard/stream")
        assert response.status == 200
        started = asyncio.get_running_loop().time()
        await client.server.runner.shutdown()  # type: ignore[union-attr]
        assert feed.closed
        rest = await asyncio.wait_for(response.content.read(), 5)
        assert b"event: hello" in rest
        assert asyncio.get_running_loop().time() - started < 3


def test_records_after_a_sequence_number_and_a_client_that_fell_behind() -> None:
    feed = DashboardFeed()
    for seq in (1, 2, 3):
        feed.record({"seq": seq, "kind": "k"})
    assert [r["seq"] for r in feed.records_after(None)] == [1, 2, 3]
    assert [r["seq"] for r in feed.records_after(2)] == [3]
    assert feed.records_after(3) == []
    assert not feed.missed(1)
    for seq in range(4, FEED_RECORDS + 10):
        feed.record({"seq": seq, "kind": "k"})
    assert feed.missed(2) and not feed.missed(FEED_RECORDS)


def test_the_shared_part_is_built_once_per_change() -> None:
    now = [100.0]
    feed = DashboardFeed(clock=lambda: now[0])
    calls: list[int] = []

    def status() -> dict[str, Any]:
        calls.append(1)
        return {"primary": "pg1", "events": ["left out"]}

    first = feed.shared_part(status)
    assert feed.shared_part(status) == first and len(calls) == 1
    assert "left out" not in first
    feed.round_done([("pg1", 0.001, True)])
    feed.shared_part(status)
    assert len(calls) == 2
    now[0] += 2.0  # idle: rebuilt once a tick
    feed.shared_part(status)
    assert len(calls) == 3


async def test_a_record_journaled_from_another_thread_wakes_the_stream() -> None:
    feed = DashboardFeed()
    waiter = asyncio.create_task(feed.wait(feed.version, 5.0))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    await asyncio.to_thread(feed.record, {"seq": 1, "kind": "k"})
    await asyncio.wait_for(waiter, 2.0)
    assert asyncio.get_running_loop().time() - started < 1.0


def test_latency_keeps_a_minute_and_thins_without_losing_failures() -> None:
    history = LatencyHistory(window_s=60.0)
    for i in range(1000):  # ten per second for 100 s
        at = 1000.0 + i / 10
        failed = i == 950
        history.record("pg1", None if failed else 0.001 * (1 + i % 3), not failed, at)
    (entry,) = history.to_json(now=1100.0)
    assert entry["node"] == "pg1"
    points = entry["points"]
    assert len(points) <= LATENCY_POINTS
    assert all(0 <= ago <= 60.0 for ago, _ in points)
    assert [ms for _, ms in points].count(None) == 1
    assert max(ms for _, ms in points if ms is not None) == 3.0
    history.keep_only(["pg2"])
    assert history.to_json(now=1100.0) == []


def test_an_update_never_carries_a_password_and_keeps_node_names() -> None:
    feed = DashboardFeed()
    feed.record({"seq": 1, "kind": "x", "message": "connect to postgresql://u:s3cret@h/db"})
    feed.round_done([("pg-secret1", 0.001, True)])
    shared = feed.shared_part(lambda: {"nodes": [{"dsn": "host=h password=s3cret"}]})
    body = update_body(shared, feed.records_after(None), 1.0, False)
    assert "s3cret" not in body
    update = json.loads(body)
    assert update["latency"][0]["node"] == "pg-secret1" and update["latency"][0]["points"]


async def test_a_failing_view_ends_the_stream_instead_of_breaking_the_response() -> None:
    backend = FakeBackend()
    backend.fail = RuntimeError("view broken")
    async with TestClient(TestServer(build_app(backend))) as client:
        response = await client.get("/dashboard/stream")
        assert response.status == 200
        rest = await asyncio.wait_for(response.content.read(), 5)
        assert b"event: hello" in rest and b"event: update" not in rest
        # The API goes on answering.
        assert (await client.get("/dashboard/dashboard.css")).status == 200
