"""What libpq reads besides the connection string: service files, the password
file, the home directory and its compiled-in socket directory."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from psycopg import pq

from hacontrol.io.dsn_params import SYSCONFDIR, DsnError


def home_dir(env: Mapping[str, str]) -> Path | None:
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


def service_values(service: str, env: Mapping[str, str]) -> tuple[dict[str, str], Path]:
    """The parameters ``service`` sets, and the file it is defined in; libpq's search
    order: PGSERVICEFILE (else ~/.pg_service.conf), then PGSYSCONFDIR/pg_service.conf."""
    searched: list[Path] = []
    user_file = env.get("PGSERVICEFILE")
    home = home_dir(env)
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


def passfile_password(
    passfile: str | None, environ: Mapping[str, str], host: str, port: int, dbname: str,
    user: str,
) -> str | None:
    """The password libpq would take from the password file (``passfile``, else
    ~/.pgpass), or None."""
    name = passfile
    if name:
        path = Path(name)
    else:
        home = home_dir(environ)
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
