"""act.promote's watch for the end of recovery, without a database."""

from __future__ import annotations

import time
from typing import Any

from hacontrol import act


class FakeConn:
    """Answers pg_is_in_recovery() with True ``recovering`` times, then False."""

    def __init__(self, recovering: int) -> None:
        self.recovering = recovering
        self.asked = 0

    async def fetchval(self, query: str, *args: Any) -> bool:
        assert query == "SELECT pg_is_in_recovery()"
        self.asked += 1
        return self.asked <= self.recovering


async def test_returns_as_soon_as_recovery_ended() -> None:
    conn = FakeConn(recovering=3)
    started = time.monotonic()
    assert await act._left_recovery(conn, time.monotonic() + 5)
    elapsed = time.monotonic() - started
    assert conn.asked == 4
    # Three short pauses, not the server's 100 ms poll.
    assert elapsed < 0.08


async def test_gives_up_at_the_deadline() -> None:
    conn = FakeConn(recovering=10**6)
    started = time.monotonic()
    assert not await act._left_recovery(conn, time.monotonic() + 0.2)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.4
    assert conn.asked >= 10
