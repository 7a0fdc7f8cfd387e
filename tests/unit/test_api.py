"""The HTTP API against a fake backend: every endpoint, HEAD, auth, 400/404, no token in logs."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from hacontrol.redact import redact_value
from hacontrol.service.api import (
    HISTORY_WORKERS,
    SubmitResult,
    bound_address,
    build_app,
    start_api,
)
from hacontrol.service.api_history import MAX_HISTORY, scrub_events
from hacontrol.service.logs import configure_logging

TOKEN = "tok-9f8e7d6c5b4a3f2e1d0c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MISSING = "missing bearer token; send it in an Authorization header, scheme Bearer"


def node(name: str, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "dsn": f"host=10.0.0.{name[-1]} port=5433 user=hacontrol password=***",
        "priority": 100,
        "reachable": True,
        "role": "replica",
        "timeline": 1,
        "lsn": "0/3000060",
        "replay_lsn": "0/3000060",
        "lag_bytes": 0,
        "replay_lag_s": 0.0,
        "upstream": "10.0.0.1:5433",
        "receiver_status": "streaming",
        "read_only": True,
        "health": "ok",
        "fenced": False,
        "maintenance": False,
        "breaker": "closed",
        "error": None,
        "probe_ms": 0.8,
    }
    row.update(over)
    return row


def cluster() -> dict[str, Any]:
    return {
        "primary": "pg1",
        "mode": "automatic",
        "paused": False,
        "failover_in_flight": None,
        "rounds": 42,
        "last_round_ms": 3.1,
        "nodes": [
            node("pg1", role="primary", lag_bytes=None, upstream=None, receiver_status=None,
                 read_only=False, replay_lag_s=None),
            node("pg2", lag_bytes=128),
            node("pg3", lag_bytes=5_000_000),
        ],
    }


class FakeBackend:
    def __init__(self) -> None:
        self.snap = cluster()
        self.limits: list[int] = []
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.result = SubmitResult(True, 202, "accepted", {"id": 7})
        self.fail: Exception | None = None

    def node(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(n for n in self.snap["nodes"] if n["name"] == name)
        return found

    def snapshot(self) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        return copy.deepcopy(self.snap)

    def history(self, limit: int) -> list[dict[str, Any]]:
        self.limits.append(limit)
        return [{"kind": "controller_started", "n": i} for i in range(min(limit, 3))]

    def metrics(self) -> bytes:
        return b"# TYPE hacontrol_failovers_total counter\nhacontrol_failovers_total 0.0\n"

    async def submit(self, kind: str, params: dict[str, Any]) -> SubmitResult:
        self.submitted.append((kind, params))
        return self.result


@asynccontextmanager
async def api(backend: FakeBackend, token: str = TOKEN) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(backend, token))) as client:
        yield client


async def get_json(client: TestClient[Any, Any], path: str, status: int) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    return await response.json()


# ---------------------------------------------------------------- reading


async def test_health_and_status() -> None:
    backend = FakeBackend()
    backend.node("pg3")["error"] = "connection to host=pg3 password=hunter2 failed"
    async with api(backend) as client:
        assert await get_json(client, "/health", 200) == {
            "status": "ok", "rounds": 42, "last_round_ms": 3.1,
        }
        status = await get_json(client, "/status", 200)
    assert status["primary"] == "pg1" and [n["name"] for n in status["nodes"]] == [
        "pg1", "pg2", "pg3",
    ]
    assert status["nodes"][2]["error"] == "connection to host=pg3 password=*** failed"


async def test_history_limit() -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        body = await get_json(client, "/history", 200)
        assert len(body["events"]) == 3
        await get_json(client, "/history?limit=2", 200)
        assert backend.limits == [100, 2]
        for bad in ("0", "-1", "x", str(MAX_HISTORY + 1)):
            error = await get_json(client, f"/history?limit={bad}", 400)
            assert error["error"].startswith("limit: must be a whole number from 1 to 10000")
    assert backend.limits == [100, 2]


async def test_primary_address() -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        assert await get_json(client, "/primary", 200) == {
            "primary": "pg1", "host": "10.0.0.1", "port": 5433, "timeline": 1,
        }
        backend.node("pg1")["reachable"] = False
        body = await get_json(client, "/primary", 503)
        assert body["error"] == "primary pg1 is unreachable" and body["host"] == "10.0.0.1"
        backend.snap["primary"] = None
        assert await get_json(client, "/primary", 503) == {
            "error": "no known primary", "primary": None,
        }


async def test_node_primary_check() -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        body = await get_json(client, "/nodes/pg1/primary", 200)
        assert body["healthy"] is True and body["check"] == "primary"
        head = await client.head("/nodes/pg1/primary")
        assert head.status == 200 and await head.read() == b""
        body = await get_json(client, "/nodes/pg2/primary", 503)
        assert body["reason"] == "not the primary (the primary is pg1)"
        assert (await client.head("/nodes/pg2/primary")).status == 503
        for field, value, reason in [
            ("fenced", True, "fenced"),
            ("read_only", True, "read-only"),
            ("role", "unknown", "role is unknown"),
            ("reachable", False, "unreachable"),
        ]:
            backend.snap = cluster()
            backend.node("pg1")[field] = value
            assert (await get_json(client, "/nodes/pg1/primary", 503))["reason"] == reason
        backend.snap = cluster()
        backend.snap["primary"] = None
        assert (await get_json(client, "/nodes/pg1/primary", 503))["reason"] == "no known primary"


async def test_node_replica_check() -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        assert (await get_json(client, "/nodes/pg2/replica", 200))["healthy"] is True
        assert (await get_json(client, "/nodes/pg3/replica", 200))["lag_bytes"] == 5_000_000
        assert (await get_json(client, "/nodes/pg2/replica?max_lag=1000", 200))["healthy"]
        body = await get_json(client, "/nodes/pg3/replica?max_lag=1000", 503)
        assert body["reason"] == "lag 5000000 bytes > max_lag 1000"
        head = await client.head("/nodes/pg3/replica?max_lag=1000")
        assert head.status == 503 and await head.read() == b""
        assert (await client.head("/nodes/pg2/replica")).status == 200
        body = await get_json(client, "/nodes/pg1/replica", 503)
        assert body["reason"] == "role is primary"
        for field, value, reason in [
            ("fenced", True, "fenced"),
            ("maintenance", True, "in maintenance"),
            ("receiver_status", "waiting", "not streaming (receiver: waiting)"),
            ("receiver_status", None, "not streaming (receiver: none)"),
            ("reachable", False, "unreachable"),
            ("lag_bytes", None, "lag unknown (no primary to measure against)"),
        ]:
            backend.snap = cluster()
            backend.node("pg2")[field] = value
            body = await get_json(client, "/nodes/pg2/replica?max_lag=1000", 503)
            assert body["reason"] == reason
        for bad in ("-1", "1k", ""):
            body = await get_json(client, f"/nodes/pg2/replica?max_lag={bad}", 400)
            assert body["error"].startswith("max_lag: must be a whole number >= 0")


async def test_unknown_node_is_404_for_get_and_head() -> None:
    async with api(FakeBackend()) as client:
        body = await get_json(client, "/nodes/pg9/replica", 404)
        assert body == {"error": "unknown node 'pg9'; known nodes: pg1, pg2, pg3"}
        assert (await client.head("/nodes/pg9/primary")).status == 404


async def test_metrics() -> None:
    async with api(FakeBackend()) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "hacontrol_failovers_total 0.0" in await response.text()


async def test_unknown_path_and_wrong_method_answer_json() -> None:
    async with api(FakeBackend()) as client:
        assert (await get_json(client, "/nope", 404))["error"] == "Not Found"
        response = await client.get("/switchover")
        assert response.status == 405 and response.headers["Allow"] == "POST"
        assert (await response.json())["error"] == "Method Not Allowed"


async def test_backend_failure_is_a_500_without_details() -> None:
    backend = FakeBackend()
    backend.fail = RuntimeError("boom")
    async with api(backend) as client:
        body = await get_json(client, "/status", 500)
    assert body == {"error": "internal error; see the controller's log"}


# ---------------------------------------------------------------- commands


async def test_command_with_the_right_token_reaches_the_backend() -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        response = await client.post("/switchover", json={"to": "pg2"}, headers=AUTH)
        assert response.status == 202
        assert await response.json() == {"id": 7, "ok": True, "message": "accepted"}
        response = await client.post("/pause", headers=AUTH)  # no body at all
        assert response.status == 202
        response = await client.post(
            "/failover", json={"to": "pg3", "force": True},
            headers={"Authorization": f"bearer  {TOKEN} "},
        )
        assert response.status == 202
        for path, payload in [
            ("/resume", {}),
            ("/maintenance", {"node": "pg2", "on": True}),
            ("/rejoin", {"node": "pg1"}),
            ("/switchover", {}),
        ]:
            assert (await client.post(path, json=payload, headers=AUTH)).status == 202
    assert backend.submitted == [
        ("switchover", {"to": "pg2"}),
        ("pause", {}),
        ("failover", {"to": "pg3", "force": True}),
        ("resume", {}),
        ("maintenance", {"node": "pg2", "on": True}),
        ("rejoin", {"node": "pg1"}),
        ("switchover", {}),
    ]


async def test_backend_refusal_keeps_its_status_and_reads_as_an_error() -> None:
    backend = FakeBackend()
    backend.result = SubmitResult(False, 409, "a failover is in flight", {"in_flight": "pg2"})
    async with api(backend) as client:
        response = await client.post("/switchover", json={}, headers=AUTH)
        assert response.status == 409
        assert await response.json() == {
            "in_flight": "pg2", "ok": False, "message": "a failover is in flight",
            "error": "a failover is in flight",
        }


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, MISSING),
        ({"Authorization": "Bearer"}, MISSING),
        ({"Authorization": f"Basic {TOKEN}"}, MISSING),
        ({"Authorization": "Bearer wrong-token-0123456789"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "invalid bearer token"),
    ],
)
async def test_commands_need_the_token(headers: dict[str, str], message: str) -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        for path in ("/switchover", "/failover", "/pause", "/resume", "/maintenance", "/rejoin"):
            response = await client.post(path, data=b"not even json", headers=headers)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="hacontrol"'
            assert await response.json() == {"error": message}
    assert backend.submitted == []


async def test_commands_are_refused_when_no_token_is_configured() -> None:
    backend = FakeBackend()
    async with api(backend, token="") as client:
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = await client.post("/pause", headers=headers)
            assert response.status == 403
            error = (await response.json())["error"]
            assert error.startswith("commands are disabled: no API token is configured")
            assert "HACONTROL_API__TOKEN" in error and "api.token_file" in error
        # Reading endpoints do not need a token.
        assert (await client.get("/status")).status == 200
    assert backend.submitted == []


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/pause", b"{not json", "body: not valid JSON"),
        ("/pause", b"\xff\xfe", "body: not valid JSON"),
        ("/switchover", b'["pg2"]', "body: must be a JSON object"),
        ("/switchover", b'"pg2"', "body: must be a JSON object"),
        ("/switchover", b'{"target": "pg2"}',
         "target: unknown field; allowed fields for switchover: to"),
        ("/pause", b'{"now": true}', "now: unknown field; allowed fields for pause: none"),
        ("/switchover", b'{"to": 2}', "to: must be a node name (got 2)"),
        ("/switchover", b'{"to": "  "}', 'to: must be a node name (got "  ")'),
        ("/switchover", b'{"to": "pg9"}', "to: unknown node 'pg9'; known nodes: pg1, pg2, pg3"),
        ("/failover", b"{}", "to: required field is missing (a node name)"),
        ("/failover", b'{"to": "pg2", "force": "yes"}', 'force: must be true or false (got "yes")'),
        ("/maintenance", b'{"node": "pg2"}', "on: required field is missing (true or false)"),
        ("/maintenance", b'{"node": "pg2", "on": 1}', "on: must be true or false (got 1)"),
        ("/maintenance", b'{"on": false}', "node: required field is missing (a node name)"),
        ("/rejoin", b'{"node": null}', "node: required field is missing (a node name)"),
        ("/rejoin", b'{"node": "x"}', "node: unknown node 'x'; known nodes: pg1, pg2, pg3"),
    ],
)
async def test_malformed_commands_get_400_naming_the_field(
    path: str, body: bytes, message: str
) -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        response = await client.post(path, data=body, headers=AUTH)
        assert response.status == 400
        assert await response.json() == {"error": message}
    assert backend.submitted == []


async def test_oversized_body_is_refused() -> None:
    backend = FakeBackend()
    async with api(backend) as client:
        payload = b'{"to": "' + b"x" * 100_000 + b'"}'
        response = await client.post("/switchover", data=payload, headers=AUTH)
        assert response.status == 413
        assert "error" in await response.json()
    assert backend.submitted == []


# ---------------------------------------------------------------- the real server


async def test_start_api_binds_exactly_and_logs_no_token() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("debug", json=True, stream=stream)
    backend = FakeBackend()
    backend.result = SubmitResult(False, 409, "refused", {})
    runner = await start_api(backend, "127.0.0.1:0", TOKEN)
    try:
        address = bound_address(runner)
        assert address.startswith("127.0.0.1:")
        base = f"http://{address}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/failover", json={"to": "pg2"}, headers=AUTH) as r:
                assert r.status == 409
            wrong = {"Authorization": f"Bearer {TOKEN[::-1]}"}
            async with session.post(f"{base}/pause", headers=wrong) as r:
                assert r.status == 401
            async with session.post(f"{base}/pause", data=b"[", headers=AUTH) as r:
                assert r.status == 400
            async with session.get(f"{base}/status", headers=AUTH) as r:
                assert r.status == 200
            backend.fail = RuntimeError(f"backend quoted {AUTH}")
            async with session.get(f"{base}/status", headers=AUTH) as r:
                assert r.status == 500
    finally:
        await runner.cleanup()
        structlog.reset_defaults()
        root.setLevel(level)
        for handler in [h for h in root.handlers if h.get_name() == "hacontrol"]:
            root.removeHandler(handler)
    output = stream.getvalue()
    events = {json.loads(line)["event"] for line in output.splitlines()}
    # The log is not empty (so the check below means something) ...
    assert {"api_listening", "api_command", "api_command_refused", "api_command_result",
            "api_request_failed"} <= events
    # ... and neither the token nor the wrong one appears anywhere in it.
    assert TOKEN not in output and TOKEN[::-1] not in output


async def test_start_api_reports_an_address_in_use() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await start_api(FakeBackend(), f"127.0.0.1:{port}", TOKEN)
    finally:
        taken.close()


# ---------------------------------------------------------------- docs/haproxy.cfg, for real

HAPROXY = shutil.which("haproxy")
DOCS = Path(__file__).resolve().parents[2] / "docs"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def who_answers(port: int) -> str:
    """Connect through HAProxy; the fake server behind it says its name ('' = none)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return ""
    try:
        return (await asyncio.wait_for(reader.read(16), 1)).decode()
    except (OSError, TimeoutError):
        return ""
    finally:
        writer.close()


