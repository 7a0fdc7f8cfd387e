"""Policy: the fixed composition order and how the layers interact."""

from __future__ import annotations

import asyncio

import pytest

from hacontrol.resilience import (
    AttemptTimeoutError,
    Backoff,
    BreakerRegistry,
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    ManualClock,
    Policy,
    Retry,
    RetryError,
    State,
    Timeout,
)


def state_of(b: CircuitBreaker) -> State:
    """Read the state through a call so the type checker does not narrow it."""
    return b.state


def test_public_names_import() -> None:
    import hacontrol.resilience as r

    for name in (
        "CircuitBreaker",
        "Retry",
        "Bulkhead",
        "Policy",
        "CircuitOpenError",
        "BulkheadFullError",
        "RetryError",
    ):
        assert hasattr(r, name)


def layers(clock: ManualClock, registry: BreakerRegistry, **breaker_kw: object) -> Policy:
    breaker_kw.setdefault("minimum_calls", 2)
    breaker_kw.setdefault("window_size", 4)
    return Policy(
        "p",
        retry=Retry(
            "p",
            attempts=4,
            backoff=Backoff.fixed(0.5),
            jitter="none",
            clock=clock,
            sleep=clock.sleep,
        ),
        breaker=CircuitBreaker("p", clock=clock, registry=registry, **breaker_kw),  # type: ignore[arg-type]
        bulkhead=Bulkhead("p", max_concurrent=1, max_wait=0),
        timeout=0.02,
    )


async def test_success_through_every_layer(clock: ManualClock, registry: BreakerRegistry) -> None:
    p = layers(clock, registry)

    async def ok(x: int, *, y: int) -> int:
        return x + y

    assert await p.call(ok, 1, y=2) == 3
    s = p.stats()
    assert s.breaker is not None and s.breaker.successes == 1
    assert s.retry is not None and s.retry.attempts == 1
    assert s.bulkhead is not None and s.bulkhead.calls == 1


async def test_timed_out_attempt_is_a_breaker_failure_and_is_retried(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    p = layers(clock, registry, minimum_calls=10)
    calls = 0

    async def sometimes_hangs() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return 9

    assert await p.call(sometimes_hangs) == 9
    s = p.stats()
    assert s.timeouts == 1 and calls == 2
    assert s.breaker is not None and (s.breaker.failures, s.breaker.successes) == (1, 1)


async def test_open_breaker_stops_the_retry_at_once(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    p = layers(clock, registry)
    calls = 0

    async def down() -> int:
        nonlocal calls
        calls += 1
        raise ConnectionError()

    with pytest.raises(CircuitOpenError):
        await p.call(down)
    # Two failures reach minimum_calls and trip; the third attempt is rejected, not retried.
    assert calls == 2
    assert p.breaker is not None and state_of(p.breaker) is State.OPEN
    assert clock.slept == [0.5, 0.5]


async def test_bulkhead_slot_not_held_during_backoff(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    p = layers(clock, registry, minimum_calls=10)
    assert p.bulkhead is not None
    active_during_sleep: list[int] = []
    bulkhead = p.bulkhead

    async def watching_sleep(d: float) -> None:
        active_during_sleep.append(bulkhead.active)

    assert p.retry is not None
    p.retry._sleep = watching_sleep
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError()
        return 1

    assert await p.call(flaky) == 1
    assert active_during_sleep == [0, 0]


async def test_full_bulkhead_is_not_retried(clock: ManualClock, registry: BreakerRegistry) -> None:
    p = layers(clock, registry)
    gate = asyncio.Event()

    async def hold() -> int:
        await gate.wait()
        return 1

    p.timeout = None
    p2 = Policy("p2", retry=p.retry, bulkhead=p.bulkhead)
    holder = asyncio.create_task(p2.call(hold))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await p2.call(hold)
    gate.set()
    assert await asyncio.wait_for(holder, 1.0) == 1


async def test_fallback_gets_the_final_error(clock: ManualClock, registry: BreakerRegistry) -> None:
    seen: list[Exception] = []

    async def fallback(exc: Exception) -> str:
        seen.append(exc)
        return "cached"

    p = Policy(
        "f",
        retry=Retry("f", attempts=2, jitter="none", clock=clock, sleep=clock.sleep),
        fallback=fallback,
        fallback_on=(RetryError,),
    )

    async def down() -> str:
        raise ConnectionError()

    assert await p.call(down) == "cached"
    assert isinstance(seen[0], RetryError) and seen[0].attempts == 2

    async def bad() -> str:
        raise KeyError()

    with pytest.raises(KeyError):  # not in fallback_on
        await Policy("g", fallback=fallback, fallback_on=(RetryError,)).call(bad)
    assert p.stats().fallbacks == 1


async def test_fallback_never_sees_cancellation() -> None:
    called = False

    async def fallback(exc: Exception) -> int:
        nonlocal called
        called = True
        return 0

    started = asyncio.Event()

    async def hang() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    p = Policy("c", fallback=fallback, timeout=5.0)
    task = asyncio.create_task(p.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not called


async def test_cancel_mid_attempt_releases_everything(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    p = layers(clock, registry)
    p.timeout = None
    p = Policy("p3", retry=p.retry, breaker=p.breaker, bulkhead=p.bulkhead, timeout=5.0)
    started = asyncio.Event()

    async def hang() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    task = asyncio.create_task(p.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = p.stats()
    assert s.bulkhead is not None and s.bulkhead.active == 0
    assert s.breaker is not None and (s.breaker.failures, s.breaker.ignored) == (0, 1)
    assert s.retry is not None and s.retry.attempts == 1


async def test_deadline_mid_attempt_through_policy(registry: BreakerRegistry) -> None:
    breaker = CircuitBreaker("d", registry=registry, consecutive_failures=1)
    p = Policy(
        "d",
        retry=Retry("d", attempts=5, deadline=0.05),
        breaker=breaker,
        bulkhead=Bulkhead("d", max_concurrent=1),
        timeout=Timeout(5.0),
    )

    async def hang() -> int:
        await asyncio.sleep(10)
        return 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(RetryError) as info:
        await p.call(hang)
    assert loop.time() - start < 0.5
    assert isinstance(info.value.last_error, AttemptTimeoutError)
    # The deadline cancelled the attempt: that is the caller giving up, not the node failing.
    assert state_of(breaker) is State.CLOSED and breaker.stats().ignored == 1
    assert p.bulkhead is not None and p.bulkhead.active == 0


async def test_for_node_builds_named_registered_layers(registry: BreakerRegistry) -> None:
    p = Policy.for_node("pg1.probe", timeout=1.0, registry=registry, minimum_calls=3)
    assert registry.get("pg1.probe") is p.breaker
    assert p.retry is not None and p.bulkhead is not None and p.timeout is not None

    async def ok() -> int:
        return 1

    assert await p.call(ok) == 1
    action = Policy.for_node("pg1.action", retry=False, registry=registry)
    assert action.retry is None
    assert [b.name for b in registry] == ["pg1.action", "pg1.probe"]


async def test_empty_policy_is_a_plain_call() -> None:
    async def ok() -> int:
        return 4

    assert await Policy().call(ok) == 4
