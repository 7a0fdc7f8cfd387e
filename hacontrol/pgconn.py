"""Opening asyncpg connections from libpq connection strings, with libpq's meaning.

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
reported by ``check-config`` and raised by :func:`connect` as :class:`DsnError`).
docs/configuration.md ("libpq parameters in node DSNs") has the table; a
parameter this module does not know is refused, never dropped.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import socket
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

DEFAULT_PORT = 5432
APPLICATION_NAME = "hacontrol"
# libpq's compiled-in SYSCONFDIR, where it looks for pg_service.conf after the
# user's file: Debian's libpq and the psycopg-binary wheel's both use this one
# (PGSYSCONFDIR overrides it, for libpq and here alike).
SYSCONFDIR = "/etc/postgresql-common"
MASK = "***"
# libpq never lets a connect give up sooner than this (fe-connect.c).
MIN_CONNECT_TIMEOUT_S = 2

# Every libpq 18 connection parameter and the environment variable libpq takes its
# default from (as PQconndefaults reports them).
ENV_VARS: dict[str, str | None] = {
    "service": "PGSERVICE", "user": "PGUSER", "password": "PGPASSWORD",
    "passfile": "PGPASSFILE", "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT", "dbname": "PGDATABASE", "host": "PGHOST",
    "hostaddr": "PGHOSTADDR", "port": "PGPORT", "client_encoding": "PGCLIENTENCODING",
    "options": "PGOPTIONS", "application_name": "PGAPPNAME",
    "fallback_application_name": None, "keepalives": None, "keepalives_idle": None,
    "keepalives_interval": None, "keepalives_count": None, "tcp_user_timeout": None,
    "sslmode": "PGSSLMODE", "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE", "sslpassword": None, "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR", "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER", "require_auth": "PGREQUIREAUTH",
    "min_protocol_version": "PGMINPROTOCOLVERSION",
    "max_protocol_version": "PGMAXPROTOCOLVERSION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION", "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME", "gsslib": "PGGSSLIB", "gssdelegation": "PGGSSDELEGATION",
    "replication": None, "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS", "scram_client_key": None,
    "scram_server_key": None, "oauth_issuer": None, "oauth_client_id": None,
    "oauth_client_secret": None, "oauth_scope": None, "sslkeylogfile": None,
}

# asyncpg implements these as libpq does; they travel to it unchanged (host, port,
# user, dbname and password as arguments, the TLS and Kerberos ones in the URI
# query, application_name and options as startup parameters).
PASSED = frozenset({
    "host", "port", "user", "dbname", "password", "application_name", "options",
    "sslmode", "sslnegotiation", "sslcert", "sslkey", "sslrootcert", "sslcrl",
    "sslpassword", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "krbsrvname", "gsslib",
})
# The controller carries these out itself (asyncpg lacks them or does them
# differently from libpq).
IMPLEMENTED = frozenset({
    "service", "passfile", "hostaddr", "connect_timeout", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
    "tcp_user_timeout",
})
# Accepted only with the values whose meaning the controller keeps (see _checks).
CHECKED = frozenset({
    "channel_binding", "gssencmode", "target_session_attrs", "client_encoding",
    "sslcertmode", "sslsni", "sslcompression", "gssdelegation", "load_balance_hosts",
    "min_protocol_version", "max_protocol_version", "replication",
})
# Refused whenever set (an empty value means "not set" to libpq as well).
REFUSED: dict[str, str] = {
    "require_auth": (
        "asyncpg answers whichever authentication request the server sends, so the "
        "controller cannot restrict the methods; remove require_auth and restrict the "
        "methods on the server (pg_hba.conf), with sslmode=verify-full so that the "
        "server is the real one"
    ),
    "requirepeer": (
        "asyncpg cannot check the server process's OS user before it authenticates; "
        "remove requirepeer, or connect over TCP with sslmode=verify-full"
    ),
    "sslcrldir": (
        "asyncpg reads a certificate revocation list only from a file; use "
        "sslcrl=FILE instead"
    ),
    "sslkeylogfile": (
        "asyncpg cannot write TLS key logs per connection; remove it (SSLKEYLOGFILE in "
        "the controller's environment does the same for every connection)"
    ),
    "scram_client_key": (
        "asyncpg cannot authenticate with SCRAM keys instead of a password; remove it "
        "and give the password (passfile, PGPASSWORD or password=...)"
    ),
    "scram_server_key": (
        "asyncpg cannot authenticate with SCRAM keys instead of a password; remove it "
        "and give the password (passfile, PGPASSWORD or password=...)"
    ),
    **{
        key: "asyncpg has no OAuth authentication; remove it and authenticate with a "
        "password or a client certificate"
        for key in ("oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope")
    },
}
SECRET_KEYS = frozenset({
    "password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key",
})
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TLS_VERSIONS = {"tlsv1": "TLSv1", "tlsv1.1": "TLSv1.1", "tlsv1.2": "TLSv1.2",
                 "tlsv1.3": "TLSv1.3"}
_PROTOCOL_VERSIONS = ("3.0", "3.2", "latest")
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
# replication values that leave a connection an ordinary session (libpq's booleans).
_NOT_REPLICATION = frozenset({"0", "off", "false", "no", "f", "n"})
_INT_KEYS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
             "keepalives_count", "tcp_user_timeout")


class DsnError(ValueError):
    """A connection string the controller cannot honour as libpq would.

    ``problems`` has one line per problem; none shows a secret."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


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
        host = _single(self.get("hostaddr")) or _single(self.get("host")) or (
            default_socket_dir()
        )
        if host.startswith("/"):
            host = os.path.normpath(host)
        return host, _port(self.get("port"))

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
        found += _checks(self)
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
        values, service_file = _service_values(service, env)
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
    """How :func:`connect` connects with ``dsn``; raises :class:`DsnError`."""
    return resolve(dsn, environ).plan(application_name)


