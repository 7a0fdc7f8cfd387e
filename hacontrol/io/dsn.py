"""libpq connection strings with libpq's meaning: the only DSN code there is.

Operators write libpq key/value strings (``host=... port=...``) or URIs and expect
what ``psql`` does with them. asyncpg implements part of libpq, and sends any
query-string parameter it does not know to the server as a setting, so nothing
is handed to it unresolved. A node's DSN is resolved the way libpq resolves it
(:func:`resolve`): the string, then its service (``PGSERVICEFILE`` or
``~/.pg_service.conf``, then ``PGSYSCONFDIR``/``pg_service.conf``), then the
``PG*`` environment variables, then libpq's defaults. Every parameter is then
either passed to asyncpg (where asyncpg implements it as libpq does), carried out
by the controller itself (connect_timeout, keepalives, hostaddr, passfile, ...),
or refused with the reason and what to write instead (:meth:`Resolved.problems`,
reported by ``check-config`` and raised by :func:`hacontrol.io.pg.connect` as :class:`DsnError`).
docs/configuration.md ("libpq parameters in node DSNs") has the table; a
parameter this module does not know is refused, never dropped. The parameter
tables are in :mod:`~hacontrol.io.dsn_params`, the files libpq reads in
:mod:`~hacontrol.io.dsn_files`, the value checks in :mod:`~hacontrol.io.dsn_checks`.
"""

from __future__ import annotations

import os
import pwd
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from psycopg import Error as PsycopgError
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hacontrol.core.model import Endpoint, NodeSpec, normal_host
from hacontrol.io.dsn_checks import checks
from hacontrol.io.dsn_files import default_socket_dir, passfile_password, service_values
from hacontrol.io.dsn_params import (
    APPLICATION_NAME,
    CHECKED,
    DEFAULT_PORT,
    ENV_VARS,
    IMPLEMENTED,
    MASK,
    MIN_CONNECT_TIMEOUT_S,
    PASSED,
    REFUSED,
    SECRET_KEYS,
    SYSCONFDIR,
    TLS_VERSIONS,
    DsnError,
    int_value,
    port_value,
    single,
)

__all__ = [
    "APPLICATION_NAME", "CHECKED", "DEFAULT_PORT", "ENV_VARS", "IMPLEMENTED", "MASK",
    "MIN_CONNECT_TIMEOUT_S", "PASSED", "REFUSED", "SECRET_KEYS", "SYSCONFDIR",
    "ConnectPlan", "DsnError", "Resolved", "Setting", "connect_kwargs", "connect_plan",
    "default_socket_dir", "dsn_endpoints", "dsn_problems", "endpoint", "node_spec",
    "resolve", "standby_conninfo",
]


