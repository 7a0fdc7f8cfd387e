"""Retry: backoff schedules, what is retried, attempts, deadlines and cancellation."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from hacontrol.resilience import (
    AttemptTimeoutError,
    Backoff,
    BulkheadFullError,
    CircuitOpenError,
    ManualClock,
    Retry,
    RetryError,
)


class Flaky:
    """Fails `fails` times with `exc`, then returns `value`."""

    def __init__(self, fails: int, exc: BaseException | None = None, value: int = 7) -> None:
        self.fails = fails
        self.exc = exc if exc is not None else ConnectionError("refused")
        self.value = value
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.exc
        return self.value


def make(clock: ManualClock, **kw: object) -> Retry:
    kw.setdefault("jitter", "none")
    return Retry("r", clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


async def test_success_first_time(clock: ManualClock) -> None:
    r = make(clock)
    assert await r.call(Flaky(0)) == 7
    s = r.stats()
    assert (s.calls, s.attempts, s.retries, s.successes) == (1, 1, 0, 1)
    assert clock.slept == []


async def test_retries_until_success(clock: ManualClock) -> None:
    fn = Flaky(2)
    r = make(clock, attempts=3, backoff=Backoff.exponential(0.1))
    assert await r.call(fn) == 7
    assert fn.calls == 3
    assert clock.slept == pytest.approx([0.1, 0.2])
    assert r.stats().retries == 2


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        (Backoff.fixed(0.5), [0.5, 0.5, 0.5, 0.5, 0.5]),
        (Backoff.linear(0.1), [0.1, 0.2, 0.3, 0.4, 0.5]),
        (Backoff.linear(0.1, step=0.05), [0.1, 0.15, 0.2, 0.25, 0.3]),
        (Backoff.exponential(0.1), [0.1, 0.2, 0.4, 0.8, 1.6]),
        (Backoff.exponential(0.1, multiplier=3.0, cap=1.0), [0.1, 0.3, 0.9, 1.0, 1.0]),
        (Backoff.fibonacci(0.1), [0.1, 0.1, 0.2, 0.3, 0.5]),
        (Backoff.fibonacci(0.1, cap=0.25), [0.1, 0.1, 0.2, 0.25, 0.25]),
    ],
)
async def test_backoff_schedules(clock: ManualClock, backoff: Backoff, delays: list[float]) -> None:
    r = make(clock, attempts=6, backoff=backoff)
    with pytest.raises(RetryError):
        await r.call(Flaky(100))
    assert clock.slept == pytest.approx(delays)


def test_capped_backoff_never_overflows() -> None:
    assert Backoff.exponential(0.1, cap=5.0).delay(10_000) == 5.0
    assert Backoff.fibonacci(0.1, cap=5.0).delay(10_000) == 5.0


async def test_exhausted_raises_retry_error_with_last_error(clock: ManualClock) -> None:
    fn = Flaky(100, ConnectionError("third"))
    r = make(clock, attempts=3)
    with pytest.raises(RetryError) as info:
        await r.call(fn)
    assert info.value.attempts == 3 == fn.calls
    assert isinstance(info.value.last_error, ConnectionError)
    assert info.value.reason == "attempts exhausted"
    assert r.stats().exhausted == 1


async def test_gives_up_on_other_exceptions_unchanged(clock: ManualClock) -> None:
    fn = Flaky(100, KeyError("bad"))
    r = make(clock, retry_on=(ConnectionError,))
    with pytest.raises(KeyError):
        await r.call(fn)
    assert fn.calls == 1 and r.stats().not_retried == 1


@pytest.mark.parametrize("exc", [CircuitOpenError("b", "open"), BulkheadFullError("h", "full")])
async def test_breaker_and_bulkhead_rejections_are_not_retried(
    clock: ManualClock, exc: Exception
) -> None:
    fn = Flaky(100, exc)
    with pytest.raises(type(exc)):
        await make(clock, attempts=5).call(fn)
    assert fn.calls == 1


async def test_give_up_list_and_predicate(clock: ManualClock) -> None:
    fn = Flaky(100, ConnectionResetError())
    r = make(clock, attempts=5, give_up_on=(ConnectionResetError,))
    with pytest.raises(ConnectionResetError):
        await r.call(fn)
    assert fn.calls == 1
    fn2 = Flaky(100, RuntimeError("permanent"))
    r2 = make(clock, attempts=5, retry_if=lambda e: "transient" in str(e))
    with pytest.raises(RuntimeError):
        await r2.call(fn2)
    assert fn2.calls == 1


async def test_retry_on_result(clock: ManualClock) -> None:
    values = iter([None, None, 3])

    async def fn() -> int | None:
        return next(values)

    r = make(clock, attempts=5, retry_if_result=lambda v: v is None)
    assert await r.call(fn) == 3
    r2 = make(clock, attempts=2, retry_if_result=lambda v: v is None)

    async def never() -> None:
        return None

    with pytest.raises(RetryError) as info:
        await r2.call(never)
    assert info.value.last_error is None and info.value.attempts == 2


async def test_cancelled_error_is_never_retried(clock: ManualClock) -> None:
    fn = Flaky(100, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await make(clock, attempts=5).call(fn)
    assert fn.calls == 1


async def test_cancel_during_backoff_propagates() -> None:
    calls = 0

    async def fn() -> int:
        nonlocal calls
        calls += 1
        raise ConnectionError()

    r = Retry("r", attempts=5, backoff=Backoff.fixed(10.0), jitter="none")
    task = asyncio.create_task(r.call(fn))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_deadline_between_attempts_gives_up_without_oversleeping(clock: ManualClock) -> None:
    fn = Flaky(100)
    start = clock.now
    r = make(clock, attempts=None, deadline=1.0, backoff=Backoff.exponential(0.1))

    async def slow_fail() -> int:
        clock.advance(0.2)
        return await fn()

    with pytest.raises(RetryError) as info:
        await r.call(slow_fail)
    # 0.2 + .1 + 0.2 + .2 + 0.2 = 0.9; the next 0.4 s sleep would overrun: give up at 0.9.
    assert clock.now - start == pytest.approx(0.9)
    assert info.value.attempts == 3
    assert info.value.reason == "deadline exceeded"


async def test_deadline_is_enforced_during_an_attempt() -> None:
    cancelled = False

    async def hang() -> int:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled = True
            raise
        return 1

    r = Retry("r", attempts=3, deadline=0.05)
    start = time.monotonic()
    with pytest.raises(RetryError) as info:
        await r.call(hang)
    elapsed = time.monotonic() - start
    assert 0.04 <= elapsed < 0.5
    assert cancelled
    assert isinstance(info.value.last_error, AttemptTimeoutError)
    assert info.value.attempts == 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_deadline_attempt_success_passes_through() -> None:
    r = Retry("r", attempts=3, deadline=5.0)
    assert (
        await r.call(
            Flaky(1),
        )
        == 7
    )
    assert r.stats().attempts == 2


async def test_outside_cancel_under_deadline_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def hang() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    r = Retry("r", attempts=3, deadline=5.0)
    task = asyncio.create_task(r.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.stats().deadline_hits == 0


async def test_injected_rng_makes_jitter_reproducible(clock: ManualClock) -> None:
    def run_once() -> Retry:
        return make(
            clock,
            attempts=4,
            jitter="full",
            backoff=Backoff.exponential(1.0),
            rng=random.Random(42),
        )

    clock.slept.clear()
    with pytest.raises(RetryError):
        await run_once().call(Flaky(100))
    first = list(clock.slept)
    clock.slept.clear()
    with pytest.raises(RetryError):
        await run_once().call(Flaky(100))
    assert clock.slept == first
    rng = random.Random(42)
    assert first == pytest.approx([rng.uniform(0, v) for v in (1.0, 2.0, 4.0)])


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        Retry(attempts=None, deadline=None)
    with pytest.raises(ValueError):
        Retry(attempts=0)
    with pytest.raises(ValueError):
        Retry(deadline=0)
    with pytest.raises(ValueError):
        Retry(jitter="wild")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Backoff(base=-1)