async def wait_for_answers(port: int, wanted: set[str], seconds: float = 10.0) -> set[str]:
    """Names seen on ``port`` until exactly ``wanted`` shows up in a row of probes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: set[str] = set()
    while loop.time() < deadline:
        seen = {await who_answers(port) for _ in range(6)}
        if seen == wanted:
            return seen
        await asyncio.sleep(0.1)
    return seen


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")
async def test_documented_haproxy_config_follows_a_failover(tmp_path: Path) -> None:
    backend = FakeBackend()
    runner = await start_api(backend, "127.0.0.1:0", TOKEN)
    servers: list[asyncio.Server] = []
    process: asyncio.subprocess.Process | None = None
    try:
        api_port = int(bound_address(runner).rsplit(":", 1)[1])
        text = (DOCS / "haproxy.cfg").read_text(encoding="utf-8")
        # Stand-ins for the three PostgreSQL servers: each says its name.
        for name in ("pg1", "pg2", "pg3"):
            async def hello(
                _r: asyncio.StreamReader, w: asyncio.StreamWriter, name: str = name
            ) -> None:
                w.write(name.encode())
                await w.drain()
                w.close()

            server = await asyncio.start_server(hello, "127.0.0.1", 0)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            text = text.replace(f"10.0.0.{name[-1]}:5432", f"127.0.0.1:{port}")
        write_port, read_port = free_port(), free_port()
        text = text.replace("bind *:5000", f"bind 127.0.0.1:{write_port}")
        text = text.replace("bind *:5001", f"bind 127.0.0.1:{read_port}")
        text = text.replace("127.0.0.1:7000", f"127.0.0.1:{free_port()}")
        text = text.replace("port 8008", f"port {api_port}")
        assert "10.0.0." not in text and "*:" not in text
        config = tmp_path / "haproxy.cfg"
        config.write_text(text, encoding="utf-8")
        assert HAPROXY is not None
        process = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        assert await wait_for_answers(write_port, {"pg1"}) == {"pg1"}
        assert await wait_for_answers(read_port, {"pg2", "pg3"}) == {"pg2", "pg3"}
        # Failover as the controller reports it: pg2 promoted, pg1 back but fenced,
        # pg3 now too far behind for the read port's max_lag.
        backend.snap["primary"] = "pg2"
        backend.node("pg1").update(role="primary", fenced=True, health="fenced")
        backend.node("pg2").update(role="primary", timeline=2, receiver_status=None,
                                   read_only=False, lag_bytes=None)
        backend.node("pg3").update(lag_bytes=20_000_000)
        assert await wait_for_answers(write_port, {"pg2"}) == {"pg2"}
        assert await wait_for_answers(read_port, {""}) == {""}
        backend.node("pg3").update(lag_bytes=0)
        assert await wait_for_answers(read_port, {"pg3"}) == {"pg3"}
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        for server in servers:
            server.close()
        await runner.cleanup()


# ---------------------------------------------------------------- history off the loop


class SlowHistoryBackend(FakeBackend):
    """history() blocks its thread until released, and says how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self._count = threading.Lock()

    def history(self, limit: int) -> list[dict[str, Any]]:
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(10)
            return super().history(limit)
        finally:
            with self._count:
                self.running -= 1


