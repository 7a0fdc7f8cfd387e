"""Logging setup and secret redaction: a password never reaches the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from hacontrol.core.model import NodeSpec
from hacontrol.redact import (
    MASK,
    dsn_password,
    is_secret_key,
    redact_dsn,
    redact_mapping,
    redact_text,
    redact_value,
)
from hacontrol.service.logs import configure_logging, get_logger, redact_processor

SECRET = "S3cr3t-pw"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging; put structlog and the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


# ---------------------------------------------------------------- redact_dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("host=h password=S3cr3t-pw user=u", "host=h password=*** user=u"),
        ("host=h password='S3cr3t-pw' user=u", "host=h password=*** user=u"),
        ("host=h password = 'S3cr3t pw' user=u", "host=h password = *** user=u"),
        (r"host=h password='S3cr3t\'pw' user=u", "host=h password=*** user=u"),
        (r"host=h password=S3cr3t\ pw user=u", "host=h password=*** user=u"),
        ("password=S3cr3t-pw", "password=***"),
        ("host=h sslpassword=S3cr3t-pw", "host=h sslpassword=***"),
        ("postgresql://u:S3cr3t-pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:S3cr3t-pw@h1:5432,h2:5433/db?sslmode=require",
         "postgres://u:***@h1:5432,h2:5433/db?sslmode=require"),
        ("postgresql://u:p%40ss%3Aword@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3cr3t@pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=S3cr3t-pw&sslmode=require",
         "postgresql://u@h/db?password=***"),
        ("postgresql://h/db?user=u&password=S3cr3t-pw", "postgresql://h/db?user=u&password=***"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        ("host=h user=u dbname=d", "host=h user=u dbname=d"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("service=prod", "service=prod"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_redact_dsn_catches_spellings_the_patterns_miss() -> None:
    # libpq decodes percent-encoded query keys; the parse-backed check masks it.
    out = redact_dsn("postgresql://h/db?pass%77ord=S3cr3t-pw")
    assert SECRET not in out
    assert dsn_password("postgresql://h/db?pass%77ord=S3cr3t-pw") == SECRET


def test_redact_dsn_of_unparseable_text_still_masks() -> None:
    assert SECRET not in redact_dsn(f"host=h password={SECRET} garbage")
    assert dsn_password("garbage") is None


# ---------------------------------------------------------------- redact_text


@pytest.mark.parametrize(
    "text",
    [
        f"connection to 'host=h password={SECRET}' failed",
        f'FATAL: could not connect with dsn "postgresql://u:{SECRET}@h/db"',
        f"PGPASSWORD={SECRET} psql -h h",
        f"export HACONTROL_API__TOKEN={SECRET}",
        f'{{"password": "{SECRET}", "user": "u"}}',
        f"{{'token': '{SECRET}'}}",
        f"password: {SECRET}",
        f"Authorization: Bearer {SECRET}",
        f"authorization={SECRET}",
        f"api_key={SECRET}",
        f"client_secret = {SECRET}",
        f"line one\npassword: {SECRET}\nline three",
    ],
)
def test_redact_text_hides_secrets(text: str) -> None:
    out = redact_text(text)
    assert SECRET not in out
    assert MASK in out


def test_redact_text_keeps_ordinary_text() -> None:
    text = 'FATAL: password authentication failed for user "hacontrol"; bypass=1 passfile=/x'
    assert redact_text(text) == text
    assert redact_text("") == ""


def test_redact_text_keeps_the_auth_scheme() -> None:
    assert redact_text(f"Authorization: Bearer {SECRET}") == "Authorization: Bearer ***"
    assert redact_text(f"authorization=Basic {SECRET}") == "authorization=Basic ***"


def test_redaction_is_idempotent() -> None:
    once = redact_text(f"host=h password={SECRET} postgresql://u:{SECRET}@h/db")
    assert redact_text(once) == once


# ---------------------------------------------------------------- redact_value


@dataclass
class Holder:
    spec: NodeSpec


def test_redact_value_recurses_and_masks_secret_keys() -> None:
    value: dict[str, Any] = {
        "dsn": f"host=h password={SECRET}",
        "nested": {"Password": SECRET, "list": [f"postgresql://u:{SECRET}@h/db", 3]},
        "tuple": (f"token={SECRET}", None),
        "set": frozenset({f"password={SECRET}"}),
        "auth_token": SECRET,
        "count": 3,
        "ok": True,
        "ratio": 0.5,
        "none": None,
        "empty_password": "",
        "bytes": f"password={SECRET}".encode(),
        "object": Holder(NodeSpec("pg1", f"host=h password={SECRET}")),
    }
    out = redact_value(value)
    assert SECRET not in repr(out)
    assert out["nested"]["Password"] == MASK
    assert out["auth_token"] == MASK
    assert out["count"] == 3 and out["ok"] is True and out["ratio"] == 0.5
    assert out["none"] is None and out["empty_password"] == ""
    assert isinstance(out["tuple"], tuple)
    assert value["nested"]["Password"] == SECRET  # the input is not modified


def test_redact_value_keeps_objects_without_secrets() -> None:
    spec = NodeSpec("pg1", "host=h")
    assert redact_value(spec) is spec
    assert redact_mapping({"spec": spec, "token": "x"}) == {"spec": spec, "token": MASK}


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("PGPASSWORD", True),
        ("sslpassword", True),
        ("api_token", True),
        ("client_secret", True),
        ("Authorization", True),
        ("pwd", True),
        ("user", False),
        ("passfile", False),
        ("dsn", False),
        ("event", False),
    ],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_processor_scrubs_every_value() -> None:
    event = {"event": f"connecting password={SECRET}", "token": SECRET, "n": 1}
    out = redact_processor(None, "info", event)
    assert out == {"event": "connecting password=***", "token": MASK, "n": 1}


# ---------------------------------------------------------------- configured output


def emit_everything(stream: io.StringIO, *, json_output: bool) -> str:
    configure_logging("debug", json=json_output, stream=stream)
    log = get_logger("test")
    log.info(
        "connecting",
        dsn=f"host=h password={SECRET}",
        uri=f"postgresql://u:{SECRET}@h/db",
        nested={"password": SECRET, "items": [f"token={SECRET}"]},
        spec=NodeSpec("pg1", f"host=h password={SECRET}"),
    )
    log.warning(f"inline password={SECRET}")
    try:
        raise ConnectionError(f"could not connect to host=h password={SECRET}")
    except ConnectionError:
        log.exception("probe failed")
    logging.getLogger("asyncpg").warning("library says %s", f"password={SECRET}")
    return stream.getvalue()


def test_json_output_has_no_password() -> None:
    out = emit_everything(io.StringIO(), json_output=True)
    assert SECRET not in out
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["event"] for r in records] == [
        "connecting",
        "inline password=***",
        "probe failed",
        "library says password=***",
    ]
    first = records[0]
    assert first["dsn"] == "host=h password=***"
    assert first["uri"] == "postgresql://u:***@h/db"
    assert first["nested"] == {"password": MASK, "items": ["token=***"]}
    assert first["level"] == "info"
    assert first["logger"] == "test"
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert "ConnectionError: could not connect to host=h password=***" in records[2]["exception"]


def test_console_output_has_no_password() -> None:
    out = emit_everything(io.StringIO(), json_output=False)
    assert SECRET not in out
    assert "connecting" in out
    assert "dsn='host=h password=***'" in out
    assert "ConnectionError: could not connect to host=h password=***" in out
    assert "\x1b[" not in out  # no colours off a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTTY()
    configure_logging(stream=tty)
    structlog.get_logger().info("hello", key="value")
    line = tty.getvalue()
    assert "hello" in line and "key=value" in line
    assert not line.lstrip().startswith("{")
    assert "\x1b[" not in line  # NO_COLOR honoured

    pipe = io.StringIO()
    configure_logging(stream=pipe)
    structlog.get_logger().info("hello", key="value")
    record = json.loads(pipe.getvalue())
    assert record["event"] == "hello" and record["key"] == "value"


def test_level_filters_events() -> None:
    stream = io.StringIO()
    configure_logging("warning", json=True, stream=stream)
    log = structlog.get_logger()
    log.info("dropped")
    log.warning("kept")
    logging.getLogger("lib").info("dropped too")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["kept"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud", stream=io.StringIO())


def test_reconfiguring_does_not_duplicate_stdlib_output() -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    configure_logging(json=True, stream=stream)
    logging.getLogger("lib").warning("once")
    assert stream.getvalue().count('"once"') == 1


def test_an_exception_class_name_is_not_a_key_and_the_word_password_stays() -> None:
    text = 'cannot connect: InvalidPasswordError: password authentication failed for user "x"'
    assert redact_text(text) == text
    assert redact_text("password: hunter2") == "password: ***"
    assert redact_text("error: db_password: hunter2") == "error: db_password: ***"
