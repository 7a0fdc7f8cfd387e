"""Opening asyncpg connections from libpq-style connection strings.

Operators write libpq key/value strings (``host=... port=...``) or URIs;
asyncpg only parses URIs, so key/value strings are translated here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import asyncpg
from psycopg.conninfo import conninfo_to_dict

# libpq parameters asyncpg reads from a URI's query string itself (asyncpg >= 0.30),
# including service files and TLS client certificates. Anything else (e.g.
# connect_timeout, keepalives) would be sent to the server as a setting by
# asyncpg, so it is left out: the controller bounds connects itself.
_PASSED = frozenset({
    "host", "port", "user", "password", "dbname", "passfile", "service", "servicefile",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "sslnegotiation",
    "krbsrvname", "gsslib",
})


def connect_kwargs(dsn: str, *, application_name: str = "hacontrol") -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a libpq key/value string or URI.

    The parameters travel as a URI query string, which asyncpg parses like libpq
    (passfile, service file, TLS files, PG* environment variables as fallbacks).
    """
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    settings = {"application_name": params.pop("application_name", application_name)}
    settings.update(_parse_options(params.pop("options", "")))
    if "hostaddr" in params:
        params["host"] = params.pop("hostaddr")
    for key in ("host", "port"):
        if key in params:
            params[key] = params[key].split(",")[0]
    query = urlencode({k: v for k, v in params.items() if k in _PASSED})
    uri = f"postgresql://?{query}" if query else "postgresql://"
    return {"dsn": uri, "server_settings": settings}


def _parse_options(options: str) -> dict[str, str]:
    """``-c name=value`` pairs from libpq's ``options`` parameter."""
    result: dict[str, str] = {}
    parts = options.split()
    for i, part in enumerate(parts):
        token = part
        if part == "-c" and i + 1 < len(parts):
            token = parts[i + 1]
        elif part.startswith("-c"):
            token = part[2:]
        else:
            continue
        name, sep, value = token.partition("=")
        if sep:
            result[name] = value
    return result


def endpoint(dsn: str) -> tuple[str | None, int]:
    """The (host, port) a connection string points at (first host; port 5432 by default)."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or params.get("hostaddr")
    port = params.get("port")
    host_text = str(host).split(",")[0] if host else None
    return host_text, int(str(port).split(",")[0]) if port else 5432


async def connect(
    dsn: str, timeout: float, *, statement_timeout: float | None = None
) -> asyncpg.Connection:
    """Open one connection, giving up after ``timeout`` seconds.

    Statements on it are cancelled server-side after ``statement_timeout``
    (default: ``timeout``), so a wedged query never holds a backend forever.
    """
    kwargs = connect_kwargs(dsn)
    limit = timeout if statement_timeout is None else statement_timeout
    kwargs["server_settings"].setdefault("statement_timeout", str(max(1, int(limit * 1000))))
    return await asyncpg.connect(timeout=timeout, command_timeout=limit, **kwargs)
