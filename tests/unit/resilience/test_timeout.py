"""Per-attempt timeout."""

from __future__ import annotations

import asyncio

import pytest

from hacontrol.resilience import AttemptTimeoutError, Timeout


async def test_fast_call_returns() -> None:
    async def ok(x: int) -> int:
        return x

    t = Timeout(1.0)
    assert await t.call(ok, 3) == 3
    assert t.timeouts == 0


async def test_slow_call_is_cancelled_and_raises_timeout() -> None:
    cancelled = False

    async def hang() -> int:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled = True
            raise
        return 1

    t = Timeout(0.02, name="probe")
    with pytest.raises(TimeoutError) as info:
        await t.call(hang)
    assert isinstance(info.value, AttemptTimeoutError)
    assert cancelled and t.timeouts == 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_outside_cancellation_is_not_a_timeout() -> None:
    started = asyncio.Event()

    async def hang() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    t = Timeout(5.0)
    task = asyncio.create_task(t.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert t.timeouts == 0


async def test_attempt_that_swallows_the_cancel_leaves_no_pending_cancel() -> None:
    async def stubborn() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return 5
        return 1

    t = Timeout(0.02)
    assert await t.call(stubborn) == 5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # no stray cancellation arrives afterwards


def test_rejects_non_positive() -> None:
    with pytest.raises(ValueError):
        Timeout(0)