async def test_a_slow_history_read_never_holds_up_health_checks() -> None:
    backend = SlowHistoryBackend()
    async with api(backend) as client:
        reads = [asyncio.create_task(client.get(f"/history?limit={n}")) for n in (1, 2, 3, 4, 5)]
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        for path in ("/health", "/nodes/pg1/primary", "/status"):
            started = loop.time()
            response = await asyncio.wait_for(client.get(path), 2)
            assert response.status == 200
            assert loop.time() - started < 1.0, path
        assert all(not r.done() for r in reads)
        # Only a few reads run at once; the others wait their turn without a thread.
        assert backend.most <= HISTORY_WORKERS
        backend.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*reads), 10)
        assert [len((await a.json())["events"]) for a in answers] == [1, 2, 3, 3, 3]


class FilteringBackend(FakeBackend):
    """A backend whose history() takes the filters itself."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, Any, Any, Any]] = []

    def history(self, limit: int, *, kinds: Any = None, nodes: Any = None,
                since: Any = None) -> list[dict[str, Any]]:
        self.asked.append((limit, kinds, nodes, since))
        return [{"kind": "failover_started", "node": "pg2", "ts": 10.0}]


class PlainBackend(FakeBackend):
    def history(self, limit: int) -> list[dict[str, Any]]:
        self.limits.append(limit)
        return [
            {"kind": kind, "node": node, "ts": float(ts)}
            for ts, (kind, node) in enumerate([("failover_started", "pg2"), ("node_fenced", "pg1"),
                                               ("failover_started", "pg3"), ("paused", None)] * 3)
        ]


async def test_history_filters_reach_a_backend_that_takes_them() -> None:
    backend = FilteringBackend()
    async with api(backend) as client:
        await get_json(client, "/history?limit=5&kind=failover_started,node_fenced&kind=paused"
                               "&node=pg2&since=2025-12-01T21:40:12Z", 200)
        await get_json(client, "/history?since=10m", 200)
        await get_json(client, "/history", 200)
    assert backend.asked[0] == (
        5, frozenset({"failover_started", "node_fenced", "paused"}), frozenset({"pg2"}),
        1_764_625_212.0,
    )
    limit, kinds, nodes, since = backend.asked[1]
    assert (limit, kinds, nodes) == (100, None, None)
    assert abs(since - (time.time() - 600)) < 5
    # Without filters the plain call is made.
    assert backend.asked[2] == (100, None, None, None)


async def test_history_filters_work_with_a_backend_that_does_not_take_them() -> None:
    backend = PlainBackend()
    async with api(backend) as client:
        body = await get_json(client, "/history?kind=failover_started&limit=2", 200)
        assert [(e["node"], e["ts"]) for e in body["events"]] == [("pg2", 8.0), ("pg3", 10.0)]
        body = await get_json(client, "/history?node=pg1&since=5", 200)
        assert [e["ts"] for e in body["events"]] == [5.0, 9.0]
    assert backend.limits == [MAX_HISTORY, MAX_HISTORY]


@pytest.mark.parametrize(("query", "message"), [
    ("since=yesterday", "since: not a time: 'yesterday'; give a duration back from now"),
    ("kind=", "kind: give at least one name"),
    ("kind=a%20b", "kind: not a name: 'a b'"),
    ("node=" + ",".join(f"n{i}" for i in range(40)), "node: at most 32 names (got 40)"),
    ("limit=0&kind=paused", "limit: must be a whole number from 1 to 10000"),
])
async def test_bad_history_filters_are_400(query: str, message: str) -> None:
    backend = FilteringBackend()
    async with api(backend) as client:
        body = await get_json(client, f"/history?{query}", 400)
    assert body["error"].startswith(message), body
    assert backend.asked == []


async def test_status_json_has_null_for_unknown_and_nothing_from_unreached_nodes() -> None:
    backend = FakeBackend()
    backend.node("pg1").update(replay_lsn="-")
    # A node not reached this round: whatever the row holds, none of it is this round's.
    backend.node("pg3").update(reachable=False, role="unknown", health="unreachable",
                               lsn="0/2000000", timeline=1, lag_bytes=77)
    async with api(backend) as client:
        status = await get_json(client, "/status", 200)
    nodes = {n["name"]: n for n in status["nodes"]}
    assert nodes["pg1"]["replay_lsn"] is None and nodes["pg1"]["lsn"] == "0/3000060"
    for key in ("timeline", "lsn", "replay_lsn", "lag_bytes", "replay_lag_s", "upstream"):
        assert nodes["pg3"][key] is None, key
    assert nodes["pg2"]["timeline"] == 1 and nodes["pg2"]["lag_bytes"] == 128
    assert '"-"' not in json.dumps(status)


# ---------------------------------------------------------------- history is scrubbed too

SECRETISH = st.sampled_from([
    "password", "PassWord", "passwd", "pwd", "pass", "secret", "token", "Authorization",
    "api_key", "apikey", "credential", "scram_client_key", "sslpassword", "host", "user",
    "postgresql://u:p@h/db", "Bearer abc", "=", ":", " ", "'", '"', "x", "pg1", ",", "@", "/",
])


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(SECRETISH, max_size=12), key=SECRETISH)
def test_the_history_shortcut_never_skips_what_redact_would_mask(
    parts: list[str], key: str
) -> None:
    text = "".join(parts)
    record = {"kind": "hook_finished", "message": text, key: text, "details": {key: [text]}}
    assert scrub_events([record]) == [redact_value(record)]


async def test_history_answers_are_scrubbed() -> None:
    backend = FakeBackend()
    leaky = [{"kind": "hook_finished", "message": "ran with password=hunter2 ok",
              "details": {"token": "tok-123", "dsn": "postgresql://u:hunter2@h/db"}},
             {"kind": "tick", "message": "nothing to hide", "n": 1}]
    backend.history = lambda limit: leaky  # type: ignore[method-assign]
    async with api(backend) as client:
        text = await (await client.get("/history")).text()
    assert "hunter2" not in text and "tok-123" not in text
    assert json.loads(text)["events"][1] == leaky[1]
