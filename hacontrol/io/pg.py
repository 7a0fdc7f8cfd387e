"""Opening asyncpg connections to a node, with libpq's meaning of its DSN
(:mod:`hacontrol.io.dsn`) and libpq's socket options."""

from __future__ import annotations

import socket
from typing import Any

import asyncpg

from hacontrol.io.dsn import connect_plan
from hacontrol.io.dsn_params import APPLICATION_NAME

# While this controller leads a [dcs] term: the application_name of its new
# connections ("hacontrol epoch N"), so that the next leader can end the sessions
# an older term left open (hacontrol.io.terms). None: the plain default.
_term_name: str | None = None


def set_term(epoch: int | None) -> None:
    """Name this process's new connections after the term it leads (None: none)."""
    global _term_name
    _term_name = None if epoch is None else term_application_name(epoch)


def term_application_name(epoch: int) -> str:
    """The application_name of a connection opened during the term ``epoch``."""
    return f"{APPLICATION_NAME} epoch {epoch}"


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
    if _term_name is not None and settings.get("application_name") == APPLICATION_NAME:
        settings["application_name"] = _term_name
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
