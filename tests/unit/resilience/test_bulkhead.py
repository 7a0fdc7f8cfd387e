"""Bulkhead: concurrency cap, bounded queue, bounded wait, FIFO hand-off, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from hacontrol.resilience import Bulkhead, BulkheadFullError


class Gate:
    """A call that blocks until released and records how many run at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.order: list[int] = []

    async def __call__(self, i: int = 0) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.order.append(i)
        try:
            await self.event.wait()
        finally:
            self.running -= 1
        return i


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_caps_concurrency_and_queues_in_order() -> None:
    bh = Bulkhead("b", max_concurrent=2, max_queue=10, max_wait=None)
    gate = Gate()
    tasks = [asyncio.create_task(bh.call(gate, i)) for i in range(6)]
    await settle()
    s = bh.stats()
    assert (s.active, s.queued) == (2, 4)
    gate.event.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 1.0) == list(range(6))
    assert gate.peak == 2 and gate.order == list(range(6))
    s = bh.stats()
    assert (s.active, s.queued, s.calls, s.max_active, s.rejected) == (0, 0, 6, 2, 0)


async def test_full_queue_rejects_at_once() -> None:
    bh = Bulkhead("b", max_concurrent=1, max_queue=1, max_wait=None)
    gate = Gate()
    first = asyncio.create_task(bh.call(gate))
    second = asyncio.create_task(bh.call(gate))
    await settle()
    with pytest.raises(BulkheadFullError) as info:
        await bh.call(gate)
    assert "queue full" in str(info.value)
    assert bh.stats().rejected == 1
    gate.event.set()
    await asyncio.wait_for(asyncio.gather(first, second), 1.0)


async def test_zero_wait_rejects_when_busy() -> None:
    bh = Bulkhead("b", max_concurrent=1, max_wait=0)
    gate = Gate()
    first = asyncio.create_task(bh.call(gate))
    await settle()
    with pytest.raises(BulkheadFullError):
        await bh.call(gate)
    gate.event.set()
    await asyncio.wait_for(first, 1.0)


async def test_max_wait_expires() -> None:
    bh = Bulkhead("b", max_concurrent=1, max_queue=5, max_wait=0.02)
    gate = Gate()
    first = asyncio.create_task(bh.call(gate))
    await settle()
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BulkheadFullError):
        await bh.call(gate)
    assert 0.015 <= loop.time() - start < 0.5
    s = bh.stats()
    assert (s.queued, s.rejected, s.active) == (0, 1, 1)
    gate.event.set()
    await asyncio.wait_for(first, 1.0)
    assert bh.stats().active == 0


async def test_failure_releases_the_slot() -> None:
    bh = Bulkhead("b", max_concurrent=1)

    async def boom() -> int:
        raise RuntimeError()

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await bh.call(boom)
    assert bh.stats().active == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    bh = Bulkhead("b", max_concurrent=1, max_queue=5, max_wait=None)
    gate = Gate()
    first = asyncio.create_task(bh.call(gate, 1))
    waiting = asyncio.create_task(bh.call(gate, 2))
    third = asyncio.create_task(bh.call(gate, 3))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert bh.stats().queued == 1
    gate.event.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, third), 1.0)) == [1, 3]
    assert gate.order == [1, 3] and bh.stats().active == 0


async def test_waiter_cancelled_after_being_granted_passes_the_slot_on() -> None:
    bh = Bulkhead("b", max_concurrent=1, max_queue=5, max_wait=None)
    release = asyncio.Event()
    ran: list[str] = []

    async def mark(name: str) -> None:
        ran.append(name)
        await release.wait()

    async with bh:  # this task holds the only slot
        granted = asyncio.create_task(bh.call(mark, "granted"))
        after = asyncio.create_task(bh.call(mark, "after"))
        await settle()
        assert bh.stats().queued == 2
    # Leaving handed the slot to `granted`, which has not run yet: cancel it now.
    granted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted
    release.set()
    await asyncio.wait_for(after, 1.0)
    assert ran == ["after"]
    assert bh.stats().active == 0 and bh.stats().queued == 0


async def test_async_with() -> None:
    bh = Bulkhead("b", max_concurrent=1, max_wait=0)
    async with bh:
        assert bh.active == 1
        with pytest.raises(BulkheadFullError):
            async with bh:
                pass
    assert bh.active == 0 and bh.stats().calls == 1


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        Bulkhead("b", max_concurrent=0)
    with pytest.raises(ValueError):
        Bulkhead("b", max_queue=-1)
    with pytest.raises(ValueError):
        Bulkhead("b", max_wait=-1.0)
