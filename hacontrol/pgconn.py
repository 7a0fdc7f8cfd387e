"""Opening asyncpg connections from libpq-style connection strings.

Operators write libpq key/value strings (``host=... port=...``) or URIs;
asyncpg only parses URIs, so key/value strings are translated here.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any

import asyncpg
from psycopg.conninfo import conninfo_to_dict

# libpq keys asyncpg understands directly, under asyncpg's own names.
_DIRECT = {
    "host": "host",
    "hostaddr": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "database",
    "passfile": "passfile",
}


def connect_kwargs(dsn: str, *, application_name: str = "hacontrol") -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a libpq key/value string or URI."""
    params = conninfo_to_dict(dsn)
    service = params.pop("service", None)
    if service:
        # Explicit parameters win over the service file's, as in libpq.
        params = {**service_params(str(service)), **params}
    kwargs: dict[str, Any] = {}
    settings = {"application_name": str(params.pop("application_name", application_name))}
    for key, value in params.items():
        if value is None:
            continue
        text = str(value)
        if key in _DIRECT:
            if key == "port":
                kwargs["port"] = int(text.split(",")[0])
            elif key in ("host", "hostaddr"):
                kwargs["host"] = text.split(",")[0]
            else:
                kwargs[_DIRECT[key]] = text
        elif key == "sslmode":
            kwargs["ssl"] = text
        elif key == "options":
            settings.update(_parse_options(text))
    kwargs["server_settings"] = settings
    return kwargs


class ServiceNotFound(ValueError):
    """A DSN names a libpq service that no service file defines."""


def _service_files() -> list[Path]:
    files = []
    if os.environ.get("PGSERVICEFILE"):
        files.append(Path(os.environ["PGSERVICEFILE"]))
    else:
        files.append(Path.home() / ".pg_service.conf")
    sysconf = os.environ.get("PGSYSCONFDIR", "/etc/postgresql-common")
    files.append(Path(sysconf) / "pg_service.conf")
    return files


def service_params(name: str) -> dict[str, str]:
    """The parameters of libpq service ``name`` (PGSERVICEFILE or ~/.pg_service.conf,
    then PGSYSCONFDIR/pg_service.conf), since asyncpg does not read service files."""
    for path in _service_files():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(path.read_text())
        except (OSError, configparser.Error):
            continue
        if parser.has_section(name):
            return {k.strip(): v.strip() for k, v in parser.items(name)}
    searched = ", ".join(str(p) for p in _service_files())
    raise ServiceNotFound(f"libpq service {name!r} is not defined (searched {searched})")


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
