from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from hacontrol.act import standby_conninfo
from hacontrol.model import NodeSpec
from hacontrol.pgconn import ServiceNotFound, connect_kwargs, endpoint


def test_key_value_dsn_maps_to_asyncpg_names() -> None:
    kwargs = connect_kwargs(
        "host=10.0.0.1 port=6432 user=ha dbname=app password=s3cret sslmode=require "
        "options='-c search_path=x'"
    )
    assert kwargs["host"] == "10.0.0.1"
    assert kwargs["port"] == 6432
    assert kwargs["user"] == "ha"
    assert kwargs["database"] == "app"
    assert kwargs["password"] == "s3cret"
    assert kwargs["ssl"] == "require"
    assert kwargs["server_settings"] == {"application_name": "hacontrol", "search_path": "x"}


def test_uri_dsn_and_application_name() -> None:
    kwargs = connect_kwargs("postgresql://ha@db1:5433/postgres?application_name=probe")
    assert (kwargs["host"], kwargs["port"], kwargs["database"]) == ("db1", 5433, "postgres")
    assert kwargs["server_settings"]["application_name"] == "probe"


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
def test_endpoint(dsn: str, expected: tuple[str | None, int]) -> None:
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


def test_service_file_parameters_are_used_and_explicit_ones_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text("[main]\nhost=10.1.1.1\nport=6543\nuser=ha\ndbname=app\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    kwargs = connect_kwargs("service=main port=7000")
    assert (kwargs["host"], kwargs["port"], kwargs["user"], kwargs["database"]) == (
        "10.1.1.1", 7000, "ha", "app"
    )


def test_unknown_service_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "none.conf"))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path))
    with pytest.raises(ServiceNotFound, match="'nope' is not defined"):
        connect_kwargs("service=nope")
