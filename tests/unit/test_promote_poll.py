"""act.promote's watch for the end of recovery, without a database."""

from __future__ import annotations

import time
from typing import Any

from hacontrol.io import steps as act


class FakeConn:
    """Answers pg_is_in_recovery() with True ``recovering`` times, then False; the
    query for sessions holding back replay ends one session each time."""

    def __init__(self, recovering: int) -> None:
        self.recovering = recovering
        self.asked = 0
        self.released = 0

    async def fetchval(self, query: str, *args: Any) -> bool | int:
        if query == act.RELEASE_REPLAY_SQL:
            self.released += 1
            return 1
        assert query == "SELECT pg_is_in_recovery()"
        self.asked += 1
        return self.asked <= self.recovering


async def test_returns_as_soon_as_recovery_ended() -> None:
    conn = FakeConn(recovering=3)
    started = time.monotonic()
    left, ended = await act._left_recovery(conn, time.monotonic() + 5)
    elapsed = time.monotonic() - started
    assert left
    assert conn.asked == 4
    # Recovery ended before the first look for sessions holding back replay.
    assert ended == 0 and conn.released == 0
    # Three short pauses, not the server's 100 ms poll.
    assert elapsed < 0.08


async def test_gives_up_at_the_deadline() -> None:
    conn = FakeConn(recovering=10**6)
    started = time.monotonic()
    left, ended = await act._left_recovery(conn, time.monotonic() + 0.5)
    elapsed = time.monotonic() - started
    assert not left
    assert 0.5 <= elapsed < 0.7
    assert conn.asked >= 10
    # Sessions holding back replay are looked for every RELEASE_EVERY_S meanwhile.
    assert ended == conn.released and 2 <= ended <= 3
