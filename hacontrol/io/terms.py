"""Ending the sessions an older controller term left open on a node (``[dcs]``).

A leader frozen between its last check and its next statement may hold a
connection with a command about to be sent. Its term's connections are named
``hacontrol epoch N`` (:func:`hacontrol.io.pg.set_term`); a new leader ends, on
every node it reaches, the sessions of every lower epoch before its first action,
so such a command finds its connection gone. A client that names itself so is
ended too, which is harmless: ending a session never writes.
"""

from __future__ import annotations

import time

from hacontrol.core.model import NodeSpec
from hacontrol.io.errors import short_error
from hacontrol.io.pg import connect

__all__ = ["end_older_terms"]

_SQL = r"""
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE application_name ~ '^hacontrol epoch [0-9]{1,18}$'
   AND split_part(application_name, ' ', 3)::bigint < $1
   AND pid <> pg_backend_pid()
"""


async def end_older_terms(spec: NodeSpec, epoch: int, *, timeout: float) -> tuple[bool, str]:
    """End ``spec``'s sessions of terms before ``epoch``: (reached, what was done)."""
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, timeout)
    except Exception as exc:
        return False, f"not reached: {short_error(exc)}"
    try:
        ended = await conn.fetchval(_SQL, epoch)
        took = time.monotonic() - started
        return True, f"{ended} session(s) of older terms ended in {took:.3f} s"
    except Exception as exc:
        return False, short_error(exc)
    finally:
        conn.terminate()