def connect_kwargs(
    dsn: str, *, application_name: str = APPLICATION_NAME,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a libpq key/value string or URI."""
    return connect_plan(dsn, application_name=application_name, environ=environ).kwargs


def endpoint(dsn: str) -> tuple[str | None, int]:
    """The (host, port) a connection string names, for messages (first host; port
    5432 by default). Services are not read here: use :func:`resolve` for that."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or params.get("hostaddr")
    port = params.get("port")
    host_text = str(host).split(",")[0] if host else None
    return host_text, int(str(port).split(",")[0]) if port else DEFAULT_PORT


class _Connection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """Keeps the transport's socket: libpq's keepalive settings go on it."""

    __slots__ = ("_hac_socket",)

    def __init__(self, protocol: Any, transport: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, transport, *args, **kwargs)
        self._hac_socket = transport.get_extra_info("socket")


async def connect(
    dsn: str, timeout: float, *, statement_timeout: float | None = None
) -> asyncpg.Connection:
    """Open one connection, giving up after ``timeout`` seconds (or the DSN's
    connect_timeout, if shorter).

    Statements on it are cancelled server-side after ``statement_timeout``
    (default: ``timeout``), so a wedged query never holds a backend forever; the
    DSN's ``options`` cannot lift that bound (startup settings win over them).
    """
    plan = connect_plan(dsn)
    kwargs = dict(plan.kwargs)
    limit = timeout if statement_timeout is None else statement_timeout
    settings = dict(kwargs.pop("server_settings"))
    settings["statement_timeout"] = str(max(1, int(limit * 1000)))
    wait = timeout if plan.connect_timeout is None else min(timeout, plan.connect_timeout)
    conn = await asyncpg.connect(
        timeout=wait, command_timeout=limit, server_settings=settings,
        connection_class=_Connection, **kwargs,
    )
    try:
        apply_socket_options(conn, plan.socket_options)
    except BaseException:
        conn.terminate()
        raise
    return conn


def connection_socket(conn: Any) -> Any:
    """The socket under a connection opened by :func:`connect` (None for others)."""
    return getattr(conn, "_hac_socket", None)


def apply_socket_options(conn: Any, options: tuple[tuple[int, int, int], ...]) -> None:
    """Set libpq's keepalive options on ``conn``'s socket (TCP only, as libpq does)."""
    sock = connection_socket(conn)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in options:
        sock.setsockopt(level, option, value)


# ---------------------------------------------------------------- resolution


def _home(env: Mapping[str, str]) -> Path | None:
    """libpq's home directory: $HOME, else the password database's entry."""
    home = env.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        return None


@cache
def _keywords() -> frozenset[str]:
    """The connection parameters the linked libpq knows (what a service file may set)."""
    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def _service_values(service: str, env: Mapping[str, str]) -> tuple[dict[str, str], Path]:
    """The parameters ``service`` sets, and the file it is defined in; libpq's search
    order: PGSERVICEFILE (else ~/.pg_service.conf), then PGSYSCONFDIR/pg_service.conf."""
    searched: list[Path] = []
    user_file = env.get("PGSERVICEFILE")
    home = _home(env)
    first = Path(user_file) if user_file is not None else (
        home / ".pg_service.conf" if home is not None else None
    )
    system = Path(env.get("PGSYSCONFDIR") or SYSCONFDIR) / "pg_service.conf"
    for path in (first, system):
        if path is None:
            continue
        searched.append(path)
        try:
            os.stat(path)
        except OSError:
            continue
        found = _parse_service_file(path, service)
        if found is not None:
            return found, path
    where = " or ".join(str(p) for p in searched) or "no service file"
    raise DsnError([
        f"service={service}: definition of service {service!r} not found (looked in "
        f"{where}); define it there, or set PGSERVICEFILE to the file that defines it"
    ])


def _parse_service_file(path: Path, service: str) -> dict[str, str] | None:
    """The first ``[service]`` group's parameters, None if the file has none; libpq's
    syntax (whole-line comments, ``key=value`` with nothing trimmed around ``=``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise DsnError([
            f"service={service}: cannot read service file {path}: "
            f"{exc.strerror or type(exc).__name__}"
        ]) from None
    values: dict[str, str] | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\n\r\f\v")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if values is not None:
                break
            if line[1:].startswith(service) and line[1 + len(service):2 + len(service)] == "]":
                values = {}
            continue
        if values is None:
            continue
        where = f"service file {path}, line {number}"
        if line.startswith("ldap"):
            raise DsnError([
                f"service={service}: {where}: LDAP service lookups are not supported by "
                "hacontrol; write the parameters into the service file"
            ])
        key, sep, value = line.partition("=")
        if not sep:
            raise DsnError([f"service={service}: syntax error in {where} (no '=')"])
        if key == "service":
            raise DsnError([
                f"service={service}: {where}: nested service specifications are not "
                "supported (by libpq either)"
            ])
        if key not in _keywords():
            raise DsnError([
                f"service={service}: syntax error in {where}: {key!r} is not a libpq "
                "connection parameter"
            ])
        values.setdefault(key, value)
    return values


@cache
def default_socket_dir() -> str:
    """Where libpq connects when no host is given: its compiled-in socket directory
    (asyncpg would try several directories and then localhost: several servers)."""
    try:
        conn = pq.PGconn.connect_start(
            b"host='' hostaddr='' port=1 user=x dbname=x sslmode=disable gssencmode=disable"
        )
        try:
            host = conn.host.decode()
        finally:
            conn.finish()
    except Exception:
        host = ""
    return host if host.startswith("/") else "/var/run/postgresql"


# ---------------------------------------------------------------- checking


def _single(value: str | None) -> str | None:
    return value if value else None


def _int(value: str | None) -> int | None:
    """libpq's integer syntax (surrounding blanks allowed, nothing else)."""
    if value is None or not _INT_RE.match(value):
        return None
    number = int(value)
    return number if -(2**31) <= number < 2**31 else None


def _port(value: str | None) -> int | None:
    if not value:
        return DEFAULT_PORT
    number = _int(value)
    return number if number is not None and 1 <= number <= 65535 else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _norm_encoding(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def _checks(r: Resolved) -> list[str]:
    """Values the controller cannot honour, or that libpq itself rejects."""
    found: list[str] = []

    def bad(key: str, why: str) -> None:
        found.append(f"{r.shown(key)}: {why}")

    def enum(key: str, allowed: tuple[str, ...]) -> str | None:
        value = r.get(key)
        if value is not None and value not in allowed:
            bad(key, f"not a valid value; libpq allows {', '.join(allowed)}")
            return None
        return value

    for key in ("host", "hostaddr", "port"):
        value = r.get(key)
        if value is not None and "," in value:
            bad(key, "names several servers; a node is one server: name exactly one in "
                     "each node's DSN")
    host, hostaddr, port = r.get("host") or "", r.get("hostaddr") or "", r.get("port")
    if host.startswith("@"):
        bad("host", "an abstract unix socket, which asyncpg cannot connect to; use a "
                    "socket directory (host=/path) or TCP")
    if hostaddr and "," not in hostaddr and not _is_ip(hostaddr):
        bad("hostaddr", "must be a numeric IPv4 or IPv6 address (a name goes in host)")
    if port is not None and "," not in port and _port(port) is None:
        bad("port", "must be a port number from 1 to 65535")
    for key in _INT_KEYS:
        value = r.get(key)
        if value is not None and _int(value) is None:
            bad(key, "must be a whole number")

    sslmode = enum("sslmode", _SSL_MODES)
    target = hostaddr or host
    tls = sslmode != "disable" and bool(target) and not target.startswith("/")
    if sslmode == "verify-full" and hostaddr and host and host != hostaddr:
        bad("hostaddr", (
            "with host and sslmode=verify-full, libpq checks the server certificate "
            "against host while connecting to hostaddr; asyncpg checks it against the "
            "address it connects to, so the controller cannot do both: remove hostaddr "
            "(let host resolve), or use sslmode=verify-ca"
        ))
    negotiation = enum("sslnegotiation", ("postgres", "direct"))
    if negotiation == "direct" and (sslmode or "prefer") not in ("require", "verify-ca",
                                                                  "verify-full"):
        bad("sslnegotiation", "direct needs sslmode=require, verify-ca or verify-full "
                              "(libpq refuses it too)")
    if r.get("sslrootcert") == "system":
        bad("sslrootcert", "asyncpg cannot use the system's certificate store; name the "
                           "CA file (sslrootcert=/path/to/ca.pem)")
    versions: dict[str, int] = {}
    for key in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        value = r.get(key)
        if value and value.lower() not in _TLS_VERSIONS:
            bad(key, f"not a valid value; libpq allows {', '.join(_TLS_VERSIONS.values())}")
        elif value:
            versions[key] = list(_TLS_VERSIONS).index(value.lower())
    if len(versions) == 2 and versions["ssl_min_protocol_version"] > versions[
        "ssl_max_protocol_version"
    ]:
        bad("ssl_min_protocol_version", "is above ssl_max_protocol_version (libpq "
                                        "refuses that range)")

    if enum("channel_binding", ("disable", "prefer", "require")) == "require":
        bad("channel_binding", (
            "asyncpg cannot do SCRAM channel binding, so the controller cannot require "
            "it (libpq would refuse servers that do not do it); remove channel_binding "
            "(prefer, libpq's default, allows authenticating without it), and use "
            "sslmode=verify-full to make sure of the server"
        ))
    if enum("gssencmode", ("disable", "prefer", "require")) == "require":
        bad("gssencmode", (
            "asyncpg has no GSSAPI encryption; remove gssencmode (or set prefer or "
            "disable) and encrypt with TLS (sslmode=verify-full)"
        ))
    attrs = enum("target_session_attrs", ("any", "read-write", "read-only", "primary",
                                          "standby", "prefer-standby"))
    if attrs not in (None, "any", "prefer-standby"):
        bad("target_session_attrs", (
            "the controller must reach each node in every role (a replica, a fenced "
            "read-only primary), which this would refuse; remove it from the node's DSN "
            "(it belongs in applications' connection strings)"
        ))
    enum("load_balance_hosts", ("disable", "random"))
    if enum("sslcertmode", ("disable", "allow", "require")) in ("disable", "require"):
        bad("sslcertmode", (
            "asyncpg always sends a client certificate when one is configured (or at "
            "~/.postgresql/postgresql.crt) and never demands that the server ask for "
            "it, which is sslcertmode=allow; remove sslcertmode"
        ))
    sni = r.get("sslsni")
    if sni is not None and not sni.startswith("1") and tls and not _is_ip(target):
        bad("sslsni", "asyncpg always sends the host name (SNI) in a TLS handshake; "
                      "remove sslsni=0")
    if (r.get("gssdelegation") or "0").startswith("1"):
        bad("gssdelegation", "asyncpg does not delegate GSSAPI credentials; remove "
                             "gssdelegation")
    gsslib = r.get("gsslib")
    if gsslib and gsslib not in ("gssapi", "sspi"):
        bad("gsslib", "not a valid value; libpq allows gssapi, sspi")
    low = enum("min_protocol_version", _PROTOCOL_VERSIONS)
    enum("max_protocol_version", _PROTOCOL_VERSIONS)
    if low in ("3.2", "latest"):
        bad("min_protocol_version", "asyncpg speaks protocol 3.0 only; remove it or set "
                                    "min_protocol_version=3.0")
    encoding = r.get("client_encoding")
    if encoding is not None and _norm_encoding(encoding) not in ("utf8", "unicode"):
        bad("client_encoding", "asyncpg always talks UTF8 to the server; remove "
                               "client_encoding or set it to UTF8")
    replication = r.get("replication")
    if replication and replication.lower() not in _NOT_REPLICATION:
        bad("replication", "the controller's connections are ordinary SQL sessions, not "
                           "replication connections; remove replication (replication_dsn "
                           "is where replicas' settings go)")
    if _int(r.get("keepalives")) != 0:
        for key in ("keepalives_idle", "keepalives_interval", "keepalives_count"):
            number = _int(r.get(key))
            if number is not None and number < 1:
                bad(key, "must be at least 1 (libpq fails to connect with less: the "
                         "system rejects it)")
    return found


# ---------------------------------------------------------------- connecting


def _plan(r: Resolved, application_name: str) -> ConnectPlan:
    host = r.get("host") or ""
    hostaddr = r.get("hostaddr") or ""
    target = hostaddr or host or default_socket_dir()
    port = _port(r.get("port")) or DEFAULT_PORT
    user = r.get("user") or _os_user()
    dbname = r.get("dbname") or user
    password: str | Callable[[], str | None] | None = r.get("password") or None
    if password is None:
        # libpq looks the password up under host (hostaddr only when there is no
        # host); asyncpg would use the address it connects to. A callable keeps
        # asyncpg from a second lookup of its own, whose matching differs.
        found = _passfile_password(r, host or hostaddr, port, dbname, user)
        password = found if found is not None else _no_password
    query = {
        key: value for key in ("sslmode", "sslnegotiation", "sslcert", "sslkey",
                               "sslrootcert", "sslcrl", "sslpassword", "krbsrvname")
        if (value := r.get(key))
    }
    for key in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        value = r.get(key)
        if value:
            query[key] = _TLS_VERSIONS[value.lower()]
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
    timeout = _int(r.get("connect_timeout"))
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
    if _int(r.get("keepalives")) == 0:
        return ()
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for key, name in (("keepalives_idle", "TCP_KEEPIDLE"),
                      ("keepalives_interval", "TCP_KEEPINTVL"),
                      ("keepalives_count", "TCP_KEEPCNT"),
                      ("tcp_user_timeout", "TCP_USER_TIMEOUT")):
        number = _int(r.get(key))
        constant = getattr(socket, name, None)
        if number is not None and constant is not None:
            options.append((socket.IPPROTO_TCP, constant, max(number, 0)))
    return tuple(options)


def _passfile_password(r: Resolved, host: str, port: int, dbname: str, user: str) -> str | None:
    """The password libpq would take from the password file, or None."""
    name = r.get("passfile")
    if name:
        path = Path(name)
    else:
        home = _home(r.environ)
        if home is None:
            return None
        path = home / ".pgpass"
    try:
        info = os.stat(path)
    except OSError:
        return None
    # libpq ignores (with a warning) a file that is not plain or is open to others.
    if not stat.S_ISREG(info.st_mode) or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    if not host or (host.startswith("/") and host == default_socket_dir()):
        host = "localhost"
    wanted = (host, str(port), dbname, user)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) < 5:
            continue
        if all(raw == "*" or text == w for (text, raw), w in zip(fields[:4], wanted,
                                                                  strict=True)):
            return fields[4][0]
    return None


def _pgpass_fields(line: str) -> list[tuple[str, str]]:
    """A .pgpass line's fields as (text with libpq's backslash escapes undone, raw
    text): only an unescaped ``*`` is a wildcard."""
    fields: list[tuple[str, str]] = []
    text: list[str] = []
    raw: list[str] = []
    escaped = False
    for char in line:
        if escaped:
            text.append(char)
            raw.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
            raw.append(char)
        elif char == ":" and len(fields) < 4:
            fields.append(("".join(text), "".join(raw)))
            text, raw = [], []
        elif char == ":":
            break
        else:
            text.append(char)
            raw.append(char)
    fields.append(("".join(text), "".join(raw)))
    return fields
