"""libpq parameters in a node's DSN, against a real server, side by side with libpq.

libpq (through psycopg) is the reference: where it refuses a DSN the controller
refuses it too (at check-config, and at connect without touching the network),
and where the controller connects, it connects as libpq does.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hacontrol.config import check_config
from hacontrol.io.dsn_params import DsnError
from hacontrol.io.pg import connect, connection_socket
from hacontrol.testing import LocalCluster

pytestmark = pytest.mark.integration

SCRAM_PW = "scram-pw-1"
MD5_PW = "md5-pw-1"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalCluster]:
    """One node whose scram_user (SCRAM verifier) and md5_user (MD5 hash) must
    authenticate with a password over TCP; everyone else is trusted."""
    with LocalCluster(nodes=1, settings={"password_encryption": "scram-sha-256"}) as cluster:
        node = cluster.node("pg1")
        with node.connect() as conn:
            conn.execute(f"CREATE ROLE scram_user LOGIN PASSWORD '{SCRAM_PW}'")
            conn.execute("SET password_encryption = 'md5'")
            conn.execute(f"CREATE ROLE md5_user LOGIN PASSWORD '{MD5_PW}'")
        hba = node.data_dir / "pg_hba.conf"
        hba.write_text(
            "host all scram_user 127.0.0.1/32 scram-sha-256\n"
            "host all md5_user 127.0.0.1/32 md5\n" + hba.read_text()
        )
        node.query("SELECT pg_reload_conf()")
        yield cluster


def base(server: LocalCluster, user: str = "scram_user", password: str = SCRAM_PW) -> str:
    port = server.node("pg1").port
    return f"host=127.0.0.1 port={port} user={user} password={password} dbname=postgres"


def libpq_error(dsn: str) -> str:
    """libpq's reason for refusing ``dsn`` (the test fails if it connects)."""
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn, connect_timeout=5).close()
    return str(info.value)


async def refused(dsn: str) -> DsnError:
    started = time.monotonic()
    with pytest.raises(DsnError) as info:
        await connect(dsn, 5.0)
    # Refused from the string alone, before any connection attempt.
    assert time.monotonic() - started < 0.5
    return info.value


async def current_user(dsn: str) -> str:
    conn = await connect(dsn, 5.0)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


