"""libpq's connection parameters as the controller sorts them, and libpq's value syntax.

Every parameter is either passed to asyncpg (:data:`PASSED`), carried out by the
controller itself (:data:`IMPLEMENTED`), accepted with some values only
(:data:`CHECKED`, see :mod:`hacontrol.io.dsn_checks`) or refused (:data:`REFUSED`).
"""

from __future__ import annotations

import re

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
# Accepted only with the values whose meaning the controller keeps (see dsn_checks).
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
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = {"tlsv1": "TLSv1", "tlsv1.1": "TLSv1.1", "tlsv1.2": "TLSv1.2",
                 "tlsv1.3": "TLSv1.3"}
PROTOCOL_VERSIONS = ("3.0", "3.2", "latest")
INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
# replication values that leave a connection an ordinary session (libpq's booleans).
NOT_REPLICATION = frozenset({"0", "off", "false", "no", "f", "n"})
INT_KEYS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
             "keepalives_count", "tcp_user_timeout")


class DsnError(ValueError):
    """A connection string the controller cannot honour as libpq would.

    ``problems`` has one line per problem; none shows a secret."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def single(value: str | None) -> str | None:
    return value if value else None


def int_value(value: str | None) -> int | None:
    """libpq's integer syntax (surrounding blanks allowed, nothing else)."""
    if value is None or not INT_RE.match(value):
        return None
    number = int(value)
    return number if -(2**31) <= number < 2**31 else None


def port_value(value: str | None) -> int | None:
    if not value:
        return DEFAULT_PORT
    number = int_value(value)
    return number if number is not None and 1 <= number <= 65535 else None