@dataclass(frozen=True, slots=True)
class Setting:
    """One resolved parameter and where libpq would have taken it from."""

    value: str
    origin: str  # "dsn", "service", or the environment variable's name

    def where(self, service: str | None, service_file: Path | None) -> str:
        if self.origin == "dsn":
            return "in the DSN"
        if self.origin == "service":
            return f"from service {service!r} in {service_file}"
        return f"from {self.origin} in the environment"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A DSN resolved as libpq resolves it (string, service, environment)."""

    # Neither is shown in a repr: they may hold passwords.
    settings: Mapping[str, Setting] = field(repr=False)
    service: str | None
    service_file: Path | None
    environ: Mapping[str, str] = field(repr=False)

    def get(self, key: str) -> str | None:
        found = self.settings.get(key)
        return None if found is None else found.value

    def shown(self, key: str) -> str:
        """``key=value (origin)`` for messages; secrets masked."""
        setting = self.settings[key]
        value = MASK if key in SECRET_KEYS else setting.value
        return f"{key}={value} ({setting.where(self.service, self.service_file)})"

    def address(self) -> tuple[str, int | None]:
        """Where a connection goes: (hostaddr, else host, else libpq's default socket
        directory; the port, None when it is not a valid one)."""
        host = single(self.get("hostaddr")) or single(self.get("host")) or (
            default_socket_dir()
        )
        if host.startswith("/"):
            host = os.path.normpath(host)
        return host, port_value(self.get("port"))

    def describe(self) -> str:
        """The address as ``host:port`` plus the service it came from, for messages."""
        host, port = self.address()
        text = f"{host}:{port if port is not None else self.get('port')}"
        return f"{text}, from service {self.service!r}" if self.service else text

    def problems(self) -> list[str]:
        """Every parameter the controller cannot honour, one line each."""
        found: list[str] = []
        for key in self.settings:
            if key not in ENV_VARS:
                found.append(
                    f"{self.shown(key)}: a libpq parameter hacontrol does not know, so it "
                    "cannot honour it; remove it (docs/configuration.md lists the "
                    "parameters)"
                )
            elif key in REFUSED and self.get(key):
                found.append(f"{self.shown(key)}: {REFUSED[key]}")
        found += checks(self)
        return found

    def plan(self, application_name: str = APPLICATION_NAME) -> ConnectPlan:
        """How to connect; raises :class:`DsnError` if any parameter is refused."""
        problems = self.problems()
        if problems:
            raise DsnError(problems)
        return _plan(self, application_name)


@dataclass(frozen=True, slots=True)
class ConnectPlan:
    """asyncpg.connect arguments plus what the controller does around the call."""

    kwargs: dict[str, Any] = field(repr=False)  # holds the password
    # libpq's connect_timeout (seconds, at least 2); None: none of its own.
    connect_timeout: float | None
    # (level, option, value) set on a TCP connection's socket, as libpq sets them.
    socket_options: tuple[tuple[int, int, int], ...]


def resolve(dsn: str, environ: Mapping[str, str] | None = None) -> Resolved:
    """``dsn`` resolved like libpq: the string, its service, then ``PG*`` variables
    from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    try:
        explicit = conninfo_to_dict(dsn)
    except Exception:
        # psycopg quotes the fragment it choked on, which may hold a password.
        raise DsnError(["not a valid libpq connection string"]) from None
    settings = {k: Setting(str(v), "dsn") for k, v in explicit.items() if v is not None}
    service = settings["service"].value if "service" in settings else env.get("PGSERVICE")
    service_file: Path | None = None
    if service is not None:
        values, service_file = service_values(service, env)
        for key, value in values.items():
            settings.setdefault(key, Setting(value, "service"))
    for key, var in ENV_VARS.items():
        if var is not None and key not in settings and var in env:
            settings[key] = Setting(env[var], var)
    return Resolved(settings, service, service_file, env)


