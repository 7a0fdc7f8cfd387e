"""The HTTP API (aiohttp), served from the controller's own event loop.

Reading endpoints (no token): the dashboard at ``GET /`` (hacontrol.service.dashboard),
``GET /health``, ``/status``,
``/history[?limit=N&kind=K&node=N&since=T]``, ``/primary``, ``/metrics``, and
per-node checks for load balancers,
``GET|HEAD /nodes/{name}/primary`` and ``/nodes/{name}/replica[?max_lag=bytes]``
(200 healthy, 503 not, 404 unknown node). Commands (``POST /switchover``,
``/failover``, ``/pause``, ``/resume``, ``/maintenance``, ``/rejoin``) need
``Authorization: Bearer <token>``. Every answer is JSON; errors are
``{"error": "..."}``. Reference: docs/api.md.

This layer checks authentication and input and answers 400/401/403/404 itself;
what a command does, and whether it is accepted (200/202/409...), is the
backend's decision. The controller provides the backend::

    class ControllerBackend:                       # satisfies ApiBackend
        def snapshot(self): return controller.snapshot()
        def history(self, limit, *, kinds=None, nodes=None, since=None):
            return journal.read(limit, kinds=kinds, nodes=nodes, since=since)
        def metrics(self): return metrics.render()
        async def submit(self, kind, params): ... -> SubmitResult

    runner = await start_api(backend, config.api.listen, lambda: config.api.bearer_token())
    ...
    await runner.cleanup()                         # on shutdown

No access log is written (it would be noise at a load balancer's check rate),
and nothing here ever logs request headers, so the token cannot leak.

Nothing a request asks for may hold up the event loop the controller probes
from: ``GET /history`` reads the journal, and builds its answer, in a small pool
of worker threads of its own (at most :data:`HISTORY_WORKERS` at a time, the
rest wait their turn without blocking anything), never in the loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hacontrol.config import parse_listen
from hacontrol.io.dsn import host_port
from hacontrol.redact import redact_text, redact_value
from hacontrol.service.api_history import (
    history_body,
    history_query,
    takes_history_filters,
)
from hacontrol.service.api_input import BadInput, int_param
from hacontrol.service.dashboard import DashboardFeed, add_dashboard

log = structlog.get_logger("hacontrol.api")

# Journal reads in flight at once. Two keep a slow big read from making small ones
# wait, and leave the loop's thread the interpreter lock most of the time.
HISTORY_WORKERS = 2
MAX_BODY_BYTES = 64 * 1024
# Seconds a shutdown waits for requests in flight (a command waiting on its
# result) before closing their connections.
SHUTDOWN_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The backend's answer to a command: HTTP status, a message, extra JSON fields."""

    ok: bool
    status: int
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class ApiBackend(Protocol):
    """What the API needs from the controller."""

    def snapshot(self) -> dict[str, Any]:
        """The cluster view (``StatusSnapshot.to_json()``): primary, mode, paused, nodes..."""
        ...

    def history(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` journal events, oldest first. Called in a worker thread.

        A backend may also take keyword-only ``kinds``, ``nodes`` (collections of
        names) and ``since`` (wall-clock seconds): then the filters of ``GET
        /history`` reach it and it returns the last ``limit`` matching events.
        Without them the API filters the last :data:`MAX_HISTORY` events itself.
        """
        ...

    def metrics(self) -> bytes:
        """The Prometheus text exposition."""
        ...

    async def submit(self, kind: str, params: dict[str, Any]) -> SubmitResult:
        """Carry out (or queue) a validated command; ``kind`` is one of :data:`COMMANDS`."""
        ...


BACKEND: web.AppKey[ApiBackend] = web.AppKey("hacontrol_backend")
HISTORY_POOL: web.AppKey[ThreadPoolExecutor] = web.AppKey("hacontrol_history_pool")
HISTORY_SLOTS: web.AppKey[asyncio.Semaphore] = web.AppKey("hacontrol_history_slots")
# Whether the backend's history() takes the filters itself.
HISTORY_FILTERS: web.AppKey[bool] = web.AppKey("hacontrol_history_filters")
# A callable, so that a configuration reload can change the token of a running API.
TOKEN: web.AppKey[Callable[[], str]] = web.AppKey("hacontrol_token")
Token = str | Callable[[], str]
"""The bearer token, or a function returning the current one (read on every command)."""


def _backend(request: web.Request) -> ApiBackend:
    return request.app[BACKEND]


def _body(data: Any) -> str:
    # Everything leaving the API is scrubbed once more: a node's error text can
    # quote a connection string.
    return json.dumps(redact_value(data), default=str, separators=(",", ":"))


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=_body(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """JSON for every error (aiohttp's 404/405 too), no caching anywhere."""
    try:
        response = await handler(request)
    except BadInput as exc:
        response = _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        response = _error(exc.status, exc.reason, headers)
    except Exception as exc:
        log.error("api_request_failed", path=request.path, error=f"{type(exc).__name__}: {exc}")
        response = _error(500, "internal error; see the controller's log")
    if not response.prepared:  # a stream's headers are already sent
        response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- reading


def _nodes(snapshot: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(n.get("name")): n for n in snapshot.get("nodes") or []}


def _node_or_404(snapshot: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    nodes = _nodes(snapshot)
    if name not in nodes:
        raise web.HTTPNotFound(
            reason=f"unknown node {name!r}; known nodes: {', '.join(sorted(nodes)) or 'none'}"
        )
    return nodes[name]


def primary_problem(snapshot: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """Why ``node`` must not receive writes now; None when it is the healthy primary."""
    if snapshot.get("primary") != node.get("name"):
        current = snapshot.get("primary")
        return f"not the primary (the primary is {current})" if current else "no known primary"
    if not node.get("reachable"):
        return "unreachable"
    if node.get("role") != "primary":
        return f"role is {node.get('role')}"
    if node.get("fenced"):
        return "fenced"
    if node.get("read_only"):
        return "read-only"
    return None


def replica_problem(node: Mapping[str, Any], max_lag: int | None) -> str | None:
    """Why ``node`` must not receive reads now; None when it is a healthy replica."""
    if not node.get("reachable"):
        return "unreachable"
    if node.get("role") != "replica":
        return f"role is {node.get('role')}"
    if node.get("fenced"):
        return "fenced"
    if node.get("maintenance"):
        return "in maintenance"
    if node.get("receiver_status") != "streaming":
        return f"not streaming (receiver: {node.get('receiver_status') or 'none'})"
    if max_lag is not None:
        lag = node.get("lag_bytes")
        if lag is None:
            return "lag unknown (no primary to measure against)"
        if lag > max_lag:
            return f"lag {lag} bytes > max_lag {max_lag}"
    return None


def _check_answer(node: Mapping[str, Any], check: str, problem: str | None) -> web.Response:
    body = {
        "node": node.get("name"),
        "check": check,
        "healthy": problem is None,
        "role": node.get("role"),
        "health": node.get("health"),
        "lag_bytes": node.get("lag_bytes"),
        "timeline": node.get("timeline"),
    }
    if problem is not None:
        body["reason"] = problem
    return _json(body, 200 if problem is None else 503)


async def _health(request: web.Request) -> web.Response:
    snap = _backend(request).snapshot()
    return _json(
        {"status": "ok", "rounds": snap.get("rounds"), "last_round_ms": snap.get("last_round_ms")}
    )


# Per-round measurements of a node: from a node not reached this round, none of
# them may be shown (a value would be an earlier round's, or a placeholder).
MEASURED = ("timeline", "lsn", "replay_lsn", "lag_bytes", "replay_lag_s", "upstream",
            "receiver_status", "read_only")


def honest_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """``snapshot`` with JSON null for everything unknown: no ``"-"`` placeholders,
    and no measurements of a node that was not reachable this round."""
    out = dict(snapshot)
    nodes = []
    for row in snapshot.get("nodes") or []:
        clean = {k: (None if v == "-" else v) for k, v in dict(row).items()}
        if not clean.get("reachable"):
            clean.update({k: None for k in MEASURED if k in clean})
        nodes.append(clean)
    if "nodes" in snapshot:
        out["nodes"] = nodes
    return out


async def _status(request: web.Request) -> web.Response:
    return _json(honest_snapshot(_backend(request).snapshot()))


async def _history(request: web.Request) -> web.Response:
    query = history_query(request)
    app = request.app
    async with app[HISTORY_SLOTS]:
        body = await asyncio.get_running_loop().run_in_executor(
            app[HISTORY_POOL], history_body, app[BACKEND], query, app[HISTORY_FILTERS]
        )
    return web.Response(text=body, content_type="application/json")


async def _primary(request: web.Request) -> web.Response:
    snap = _backend(request).snapshot()
    name = snap.get("primary")
    node = _nodes(snap).get(str(name)) if name else None
    if node is None:
        return _json({"error": "no known primary", "primary": None}, 503)
    host, port = host_port(str(node.get("dsn") or ""))
    problem = primary_problem(snap, node)
    body: dict[str, Any] = {
        "primary": name, "host": host, "port": port, "timeline": node.get("timeline"),
    }
    if problem is not None:
        return _json({"error": f"primary {name} is {problem}", **body}, 503)
    return _json(body)


async def _node_primary(request: web.Request) -> web.Response:
    snap = _backend(request).snapshot()
    node = _node_or_404(snap, request.match_info["name"])
    return _check_answer(node, "primary", primary_problem(snap, node))


async def _node_replica(request: web.Request) -> web.Response:
    max_lag = int_param(request, "max_lag", 0, None)
    snap = _backend(request).snapshot()
    node = _node_or_404(snap, request.match_info["name"])
    return _check_answer(node, "replica", replica_problem(node, max_lag))


async def _metrics(request: web.Request) -> web.Response:
    body = _backend(request).metrics()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


# ---------------------------------------------------------------- commands

# kind -> {field: (type, required, what it must be)}
_FieldSpec = tuple[type, bool, str]
COMMANDS: dict[str, dict[str, _FieldSpec]] = {
    "switchover": {"to": (str, False, "a node name")},
    "failover": {"to": (str, True, "a node name"), "force": (bool, False, "true or false")},
    "pause": {},
    "resume": {},
    "maintenance": {"node": (str, True, "a node name"), "on": (bool, True, "true or false")},
    "rejoin": {"node": (str, True, "a node name")},
}
_NODE_FIELDS = ("to", "node")


def _authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the configured token; else the refusal."""
    token = request.app[TOKEN]()
    if not token:
        return _error(
            403,
            "commands are disabled: no API token is configured; set api.token_file or "
            "HACONTROL_API__TOKEN (e.g. from 'openssl rand -hex 32') and restart or reload",
        )
    challenge = {"WWW-Authenticate": 'Bearer realm="hacontrol"'}
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(
            401, "missing bearer token; send it in an Authorization header, scheme Bearer",
            challenge,
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(401, "invalid bearer token", challenge)
    return None


async def _read_params(request: web.Request, kind: str) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadInput("body: not valid JSON") from None
    if not isinstance(data, dict):
        raise BadInput("body: must be a JSON object")
    spec = COMMANDS[kind]
    unknown = sorted(set(data) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise BadInput(f"{unknown[0]}: unknown field; allowed fields for {kind}: {allowed}")
    params: dict[str, Any] = {}
    for name, (kind_type, required, what) in spec.items():
        value = data.get(name)
        if value is None:
            if required:
                raise BadInput(f"{name}: required field is missing ({what})")
            continue
        if not isinstance(value, kind_type) or (isinstance(value, str) and not value.strip()):
            raise BadInput(f"{name}: must be {what} (got {json.dumps(value)[:40]})")
        params[name] = value
    nodes = _nodes(_backend(request).snapshot())
    for name in _NODE_FIELDS:
        if name in params and params[name] not in nodes:
            known = ", ".join(sorted(nodes)) or "none"
            raise BadInput(f"{name}: unknown node {params[name]!r}; known nodes: {known}")
    return params


def _command(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        refusal = _authorized(request)
        if refusal is not None:
            log.warning("api_command_refused", command=kind, status=refusal.status,
                        remote=request.remote)
            return refusal
        params = await _read_params(request, kind)
        log.info("api_command", command=kind, params=params, remote=request.remote)
        result = await _backend(request).submit(kind, params)
        status = result.status if 200 <= result.status <= 599 else 500
        body = {**result.data, "ok": result.ok, "message": redact_text(result.message)}
        if not result.ok:
            body["error"] = body["message"]
        log.info("api_command_result", command=kind, status=status, ok=result.ok,
                 message=result.message)
        return _json(body, status)

    handler.__name__ = f"command_{kind}"
    return handler


# ---------------------------------------------------------------- app and server


def build_app(
    backend: ApiBackend, token: Token = "", feed: DashboardFeed | None = None
) -> web.Application:
    """The aiohttp application; an empty ``token`` refuses every command (403).

    ``token`` may be a function returning the current token: it is asked on every
    command, so a reloaded configuration takes effect without a restart. ``feed``
    drives the dashboard's stream (without one it updates once a second).
    """
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[BACKEND] = backend
    app[TOKEN] = token if callable(token) else (lambda: token)
    pool = ThreadPoolExecutor(HISTORY_WORKERS, thread_name_prefix="hacontrol-history")
    app[HISTORY_POOL] = pool
    app[HISTORY_SLOTS] = asyncio.Semaphore(HISTORY_WORKERS)
    app[HISTORY_FILTERS] = takes_history_filters(backend)

    async def close_pool(_app: web.Application) -> None:
        # A read in flight finishes in its thread; nobody waits for its answer.
        pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(close_pool)
    # add_get answers HEAD as well (a load balancer's cheaper check).
    app.router.add_get("/health", _health)
    app.router.add_get("/status", _status)
    app.router.add_get("/history", _history)
    app.router.add_get("/primary", _primary)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/nodes/{name}/primary", _node_primary)
    app.router.add_get("/nodes/{name}/replica", _node_replica)
    for kind in COMMANDS:
        app.router.add_post(f"/{kind}", _command(kind))
    add_dashboard(app, feed or DashboardFeed(), lambda: honest_snapshot(backend.snapshot()))
    return app


async def start_api(
    backend: ApiBackend, listen: str, token: Token, feed: DashboardFeed | None = None
) -> web.AppRunner:
    """Serve the API on exactly ``listen`` (``host:port``) in the running event loop.

    Returns the runner: ``runner.addresses`` has the bound address (useful with
    port 0), ``await runner.cleanup()`` stops it. Raises OSError (e.g. address
    in use) after releasing everything it set up.
    """
    host, port = parse_listen(listen)
    runner = web.AppRunner(
        build_app(backend, token, feed), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("api_listening", address=bound_address(runner))
    return runner


def bound_address(runner: web.AppRunner) -> str:
    """``host:port`` the runner listens on (the first address)."""
    address = runner.addresses[0]
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
