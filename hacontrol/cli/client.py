"""The controller's API as the command line reaches it: a small blocking JSON client,
and how an answer becomes a result line and an exit code."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import click

from hacontrol.cli.exit_codes import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    exit_with,
)
from hacontrol.config import Config

API_TIMEOUT_S = 2.0


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

    def events(self, query: Mapping[str, Any]) -> Any:
        """The journal records ``GET /history`` answers for ``query`` (none unless it
        answers 200); raises :class:`Unreachable`."""
        code, answer = self.get(f"/history?{urllib.parse.urlencode(query)}")
        records = answer.get("events") if code == 200 and isinstance(answer, dict) else None
        return records or []


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"error": raw.decode(errors="replace")[:200]}


def controller_status(client: ApiClient) -> dict[str, Any] | None:
    """The controller's ``GET /status``; None when it does not answer it."""
    try:
        status, body = client.get("/status")
    except Unreachable:
        return None
    return body if status == 200 and isinstance(body, dict) else None


def status_row(snap: Mapping[str, Any] | None, name: str | None) -> Mapping[str, Any]:
    """The row of node ``name`` in a status answer; empty when it has none."""
    for row in (snap or {}).get("nodes") or []:
        if row.get("name") == name:
            found: Mapping[str, Any] = row
            return found
    return {}


def post_request(client: ApiClient, config: Config, kind: str,
                 body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST /<kind>``: (status, answer); exits 3 when no controller answers."""
    try:
        # A command can wait for its action (a promotion: up to promote_timeout).
        code, answer = client.request(
            "POST", f"/{kind}", body, timeout=config.timing.promote_timeout + 30.0
        )
    except Unreachable as exc:
        exit_with(EXIT_UNREACHABLE,
                  f"error: {exc}; is 'hacontrol run' running? (or pass --api HOST:PORT)")
    return code, answer if isinstance(answer, dict) else {}


def report_answer(code: int, answer: dict[str, Any]) -> int:
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