def dsn_problems(dsn: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Why the controller cannot connect with ``dsn`` as libpq would; empty if it can."""
    try:
        return resolve(dsn, environ).problems()
    except DsnError as exc:
        return exc.problems


def connect_plan(
    dsn: str, *, application_name: str = APPLICATION_NAME,
    environ: Mapping[str, str] | None = None,
) -> ConnectPlan:
    """How :func:`hacontrol.io.pg.connect` connects with ``dsn``; raises :class:`DsnError`."""
    return resolve(dsn, environ).plan(application_name)


def connect_kwargs(
    dsn: str, *, application_name: str = APPLICATION_NAME,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a libpq key/value string or URI."""
    return connect_plan(dsn, application_name=application_name, environ=environ).kwargs


def dsn_endpoints(dsn: str) -> tuple[Endpoint, ...]:
    """Every host/port pair of a libpq key/value string or URI (empty if unparsable)."""
    try:
        params = conninfo_to_dict(dsn)
    except (PsycopgError, ValueError):
        return ()

    def split(key: str) -> list[str]:
        value = params.get(key)
        return [part.strip() for part in str(value).split(",")] if value else []

    hosts, addrs, ports = split("host"), split("hostaddr"), split("port")
    result: list[Endpoint] = []
    for i in range(max(len(hosts), len(addrs), 1)):
        # libpq: one port applies to every host, otherwise one port per host.
        port_text = ports[0] if len(ports) == 1 else (ports[i] if i < len(ports) else "")
        try:
            port = int(port_text) if port_text else 5432
        except ValueError:
            continue
        names = [src[i] for src in (hosts, addrs) if i < len(src) and src[i]]
        result.extend(Endpoint(normal_host(name), port) for name in names or [""])
    return tuple(dict.fromkeys(result))


def node_spec(
    name: str,
    dsn: str,
    priority: int = 100,
    replication_dsn: str | None = None,
    address: str | None = None,
) -> NodeSpec:
    """A node for the core, its endpoints parsed once: where replicas connect to it
    (its resolved service address, else its replication DSN, else its DSN)."""
    where = dsn_endpoints(address or replication_dsn or dsn)
    return NodeSpec(name, dsn, priority, replication_dsn, address, where)


def endpoint(dsn: str) -> tuple[str | None, int]:
    """The (host, port) a connection string names, for messages (first host; port
    5432 by default). Services are not read here: use :func:`resolve` for that."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or params.get("hostaddr")
    port = params.get("port")
    host_text = str(host).split(",")[0] if host else None
    return host_text, int(str(port).split(",")[0]) if port else DEFAULT_PORT


def dsn_port(dsn: str) -> int | None:
    """The port a libpq DSN connects to (``PGPORT``, then 5432, when it names none);
    None when it cannot be told here (a service file, a list, not a number)."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return None
    value = params.get("port")
    if value in (None, ""):
        if params.get("service"):
            # The service file may name the port; it is not read here.
            return None
        value = os.environ.get("PGPORT") or str(DEFAULT_PORT)
    return port_value(str(value).strip())


def host_port(dsn: str) -> tuple[str | None, int | None]:
    """The host (as written, every host of a list) and port a connection string names,
    for clients told where the primary is; (None, None) when it does not parse."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return None, None
    host = params.get("host") or params.get("hostaddr")
    port = str(params.get("port") or "5432")
    return (str(host) if host else None), (int(port) if port.isdigit() else None)


def standby_conninfo(primary: NodeSpec, replica_name: str, dbname: str | None = None) -> str:
    """primary_conninfo for a replica of ``primary``: its replication DSN, else its DSN
    without dbname, with the replica's name as application_name. ``dbname``: the
    database the slot sync worker connects to (streaming ignores it)."""
    base = primary.replication_dsn or primary.dsn
    params = {k: v for k, v in conninfo_to_dict(base).items() if k != "dbname"}
    if dbname:
        params["dbname"] = dbname
    params["application_name"] = replica_name
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


# ---------------------------------------------------------------- connecting


def _plan(r: Resolved, application_name: str) -> ConnectPlan:
    host = r.get("host") or ""
    hostaddr = r.get("hostaddr") or ""
    target = hostaddr or host or default_socket_dir()
    port = port_value(r.get("port")) or DEFAULT_PORT
    user = r.get("user") or _os_user()
    dbname = r.get("dbname") or user
    password: str | Callable[[], str | None] | None = r.get("password") or None
    if password is None:
        # libpq looks the password up under host (hostaddr only when there is no
        # host); asyncpg would use the address it connects to. A callable keeps
        # asyncpg from a second lookup of its own, whose matching differs.
        found = passfile_password(
            r.get("passfile"), r.environ, host or hostaddr, port, dbname, user
        )
        password = found if found is not None else _no_password
    query = {
        key: value for key in ("sslmode", "sslnegotiation", "sslcert", "sslkey",
                               "sslrootcert", "sslcrl", "sslpassword", "krbsrvname")
        if (value := r.get(key))
    }
    for key in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        value = r.get(key)
        if value:
            query[key] = TLS_VERSIONS[value.lower()]
    gsslib = r.get("gsslib")
    if gsslib and sys.platform == "win32":
        # Elsewhere libpq disregards gsslib and always uses GSSAPI.
        query["gsslib"] = gsslib
    settings = {
        "application_name": (
            r.get("application_name") or r.get("fallback_application_name")
            or application_name
        )
    }
    if r.get("options"):
        # The server splits and applies it, as it does for libpq's.
        settings["options"] = r.get("options") or ""
    kwargs: dict[str, Any] = {
        "dsn": f"postgresql://?{urlencode(query)}" if query else "postgresql://",
        "host": target, "port": port, "user": user, "database": dbname,
        "password": password, "server_settings": settings,
        # Only values meaning "any server" pass the checks; explicit, so that asyncpg
        # does not read PGTARGETSESSIONATTRS again.
        "target_session_attrs": "any",
    }
    timeout = int_value(r.get("connect_timeout"))
    connect_timeout = float(max(timeout, MIN_CONNECT_TIMEOUT_S)) if timeout and timeout > 0 \
        else None
    return ConnectPlan(kwargs, connect_timeout, _socket_options(r))


def _no_password() -> None:
    return None


def _os_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _socket_options(r: Resolved) -> tuple[tuple[int, int, int], ...]:
    """libpq's: keepalives on unless keepalives=0, then idle, interval, count and
    tcp_user_timeout (which libpq, too, sets only while keepalives are on)."""
    if int_value(r.get("keepalives")) == 0:
        return ()
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for key, name in (("keepalives_idle", "TCP_KEEPIDLE"),
                      ("keepalives_interval", "TCP_KEEPINTVL"),
                      ("keepalives_count", "TCP_KEEPCNT"),
                      ("tcp_user_timeout", "TCP_USER_TIMEOUT")):
        number = int_value(r.get(key))
        constant = getattr(socket, name, None)
        if number is not None and constant is not None:
            options.append((socket.IPPROTO_TCP, constant, max(number, 0)))
    return tuple(options)