def config_with(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "hacontrol.toml"
    path.write_text(
        f'[[nodes]]\nname = "pg1"\ndsn = "{dsn}"\n'
        '[[nodes]]\nname = "pg2"\ndsn = "host=127.0.0.1 port=1 user=postgres"\n'
    )
    return path


async def test_the_users_authenticate_with_their_passwords(server: LocalCluster) -> None:
    for user, password in (("scram_user", SCRAM_PW), ("md5_user", MD5_PW)):
        dsn = base(server, user, password)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
        assert await current_user(dsn) == user
        assert "password authentication failed" in libpq_error(base(server, user, "wrong"))


async def test_channel_binding_require_over_plain_tcp_fails_as_in_libpq(
    server: LocalCluster, tmp_path: Path
) -> None:
    dsn = base(server) + " channel_binding=require"
    assert "channel binding" in libpq_error(dsn)
    error = await refused(dsn)
    assert str(error).startswith("channel_binding=require (in the DSN): asyncpg cannot do")
    assert SCRAM_PW not in str(error)
    code, out = check_config(config_with(tmp_path, dsn), {})
    assert code == 2
    (line,) = out.splitlines()
    assert ": nodes[0].dsn (pg1): channel_binding=require (in the DSN): " in line
    assert SCRAM_PW not in out
    # What libpq accepts here, the controller accepts too.
    for value in ("prefer", "disable"):
        psycopg.connect(base(server) + f" channel_binding={value}", connect_timeout=5).close()
        assert await current_user(base(server) + f" channel_binding={value}") == "scram_user"


async def test_require_auth_is_refused_where_libpq_negotiates_it(
    server: LocalCluster, tmp_path: Path
) -> None:
    # libpq refuses the server's SCRAM request when only cleartext passwords may be used.
    dsn = base(server) + " require_auth=password"
    assert "authentication method requirement" in libpq_error(dsn)
    assert str(await refused(dsn)).startswith("require_auth=password (in the DSN): ")
    code, out = check_config(config_with(tmp_path, dsn), {})
    assert code == 2 and "nodes[0].dsn (pg1): require_auth=password" in out
    # asyncpg cannot restrict the methods at all, so even a requirement the server
    # meets is refused rather than silently not enforced.
    psycopg.connect(base(server) + " require_auth=scram-sha-256", connect_timeout=5).close()
    await refused(base(server) + " require_auth=scram-sha-256")


async def test_gssencmode_require_fails_as_in_libpq(server: LocalCluster) -> None:
    dsn = base(server) + " gssencmode=require"
    assert "GSSAPI" in libpq_error(dsn)
    assert str(await refused(dsn)).startswith("gssencmode=require (in the DSN): ")


async def test_sslmode_is_passed_through_and_honoured(server: LocalCluster) -> None:
    # The test server has no TLS: libpq and asyncpg both refuse to go on without it.
    dsn = base(server) + " sslmode=require"
    libpq_error(dsn)
    with pytest.raises(Exception) as info:
        await connect(dsn, 5.0)
    assert not isinstance(info.value, DsnError)
    assert await current_user(base(server) + " sslmode=prefer") == "scram_user"


def _options(sock: Any) -> dict[str, int]:
    names = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
    found = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in names:
        found[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return found


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "keepalives=0 keepalives_idle=5 tcp_user_timeout=1000",
        "keepalives_idle=7 keepalives_interval=3 keepalives_count=4 tcp_user_timeout=9000",
    ],
)
async def test_keepalive_settings_match_libpqs(server: LocalCluster, extra: str) -> None:
    dsn = f"{base(server)} {extra}"
    with psycopg.connect(dsn, connect_timeout=5) as reference:
        dup = socket.socket(fileno=os.dup(reference.pgconn.socket))
        try:
            expected = _options(dup)
        finally:
            dup.close()
    conn = await connect(dsn, 5.0)
    try:
        assert _options(connection_socket(conn)) == expected
    finally:
        await conn.close()


async def test_connect_timeout_bounds_a_server_that_never_answers() -> None:
    # A listener that never accepts: the kernel completes the handshake, nobody answers.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        dsn = f"host=127.0.0.1 port={port} user=x dbname=x connect_timeout=2"
        started = time.monotonic()
        libpq_error(dsn)
        libpq_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await connect(dsn, 20.0)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert 1.5 < libpq_took < 6 and 1.5 < took < 6, (libpq_took, took)


async def test_options_and_application_name_reach_the_server_as_with_libpq(
    server: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGAPPNAME", "from-the-environment")
    dsn = base(server) + r" options='-c work_mem=5MB -c statement_timeout=0'"
    sql = ("SELECT current_setting('work_mem'), current_setting('application_name'), "
           "current_setting('statement_timeout')")
    with psycopg.connect(dsn, connect_timeout=5) as reference:
        assert reference.execute(sql).fetchone() == ("5MB", "from-the-environment", "0")
    conn = await connect(dsn, 5.0, statement_timeout=3)
    try:
        # The controller's statement_timeout is a startup setting, which the server
        # applies after options: options cannot lift it.
        assert tuple(await conn.fetchrow(sql)) == ("5MB", "from-the-environment", "3s")
    finally:
        await conn.close()


async def test_hostaddr_connects_there_and_host_picks_the_password(
    server: LocalCluster, tmp_path: Path
) -> None:
    port = server.node("pg1").port
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"db.invalid:{port}:*:scram_user:{SCRAM_PW}\n127.0.0.1:*:*:*:wrong\n")
    pgpass.chmod(0o600)
    dsn = (f"host=db.invalid hostaddr=127.0.0.1 port={port} user=scram_user dbname=postgres "
           f"passfile={pgpass}")
    with psycopg.connect(dsn, connect_timeout=5) as reference:
        assert reference.execute("SELECT current_user").fetchone() == ("scram_user",)
    assert await current_user(dsn) == "scram_user"
    # Certificate checks against host while connecting to hostaddr: refused up front.
    await refused(dsn + " sslmode=verify-full sslrootcert=/nonexistent.pem")
