"""A small asyncio etcd v3 client over etcd's JSON gateway (``/v3/...``), on aiohttp.

Only what the controllers' coordination needs: leases, transactions with create
revision compares, ranges. Every request has its own deadline; an endpoint that
does not answer is left for the next one within it. Errors come out as two
kinds, because the leadership rules need exactly that distinction:

* :class:`EtcdUnavailable`: no answer, a timeout, or an answer that says etcd
  cannot serve (no leader, no quorum, overloaded): *nothing is known*;
* :class:`EtcdRefused`: etcd answered and said no (lease not found, bad request,
  permission denied): *this is known*.

The gateway over the gRPC client library: the one maintained asyncio gRPC client
(aetcd 1.0) opens only insecure channels (no TLS), authenticates once and never
again after its token expires, and waits out its whole timeout when etcd has no
leader unless a private attribute is patched. Patroni talks to the same gateway.
A password or token never reaches a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

__all__ = [
    "EtcdClient",
    "EtcdError",
    "EtcdRefused",
    "EtcdUnavailable",
    "KeyValue",
    "TxnResult",
    "b64",
]

# gRPC status codes the gateway reports in its error bodies.
_NOT_FOUND = 5
_UNAUTHENTICATED = 16
# Codes that mean "etcd could not serve this now", not "etcd says no".
_UNAVAILABLE_CODES = frozenset({1, 2, 4, 8, 10, 13, 14})


class EtcdError(Exception):
    """An etcd request failed."""


class EtcdUnavailable(EtcdError):
    """etcd did not answer, or cannot serve (no leader, no quorum): nothing is known."""


class EtcdRefused(EtcdError):
    """etcd answered no (``code`` is the gRPC status code)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    @property
    def not_found(self) -> bool:
        """The key or lease named does not exist (a lease: it expired)."""
        return self.code == _NOT_FOUND


def b64(data: bytes | str) -> str:
    """The gateway's encoding of keys and values."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(
            _unb64(kv.get("key")),
            _unb64(kv.get("value")),
            int(kv.get("create_revision", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    """A transaction's outcome: whether the compares held, the keys its ranges read
    (one tuple per range operation, in order), and the store's revision after it."""

    succeeded: bool
    ranges: tuple[tuple[KeyValue, ...], ...]
    revision: int


def _tls_context(cacert: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


class EtcdClient:
    """Requests to one etcd cluster through any of its ``endpoints`` (base URLs)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float,
        username: str = "",
        password: str = "",
        cacert: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._preferred = 0
        self._timeout_s = timeout_s
        self._username = username
        self._password = password
        self._token: str | None = None
        tls = any(e.startswith("https://") for e in self._endpoints)
        self._ssl: ssl.SSLContext | bool = _tls_context(cacert, cert, key) if tls else False
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint tried first (the last one that answered)."""
        return self._endpoints[self._preferred]

    async def close(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def grant(self, ttl_s: float) -> tuple[int, int]:
        """A new lease of ``ttl_s`` seconds (rounded up): (lease id, granted ttl)."""
        body = await self._call("/v3/lease/grant", {"TTL": str(max(1, round(ttl_s + 0.499)))})
        return int(body["ID"]), int(body.get("TTL", 0))

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its remaining ttl (0: it has expired)."""
        body = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        result = body.get("result", body)
        return int(result.get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now: the keys attached to it are deleted."""
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def get(self, key: bytes | str) -> KeyValue | None:
        """``key`` (None: absent). Linearizable: served by etcd's leader."""
        body = await self._call("/v3/kv/range", {"key": b64(key)})
        kvs = body.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: bytes | str) -> list[KeyValue]:
        """Every key under ``prefix``."""
        raw = prefix.encode() if isinstance(prefix, str) else prefix
        end = raw[:-1] + bytes([raw[-1] + 1])
        body = await self._call("/v3/kv/range", {"key": b64(raw), "range_end": b64(end)})
        return [KeyValue.from_json(kv) for kv in body.get("kvs") or []]

    async def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]],
    ) -> TxnResult:
        """One transaction (operations as built by :func:`put_op`, :func:`range_op`...)."""
        body = await self._call(
            "/v3/kv/txn", {"compare": compare, "success": success, "failure": failure}
        )
        ranges: list[tuple[KeyValue, ...]] = []
        for response in body.get("responses") or []:
            if "response_range" in response:
                kvs = response["response_range"].get("kvs") or []
                ranges.append(tuple(KeyValue.from_json(kv) for kv in kvs))
        revision = int((body.get("header") or {}).get("revision", 0))
        return TxnResult(bool(body.get("succeeded")), tuple(ranges), revision)

    async def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        reauthenticated = False
        last: str = "no endpoint tried"
        n = len(self._endpoints)
        i = 0
        while i < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            index = (self._preferred + i) % n
            endpoint = self._endpoints[index]
            try:
                status, body = await self._post(endpoint, path, payload, remaining)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                last = f"{endpoint}: {type(exc).__name__}"
                i += 1
                continue
            if status == 200:
                self._preferred = index
                return body
            code = int(body.get("code", 0)) if isinstance(body.get("code"), int | str) else 0
            message = str(body.get("message") or body.get("error") or f"HTTP {status}")
            if code == _UNAUTHENTICATED and self._username and not reauthenticated:
                # The token expired (etcd's simple tokens live 5 minutes): log in again.
                self._token = None
                reauthenticated = True
                continue
            if code in _UNAVAILABLE_CODES or (status >= 500 and code == 0):
                last = f"{endpoint}: {message}"
                i += 1
                continue
            self._preferred = index
            raise EtcdRefused(f"etcd refused {path}: {message}", code)
        raise EtcdUnavailable(f"etcd did not answer {path} within {self._timeout_s:g} s ({last})")

    async def _post(
        self, endpoint: str, path: str, payload: dict[str, Any], timeout_s: float
    ) -> tuple[int, dict[str, Any]]:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8)
            )
        headers = {}
        if self._username:
            if self._token is None:
                self._token = await self._authenticate(session, endpoint, timeout_s)
            headers["Authorization"] = self._token
        async with asyncio.timeout(timeout_s):
            async with session.post(f"{endpoint}{path}", json=payload, headers=headers) as r:
                text = await r.text()
        body = json.loads(text) if text.strip() else {}
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return r.status, body

    async def _authenticate(
        self, session: aiohttp.ClientSession, endpoint: str, timeout_s: float
    ) -> str:
        payload = {"name": self._username, "password": self._password}
        async with asyncio.timeout(timeout_s):
            async with session.post(f"{endpoint}/v3/auth/authenticate", json=payload) as r:
                body = await r.json(content_type=None)
        token = body.get("token") if isinstance(body, dict) else None
        if r.status != 200 or not token:
            message = body.get("message") if isinstance(body, dict) else None
            raise EtcdRefused(
                f"etcd refused the login of user {self._username!r}: "
                f"{message or f'HTTP {r.status}'}",
                _UNAUTHENTICATED,
            )
        return str(token)


def put_op(key: bytes | str, value: bytes | str, lease: int = 0) -> dict[str, Any]:
    """A put inside a transaction."""
    request: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def range_op(key: bytes | str) -> dict[str, Any]:
    """A read of one key inside a transaction."""
    return {"request_range": {"key": b64(key)}}


def delete_op(key: bytes | str) -> dict[str, Any]:
    """A delete of one key inside a transaction."""
    return {"request_delete_range": {"key": b64(key)}}


def create_revision_is(key: bytes | str, revision: int) -> dict[str, Any]:
    """Compare: ``key``'s create revision equals ``revision`` (0: the key is absent)."""
    return {
        "key": b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }
