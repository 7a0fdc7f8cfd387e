"""libpq connection strings as the controller's connections see them (no database).

Where libpq's own answer can be had without a server, it is the oracle: libpq
resolves a DSN (service file, environment, defaults) when a connection starts, so
a connection started towards a socket directory where nothing listens shows the
values it would have used, without any network traffic.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from hacontrol.core.model import NodeSpec
from hacontrol.io.dsn import (
    connect_kwargs,
    connect_plan,
    dsn_problems,
    endpoint,
    resolve,
    standby_conninfo,
)
from hacontrol.io.dsn_files import default_socket_dir
from hacontrol.io.dsn_params import CHECKED, ENV_VARS, IMPLEMENTED, PASSED, REFUSED, DsnError

OS_USER = pwd.getpwuid(os.geteuid()).pw_name


def _query(kwargs: dict[str, object]) -> dict[str, str]:
    uri = urlparse(str(kwargs["dsn"]))
    assert uri.scheme == "postgresql" and not uri.netloc
    return {k: v[0] for k, v in parse_qs(uri.query).items()}


def _libpq(dsn: str) -> dict[str, str]:
    """What libpq resolves ``dsn`` to (it reads os.environ): the DSN must lead to a
    socket directory where nothing listens."""
    conn = pq.PGconn.connect_start(dsn.encode())
    try:
        return {o.keyword.decode(): o.val.decode() for o in conn.info if o.val is not None}
    finally:
        conn.finish()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """No PG* variables, HOME in a temp dir; returned as the mapping to resolve with."""
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "no-sysconf"))
    yield dict(os.environ)


# ---------------------------------------------------------------- the table


def test_every_libpq_parameter_has_exactly_one_treatment() -> None:
    libpq = {o.keyword.decode(): o.envvar.decode() if o.envvar else None
             for o in pq.Conninfo.get_defaults()}
    groups = [PASSED, IMPLEMENTED, CHECKED, frozenset(REFUSED)]
    for key in libpq:
        assert sum(key in g for g in groups) == 1, key
    assert {k: v for k, v in ENV_VARS.items() if k in libpq} == libpq


def test_a_parameter_unknown_to_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(ENV_VARS, "sslcrldir")
    (line,) = dsn_problems("host=h sslcrldir=/etc/crl", {})
    assert line.startswith("sslcrldir=/etc/crl (in the DSN): a libpq parameter hacontrol does")


# ---------------------------------------------------------------- what travels to asyncpg


def test_key_value_dsn_becomes_arguments_and_uri_query() -> None:
    kwargs = connect_kwargs(
        "host=10.0.0.1 port=6432 user=ha dbname=app password='s3 cret' sslmode=verify-full "
        "sslrootcert=/etc/ca.pem sslcert=/etc/c.pem sslkey=/etc/k.pem connect_timeout=3 "
        "keepalives=1 options='-c search_path=x' ssl_min_protocol_version=tlsv1.3",
        environ={},
    )
    assert (kwargs["host"], kwargs["port"], kwargs["user"], kwargs["database"]) == (
        "10.0.0.1", 6432, "ha", "app"
    )
    assert kwargs["password"] == "s3 cret"
    assert _query(kwargs) == {
        "sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "sslcert": "/etc/c.pem",
        "sslkey": "/etc/k.pem", "ssl_min_protocol_version": "TLSv1.3",
    }
    # libpq-only knobs never reach the server as settings; options go whole, for the
    # server to split as it does for libpq.
    assert kwargs["server_settings"] == {
        "application_name": "hacontrol", "options": "-c search_path=x"
    }
    assert kwargs["target_session_attrs"] == "any"


def test_uri_dsn_and_application_name() -> None:
    kwargs = connect_kwargs("postgresql://ha@db1:5433/postgres?application_name=probe",
                            environ={})
    assert (kwargs["host"], kwargs["port"], kwargs["user"]) == ("db1", 5433, "ha")
    assert kwargs["server_settings"]["application_name"] == "probe"


@pytest.mark.parametrize(
    ("dsn", "env", "expected"),
    [
        ("application_name=a fallback_application_name=f", {"PGAPPNAME": "e"}, "a"),
        ("fallback_application_name=f", {"PGAPPNAME": "e"}, "e"),
        ("fallback_application_name=f", {}, "f"),
        ("", {}, "hacontrol"),
    ],
)
def test_application_name_precedence_is_libpqs(
    dsn: str, env: dict[str, str], expected: str
) -> None:
    kwargs = connect_kwargs(f"host=h {dsn}", environ=env)
    assert kwargs["server_settings"]["application_name"] == expected


def test_environment_options_and_encoding_are_read() -> None:
    kwargs = connect_kwargs("host=h", environ={"PGOPTIONS": "-c work_mem=5MB",
                                               "PGCLIENTENCODING": "UTF8"})
    assert kwargs["server_settings"]["options"] == "-c work_mem=5MB"


def test_user_and_database_defaults_are_libpqs_not_asyncpgs() -> None:
    # asyncpg would take $USER; libpq takes the effective OS user.
    kwargs = connect_kwargs("host=h", environ={"USER": "somebody-else"})
    assert (kwargs["user"], kwargs["database"]) == (OS_USER, OS_USER)
    kwargs = connect_kwargs("host=h", environ={"PGUSER": "u", "PGDATABASE": "d"})
    assert (kwargs["user"], kwargs["database"]) == ("u", "d")


def test_no_host_means_libpqs_one_socket_directory(clean_env: dict[str, str]) -> None:
    # asyncpg alone tries several directories and then localhost: several servers.
    kwargs = connect_kwargs("port=1 dbname=x", environ=clean_env)
    conn = pq.PGconn.connect_start(b"port=1 dbname=x")
    try:
        libpq_host = conn.host.decode()
    finally:
        conn.finish()
    assert kwargs["host"] == default_socket_dir() == libpq_host


def test_connect_timeout_is_libpqs() -> None:
    def timeout(dsn: str, env: dict[str, str] | None = None) -> float | None:
        return connect_plan(f"host=h {dsn}", environ=env or {}).connect_timeout

    assert timeout("connect_timeout=10") == 10
    assert timeout("connect_timeout=1") == 2  # libpq waits at least 2 s
    assert timeout("connect_timeout=0") is None
    assert timeout("connect_timeout=-5") is None
    assert timeout("") is None
    assert timeout("", {"PGCONNECT_TIMEOUT": "3"}) == 3


def test_keepalive_socket_options_are_libpqs() -> None:
    def options(dsn: str) -> tuple[tuple[int, int, int], ...]:
        return connect_plan(f"host=h {dsn}", environ={}).socket_options

    keepalive = (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert options("") == (keepalive,)  # libpq's default: on
    assert options("keepalives=0 keepalives_idle=5 tcp_user_timeout=100") == ()
    assert options(
        "keepalives_idle=7 keepalives_interval=3 keepalives_count=4 tcp_user_timeout=9000"
    ) == (
        keepalive,
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 3),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 9000),
    )


# ---------------------------------------------------------------- refused, accepted


@pytest.mark.parametrize(
    ("dsn", "key", "words"),
    [
        ("channel_binding=require", "channel_binding", "channel binding"),
        ("require_auth=password", "require_auth", "restrict the methods"),
        ("require_auth=scram-sha-256", "require_auth", "pg_hba.conf"),
        ("gssencmode=require", "gssencmode", "GSSAPI encryption"),
        ("target_session_attrs=read-write", "target_session_attrs", "every role"),
        ("target_session_attrs=primary", "target_session_attrs", "every role"),
        ("target_session_attrs=standby", "target_session_attrs", "every role"),
        ("target_session_attrs=read-only", "target_session_attrs", "every role"),
        ("sslcertmode=require", "sslcertmode", "sslcertmode=allow"),
        ("sslcertmode=disable", "sslcertmode", "sslcertmode=allow"),
        ("sslrootcert=system sslmode=verify-full", "sslrootcert", "CA file"),
        ("sslcrldir=/etc/crl", "sslcrldir", "sslcrl=FILE"),
        ("requirepeer=postgres", "requirepeer", "OS user"),
        ("sslkeylogfile=/tmp/k", "sslkeylogfile", "SSLKEYLOGFILE"),
        ("replication=database", "replication", "ordinary SQL sessions"),
        ("replication=true", "replication", "ordinary SQL sessions"),
        ("oauth_issuer=https://issuer.example", "oauth_issuer", "OAuth"),
        ("min_protocol_version=3.2", "min_protocol_version", "protocol 3.0"),
        ("client_encoding=LATIN1", "client_encoding", "UTF8"),
        ("client_encoding=auto", "client_encoding", "UTF8"),
        ("gssdelegation=1", "gssdelegation", "delegate"),
        ("host=db.example sslsni=0", "sslsni", "SNI"),
        ("keepalives_idle=0", "keepalives_idle", "at least 1"),
        ("keepalives_count=-1", "keepalives_count", "at least 1"),
        ("connect_timeout=soon", "connect_timeout", "whole number"),
        ("port=notaport", "port", "from 1 to 65535"),
        ("port=0", "port", "from 1 to 65535"),
        ("port=70000", "port", "from 1 to 65535"),
        ("host=a,b", "host", "a node is one server"),
        ("host=a port=1,2", "port", "a node is one server"),
        ("hostaddr=10.0.0.1,10.0.0.2", "hostaddr", "a node is one server"),
        ("hostaddr=db.example", "hostaddr", "numeric"),
        ("host=@abstract", "host", "abstract unix socket"),
        ("host=db.example hostaddr=10.0.0.1 sslmode=verify-full", "hostaddr", "verify-ca"),
        ("sslmode=verify", "sslmode", "libpq allows"),
        ("sslnegotiation=direct", "sslnegotiation", "sslmode=require"),
        ("ssl_max_protocol_version=TLSv1.4", "ssl_max_protocol_version", "libpq allows"),
        ("ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
         "ssl_min_protocol_version", "above"),
        ("gsslib=kerberos", "gsslib", "gssapi, sspi"),
    ],
)
def test_what_cannot_be_honoured_is_refused_with_the_reason(
    dsn: str, key: str, words: str
) -> None:
    full = dsn if dsn.startswith("host") else f"host=h {dsn}"
    found = dsn_problems(full, {})
    assert len(found) == 1, found
    assert found[0].startswith(f"{key}=") and " (in the DSN): " in found[0]
    assert words in found[0]
    with pytest.raises(DsnError) as info:
        connect_kwargs(full, environ={})
    assert info.value.problems == found


@pytest.mark.parametrize(
    "dsn",
    [
        "channel_binding=prefer", "channel_binding=disable", "gssencmode=prefer",
        "gssencmode=disable", "target_session_attrs=any",
        "target_session_attrs=prefer-standby", "sslcertmode=allow", "sslsni=1",
        "host=127.0.0.1 sslsni=0", "host=db.example sslmode=disable sslsni=0",
        "sslcompression=0", "sslcompression=1", "client_encoding=UTF8",
        "client_encoding=utf-8", "load_balance_hosts=random", "min_protocol_version=3.0",
        "max_protocol_version=latest", "replication=false", "require_auth=",
        "keepalives=0 keepalives_idle=0", "gsslib=gssapi", "krbsrvname=pg",
        "sslnegotiation=direct sslmode=require", "host=/tmp hostaddr=127.0.0.1",
        "host=db.example hostaddr=10.0.0.1 sslmode=verify-ca",
        "hostaddr=10.0.0.1 sslmode=verify-full", "host=db.example hostaddr=::1",
    ],
)
def test_values_whose_meaning_is_kept_are_accepted(dsn: str) -> None:
    full = dsn if dsn.startswith("host") else f"host=h {dsn}"
    assert dsn_problems(full, {}) == []
    connect_kwargs(full, environ={})


def test_environment_defaults_are_checked_and_the_dsn_wins() -> None:
    env = {"PGCHANNELBINDING": "require", "PGTARGETSESSIONATTRS": "read-write"}
    found = dsn_problems("host=h", env)
    assert [line.split(": ", 1)[0] for line in found] == [
        "channel_binding=require (from PGCHANNELBINDING in the environment)",
        "target_session_attrs=read-write (from PGTARGETSESSIONATTRS in the environment)",
    ]
    assert dsn_problems("host=h channel_binding=disable target_session_attrs=any", env) == []


def test_hostaddr_is_where_it_connects_host_is_what_it_names() -> None:
    kwargs = connect_kwargs("host=db.example hostaddr=10.0.0.7 port=5433", environ={})
    assert (kwargs["host"], kwargs["port"]) == ("10.0.0.7", 5433)
    assert resolve("host=db.example hostaddr=10.0.0.7", {}).address() == ("10.0.0.7", 5432)
    # IPv6 goes as an argument, unbracketed: asyncpg's query parser would split it.
    assert connect_kwargs("hostaddr=::1", environ={})["host"] == "::1"


def test_refusals_never_show_secrets() -> None:
    dsn = ("host=h password=hunter2 sslpassword=keypass scram_client_key=c2VjcmV0 "
           "oauth_client_secret=topsecret channel_binding=require")
    with pytest.raises(DsnError) as info:
        connect_kwargs(dsn, environ={"PGPASSWORD": "envsecret"})
    text = str(info.value)
    for secret in ("hunter2", "keypass", "c2VjcmV0", "topsecret", "envsecret"):
        assert secret not in text
    assert "scram_client_key=*** (in the DSN)" in text
    plan = connect_plan("host=h password=hunter2", environ={"PGPASSWORD": "envsecret"})
    assert "hunter2" not in repr(plan) and "envsecret" not in repr(resolve("host=h"))
    assert "not a valid libpq" in dsn_problems("host=h password=hunter2 junk", {})[0]
    assert "hunter2" not in dsn_problems("host=h password=hunter2 junk", {})[0]


# ---------------------------------------------------------------- password file


def _passfile(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_password_file_is_looked_up_under_host_not_hostaddr(tmp_path: Path) -> None:
    pgpass = _passfile(tmp_path / "pgpass", (
        "db.example:5432:*:ha:by-name\n"
        "10.0.0.7:5432:*:ha:by-address\n"
    ))
    both = connect_kwargs(f"host=db.example hostaddr=10.0.0.7 user=ha passfile={pgpass}",
                          environ={})
    assert both["password"] == "by-name"
    alone = connect_kwargs(f"hostaddr=10.0.0.7 user=ha passfile={pgpass}", environ={})
    assert alone["password"] == "by-address"


def test_password_file_syntax_is_libpqs(tmp_path: Path) -> None:
    pgpass = _passfile(tmp_path / "pgpass", (
        "# a comment\n"
        "h\\:x:5432:db:u:wrong-host\n"
        "h:*:db:u:pa\\:ss\\\\word:ignored\n"
    ))
    assert connect_kwargs(f"host=h user=u dbname=db passfile={pgpass}",
                          environ={})["password"] == "pa:ss\\word"
    escaped_star = _passfile(tmp_path / "star", "h:\\*:*:u:literal-star\n")
    found = connect_kwargs(f"host=h user=u passfile={escaped_star}", environ={})["password"]
    assert callable(found) and found() is None


def test_password_file_open_to_others_is_ignored_like_libpq(tmp_path: Path) -> None:
    pgpass = _passfile(tmp_path / "pgpass", "*:*:*:*:pw\n", mode=0o644)
    found = connect_kwargs(f"host=h passfile={pgpass}", environ={})["password"]
    # A callable answering None: asyncpg must not look the file up again by itself.
    assert callable(found) and found() is None


def test_default_password_file_is_home_pgpass(tmp_path: Path) -> None:
    _passfile(tmp_path / ".pgpass", "localhost:5432:*:*:from-home\n")
    kwargs = connect_kwargs("host=localhost", environ={"HOME": str(tmp_path)})
    assert kwargs["password"] == "from-home"
    explicit = connect_kwargs("host=localhost password=given", environ={"HOME": str(tmp_path)})
    assert explicit["password"] == "given"


# ---------------------------------------------------------------- service files


def _services(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_service_search_order_and_precedence_match_libpq(
    tmp_path: Path, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "sockets"  # nothing listens here: libpq's answer costs nothing
    sock.mkdir()
    user_file = _services(tmp_path / "user.conf", (
        f"# services\n[other]\nport=1\n[a]\nhost={sock}\nport=7001\nuser=alice\n"
        "  # indented comment\n[a]\nport=9999\n"
    ))
    sysconf = tmp_path / "sysconf"
    _services(sysconf / "pg_service.conf", f"[a]\nport=1\n[b]\nhost={sock}\nport=7002\n"
                                           "dbname=bee\n")
    monkeypatch.setenv("PGSERVICEFILE", str(user_file))
    monkeypatch.setenv("PGSYSCONFDIR", str(sysconf))
    env = dict(os.environ)
    for dsn in ("service=a", "service=b", "service=a port=7005 user=bob"):
        libpq = _libpq(dsn)
        kwargs = connect_kwargs(dsn, environ=env)
        assert (kwargs["host"], str(kwargs["port"]), kwargs["user"], kwargs["database"]) == (
            libpq["host"], libpq["port"], libpq["user"], libpq["dbname"]
        ), dsn
    monkeypatch.setenv("PGSERVICE", "b")
    assert connect_kwargs("", environ=dict(os.environ))["port"] == int(_libpq("")["port"])


def test_home_service_file_is_the_default(tmp_path: Path, clean_env: dict[str, str]) -> None:
    _services(Path(clean_env["HOME"]) / ".pg_service.conf", "[h]\nhost=10.0.0.9\nport=6000\n")
    assert resolve("service=h", clean_env).address() == ("10.0.0.9", 6000)


def test_missing_service_is_an_error_naming_the_files(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    with pytest.raises(DsnError) as info:
        connect_kwargs("service=nope", environ=clean_env)
    (line,) = info.value.problems
    assert "definition of service 'nope' not found" in line
    assert str(Path(clean_env["HOME"]) / ".pg_service.conf") in line
    assert "PGSERVICEFILE" in line


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[s]\nhost 10.0.0.1\n", "syntax error in service file"),
        ("[s]\nhost =10.0.0.1\n", "not a libpq connection parameter"),
        ("[s]\nservice=t\n", "nested service"),
        ("[s]\nldap://ldap.example/dc=x?y\n", "LDAP"),
    ],
)
def test_bad_service_files_are_errors_like_in_libpq(
    tmp_path: Path, text: str, words: str
) -> None:
    path = _services(tmp_path / "services.conf", text)
    (line,) = dsn_problems("service=s", {"PGSERVICEFILE": str(path)})
    assert line.startswith("service=s: ") and words in line and f"{path}, line 2" in line


def test_service_values_are_checked_and_name_their_file(tmp_path: Path) -> None:
    path = _services(tmp_path / "services.conf",
                     "[s]\nhost=10.0.0.1\nchannel_binding=require\npassword=hunter2\n")
    (line,) = dsn_problems("service=s", {"PGSERVICEFILE": str(path)})
    assert line.startswith(f"channel_binding=require (from service 's' in {path}): ")
    assert dsn_problems("service=s channel_binding=prefer", {"PGSERVICEFILE": str(path)}) == []


def test_services_resolve_to_their_servers(tmp_path: Path) -> None:
    path = _services(tmp_path / "services.conf",
                     "[one]\nhost=10.0.0.1\nport=5433\n[two]\nhostaddr=10.0.0.2\n")
    env = {"PGSERVICEFILE": str(path)}
    assert resolve("service=one", env).address() == ("10.0.0.1", 5433)
    assert resolve("service=two", env).address() == ("10.0.0.2", 5432)
    assert resolve("service=one", env).describe() == "10.0.0.1:5433, from service 'one'"


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("host=a port=1", ("a", 1)),
        ("host=a", ("a", 5432)),
        ("postgresql://u@b:7/x", ("b", 7)),
        ("host=a,b port=1,2", ("a", 1)),
        ("dbname=x", (None, 5432)),
    ],
)
def test_endpoint_for_messages(dsn: str, expected: tuple[str | None, int]) -> None:
    assert endpoint(dsn) == expected


def test_standby_conninfo_prefers_replication_dsn_and_names_the_replica() -> None:
    primary = NodeSpec(
        "pg1", "host=h1 port=1 user=ha dbname=postgres", 100, "host=r1 port=2 user=rep"
    )
    info = conninfo_to_dict(standby_conninfo(primary, "pg2"))
    assert info == {"host": "r1", "port": "2", "user": "rep", "application_name": "pg2"}
    plain = NodeSpec("pg1", "host=h1 port=1 user=ha dbname=postgres")
    info = conninfo_to_dict(standby_conninfo(plain, "pg3"))
    assert info == {"host": "h1", "port": "1", "user": "ha", "application_name": "pg3"}
