"""structlog setup: JSON lines for services, readable console output for people.

Every event passes through :func:`redact_processor` before it is rendered, so a
password in a DSN, an exception message or a nested value never reaches the
output, whichever renderer is in use.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from hacontrol.redact import redact_dsn, redact_text, redact_value

__all__ = [
    "configure_logging",
    "get_logger",
    "redact_dsn",
    "redact_processor",
    "redact_text",
]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def redact_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: scrub secrets from every value of the event, nested too."""
    return {key: redact_value(value, key) for key, value in event_dict.items()}


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        allowed = ", ".join(sorted(set(_LEVELS) - {"warn"}))
        raise ValueError(f"unknown log level {level!r}; allowed: {allowed}") from None


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


def configure_logging(
    level: str | int = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog (and the standard ``logging`` module) to ``stream``.

    ``json=None`` picks JSON lines when ``stream`` is not a terminal and a
    console renderer when it is; colours only on a terminal and never when
    ``NO_COLOR`` is set. Timestamps are ISO 8601 in UTC.
    """
    out = stream if stream is not None else sys.stderr
    threshold = _level_number(level)
    tty = _is_tty(out)
    use_json = (not tty) if json is None else json

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text here so that redaction sees them too (a
        # connection error's message may quote the DSN it failed with).
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        redact_processor,
    ]
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer(default=_json_default)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty and "NO_COLOR" not in os.environ,
            exception_formatter=structlog.dev.plain_traceback,
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, threshold, [*shared[:-1]], renderer)


def _json_default(value: Any) -> str:
    return redact_text(str(value))


def _route_stdlib(
    out: TextIO, threshold: int, shared: list[Processor], renderer: Processor
) -> None:
    """Render records from libraries using ``logging`` the same way (and redacted)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("hacontrol")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "hacontrol"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger, optionally bound to ``logger=name`` and ``initial`` values."""
    logger = structlog.get_logger()
    if name is not None:
        initial = {"logger": name, **initial}
    return logger.bind(**initial) if initial else logger
