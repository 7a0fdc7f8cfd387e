"""The parameter values the controller cannot honour as libpq would, or that libpq
itself rejects: one line each, with what to write instead."""

from __future__ import annotations

import ipaddress
import re
from typing import Protocol

from hacontrol.io.dsn_params import (
    INT_KEYS,
    NOT_REPLICATION,
    PROTOCOL_VERSIONS,
    SSL_MODES,
    TLS_VERSIONS,
    int_value,
    port_value,
)


class Parameters(Protocol):
    """The resolved parameters being checked (:class:`hacontrol.io.dsn.Resolved`)."""

    def get(self, key: str) -> str | None:
        """The value, None when not set."""

    def shown(self, key: str) -> str:
        """``key=value (origin)``, secrets masked."""


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _norm_encoding(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def checks(r: Parameters) -> list[str]:
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
    if port is not None and "," not in port and port_value(port) is None:
        bad("port", "must be a port number from 1 to 65535")
    for key in INT_KEYS:
        value = r.get(key)
        if value is not None and int_value(value) is None:
            bad(key, "must be a whole number")

    sslmode = enum("sslmode", SSL_MODES)
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
        if value and value.lower() not in TLS_VERSIONS:
            bad(key, f"not a valid value; libpq allows {', '.join(TLS_VERSIONS.values())}")
        elif value:
            versions[key] = list(TLS_VERSIONS).index(value.lower())
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
    low = enum("min_protocol_version", PROTOCOL_VERSIONS)
    enum("max_protocol_version", PROTOCOL_VERSIONS)
    if low in ("3.2", "latest"):
        bad("min_protocol_version", "asyncpg speaks protocol 3.0 only; remove it or set "
                                    "min_protocol_version=3.0")
    encoding = r.get("client_encoding")
    if encoding is not None and _norm_encoding(encoding) not in ("utf8", "unicode"):
        bad("client_encoding", "asyncpg always talks UTF8 to the server; remove "
                               "client_encoding or set it to UTF8")
    replication = r.get("replication")
    if replication and replication.lower() not in NOT_REPLICATION:
        bad("replication", "the controller's connections are ordinary SQL sessions, not "
                           "replication connections; remove replication (replication_dsn "
                           "is where replicas' settings go)")
    if int_value(r.get("keepalives")) != 0:
        for key in ("keepalives_idle", "keepalives_interval", "keepalives_count"):
            number = int_value(r.get(key))
            if number is not None and number < 1:
                bad(key, "must be at least 1 (libpq fails to connect with less: the "
                         "system rejects it)")
    return found
