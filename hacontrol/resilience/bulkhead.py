"""Bulkhead: a cap on concurrent calls, a bounded FIFO queue and a bounded wait."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ParamSpec, TypeVar

from .errors import BulkheadFullError

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    """Counters and current occupancy of one bulkhead."""

    name: str
    max_concurrent: int
    active: int
    queued: int
    calls: int
    rejected: int
    max_active: int


def _expire(fut: asyncio.Future[None], error: BulkheadFullError) -> None:
    if not fut.done():
        fut.set_exception(error)


class Bulkhead:
    """At most `max_concurrent` calls at once; up to `max_queue` more wait, each for at most
    `max_wait` seconds (None: until a slot frees). Otherwise BulkheadFullError.

    A freed slot is handed straight to the oldest waiter, so a newcomer cannot overtake the
    queue.
    """

    __slots__ = (
        "_max",
        "_max_queue",
        "_max_wait",
        "_waiters",
        "active",
        "calls",
        "max_active",
        "name",
        "rejected",
    )

    def __init__(
        self,
        name: str = "bulkhead",
        *,
        max_concurrent: int = 10,
        max_queue: int = 10,
        max_wait: float | None = 1.0,
    ) -> None:
        if max_concurrent < 1 or max_queue < 0 or (max_wait is not None and max_wait < 0):
            raise ValueError("max_concurrent >= 1, max_queue >= 0 and max_wait >= 0 required")
        self.name = name
        self._max = max_concurrent
        self._max_queue = max_queue
        self._max_wait = max_wait
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.active = 0
        self.calls = 0
        self.rejected = 0
        self.max_active = 0

    @property
    def queued(self) -> int:
        """Callers waiting for a slot now."""
        return len(self._waiters)

    def stats(self) -> BulkheadStats:
        """Counters and occupancy now."""
        return BulkheadStats(
            self.name,
            self._max,
            self.active,
            len(self._waiters),
            self.calls,
            self.rejected,
            self.max_active,
        )

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `await fn(*args, **kwargs)` in a slot."""
        if self.active < self._max and not self._waiters:
            self.active += 1
        else:
            await self._wait_for_slot()
        self.calls += 1
        if self.active > self.max_active:
            self.max_active = self.active
        try:
            return await fn(*args, **kwargs)
        finally:
            self._release()

    async def __aenter__(self) -> Bulkhead:
        if self.active < self._max and not self._waiters:
            self.active += 1
        else:
            await self._wait_for_slot()
        self.calls += 1
        if self.active > self.max_active:
            self.max_active = self.active
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes on; `active` stays the same
                return
        self.active -= 1

    async def _wait_for_slot(self) -> None:
        if self._max_wait == 0 or len(self._waiters) >= self._max_queue:
            self.rejected += 1
            reason = "no free slot" if self._max_wait == 0 else "queue full"
            raise BulkheadFullError(self.name, reason)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        handle = None
        if self._max_wait is not None:
            error = BulkheadFullError(self.name, f"no slot within {self._max_wait:g}s")
            handle = loop.call_later(self._max_wait, _expire, fut, error)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Granted a slot, then cancelled before running: pass the slot on.
                self._release()
            else:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                if not fut.cancelled() and isinstance(fut.exception(), BulkheadFullError):
                    self.rejected += 1
            raise
        finally:
            if handle is not None:
                handle.cancel()
