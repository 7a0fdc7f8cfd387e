"""Injectable monotonic clock and sleep, plus a manual clock for tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Monotonic only: wall-clock jumps (NTP, DST, an operator's `date -s`) must never open or
# close a breaker or stretch a deadline.
monotonic: Clock = time.monotonic
sleep: Sleep = asyncio.sleep


class ManualClock:
    """A clock that only moves when told to; its `sleep` advances it instantly.

    Lets tests drive open durations, slow-call thresholds and backoff without real waits.
    """

    __slots__ = ("now", "slept")

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the requested delay, advance by it and yield once to the loop."""
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
