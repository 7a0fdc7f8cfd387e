from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from psycopg.conninfo import conninfo_to_dict

from hacontrol.act import standby_conninfo
from hacontrol.model import NodeSpec
from hacontrol.pgconn import connect_kwargs, endpoint


def _query(kwargs: dict[str, Any]) -> dict[str, str]:
    uri = urlparse(kwargs["dsn"])
    assert uri.scheme == "postgresql" and not uri.netloc
    return {k: v[0] for k, v in parse_qs(uri.query).items()}


def test_key_value_dsn_travels_as_uri_query() -> None:
    kwargs = connect_kwargs(
        "host=10.0.0.1 port=6432 user=ha dbname=app password='s3 cret' sslmode=verify-full "
        "sslrootcert=/etc/ca.pem sslcert=/etc/c.pem sslkey=/etc/k.pem connect_timeout=3 "
        "keepalives=1 options='-c search_path=x'"
    )
    assert _query(kwargs) == {
        "host": "10.0.0.1", "port": "6432", "user": "ha", "dbname": "app",
        "password": "s3 cret", "sslmode": "verify-full", "sslrootcert": "/etc/ca.pem",
        "sslcert": "/etc/c.pem", "sslkey": "/etc/k.pem",
    }
    # libpq-only knobs must not reach the server as settings.
    assert kwargs["server_settings"] == {"application_name": "hacontrol", "search_path": "x"}


def test_uri_dsn_service_and_application_name() -> None:
    kwargs = connect_kwargs("postgresql://ha@db1:5433/postgres?application_name=probe")
    assert _query(kwargs) == {"host": "db1", "port": "5433", "user": "ha", "dbname": "postgres"}
    assert kwargs["server_settings"]["application_name"] == "probe"
    assert _query(connect_kwargs("service=main port=7000")) == {"service": "main", "port": "7000"}


def test_multi_host_takes_the_first_host() -> None:
    assert _query(connect_kwargs("host=a,b port=1,2")) == {"host": "a", "port": "1"}


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
