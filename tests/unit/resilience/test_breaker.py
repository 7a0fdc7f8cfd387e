"""Circuit breaker behaviour, driven by a manual clock."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import pytest

from hacontrol.resilience import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    ManualClock,
    State,
)
from hacontrol.resilience import clock as clock_module


def state_of(b: CircuitBreaker) -> State:
    """Read the state through a call so the type checker does not narrow it."""
    return b.state


class Boom(Exception):
    pass


async def ok() -> int:
    return 1


async def fail() -> int:
    raise Boom("down")


def make(clock: ManualClock, registry: BreakerRegistry, **kw: Any) -> CircuitBreaker:
    kw.setdefault("minimum_calls", 4)
    kw.setdefault("window_size", 4)
    kw.setdefault("open_duration", 10.0)
    return CircuitBreaker("b", clock=clock, registry=registry, **kw)


async def run(b: CircuitBreaker, fn: Any) -> str:
    try:
        await b.call(fn)
    except CircuitOpenError:
        return "rejected"
    except Boom:
        return "failed"
    return "ok"


async def trip(b: CircuitBreaker, n: int = 4) -> None:
    for _ in range(n):
        await run(b, fail)
    assert state_of(b) is State.OPEN


async def test_closed_passes_results_and_counts(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry)
    assert await b.call(ok) == 1
    with pytest.raises(Boom):
        await b.call(fail)
    s = b.stats()
    assert (s.calls, s.successes, s.failures, s.state) == (2, 1, 1, State.CLOSED)
    assert s.window_calls == 2 and s.failure_rate == 0.5


async def test_opens_on_failure_rate_only_after_minimum_calls(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, minimum_calls=5, window_size=10, failure_rate_threshold=0.5)
    for _ in range(4):
        await run(b, fail)
    assert state_of(b) is State.CLOSED  # 100% failures but only 4 calls
    await run(b, ok)  # the 5th call reaches the minimum: 4/5 >= 50%
    assert state_of(b) is State.OPEN


async def test_failure_rate_below_threshold_stays_closed(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, window_size=10, minimum_calls=4, failure_rate_threshold=0.5)
    for fn in (ok, fail, ok, ok, fail, ok, ok, ok):
        await run(b, fn)
    assert state_of(b) is State.CLOSED
    assert b.stats().failure_rate == 0.25


async def test_count_window_forgets_oldest_outcomes(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, window_size=4, minimum_calls=4, failure_rate_threshold=0.75)
    for fn in (fail, fail, ok, ok, ok, ok, fail, fail):
        await run(b, fn)
    # The first two failures slid out: window is ok, ok, fail, fail -> 50% < 75%.
    assert state_of(b) is State.CLOSED
    assert b.stats().window_calls == 4


async def test_consecutive_failures_open(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(
        clock, registry, failure_rate_threshold=None, consecutive_failures=3, minimum_calls=100
    )
    for fn in (fail, fail, ok, fail, fail):
        await run(b, fn)
    assert state_of(b) is State.CLOSED
    await run(b, fail)
    assert state_of(b) is State.OPEN


async def test_slow_call_rate_opens(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(
        clock,
        registry,
        failure_rate_threshold=None,
        slow_call_rate_threshold=0.5,
        slow_call_duration=1.0,
    )

    async def slow() -> int:
        clock.advance(1.5)
        return 1

    for fn in (ok, slow, ok):
        await run(b, fn)
    assert state_of(b) is State.CLOSED
    await run(b, slow)
    assert state_of(b) is State.OPEN
    assert b.stats().slow_calls == 2


def test_slow_rate_needs_a_duration(registry: BreakerRegistry) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", slow_call_rate_threshold=0.5, registry=registry)


async def test_time_window_ages_out_old_failures(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, window_type="time", window_size=10.0, minimum_calls=4)
    for _ in range(3):
        await run(b, fail)
    clock.advance(11.0)  # those three failures are now outside the 10 s window
    await run(b, fail)
    assert state_of(b) is State.CLOSED
    assert b.stats().window_calls == 1
    for _ in range(3):
        await run(b, fail)
    assert state_of(b) is State.OPEN


async def test_time_window_rate_can_rise_when_successes_age_out(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, window_type="time", window_size=10.0, minimum_calls=4)
    for _ in range(6):
        await run(b, ok)
    clock.advance(5.0)
    for _ in range(3):
        await run(b, fail)
    assert state_of(b) is State.CLOSED  # 3/9
    clock.advance(5.5)  # the six successes age out
    await run(b, ok)  # window now: 3 failures + 1 success = 75%
    assert state_of(b) is State.OPEN


async def test_open_rejects_without_calling(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(clock, registry)
    await trip(b)
    called = False

    async def spy() -> int:
        nonlocal called
        called = True
        return 1

    with pytest.raises(CircuitOpenError) as info:
        await b.call(spy)
    assert not called
    assert info.value.retry_after == pytest.approx(10.0)
    assert info.value.state == "open"
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(spy)
    assert info.value.retry_after == pytest.approx(6.0)
    assert b.stats().rejections == 2


async def test_half_open_success_closes(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(clock, registry, success_threshold=2)
    await trip(b)
    clock.advance(10.0)
    assert state_of(b) is State.HALF_OPEN
    assert await run(b, ok) == "ok"
    assert state_of(b) is State.HALF_OPEN
    assert await run(b, ok) == "ok"
    assert state_of(b) is State.CLOSED
    assert b.stats().window_calls == 0  # closing starts a fresh window


async def test_half_open_failure_reopens_with_backoff(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, open_backoff=2.0, max_open_duration=25.0)
    await trip(b)
    assert b.stats().open_until == pytest.approx(clock.now + 10.0)
    clock.advance(10.0)
    assert await run(b, fail) == "failed"
    assert state_of(b) is State.OPEN
    assert b.stats().open_until == pytest.approx(clock.now + 20.0)
    clock.advance(20.0)
    await run(b, fail)
    assert b.stats().open_until == pytest.approx(clock.now + 25.0)  # capped
    clock.advance(25.0)
    await run(b, ok)
    assert state_of(b) is State.CLOSED
    await trip(b)
    assert b.stats().open_until == pytest.approx(clock.now + 10.0)  # trips reset on close


@pytest.mark.parametrize("limit", [1, 3])
async def test_half_open_admits_exactly_the_trial_limit(
    clock: ManualClock, registry: BreakerRegistry, limit: int
) -> None:
    b = make(clock, registry, half_open_max_calls=limit, success_threshold=limit)
    await trip(b)
    clock.advance(10.0)
    gate = asyncio.Event()
    running = 0

    async def trial() -> int:
        nonlocal running
        running += 1
        await gate.wait()
        return 1

    tasks = [asyncio.create_task(run(b, trial)) for _ in range(20)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Rejections happen at once, while the trials are still in flight.
    assert running == limit
    assert sum(t.done() for t in tasks) == 20 - limit
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert results.count("ok") == limit
    assert results.count("rejected") == 20 - limit
    assert state_of(b) is State.CLOSED


async def test_hung_trial_reopens_and_its_late_result_is_ignored(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry, half_open_max_wait=5.0, open_duration=10.0)
    await trip(b)
    clock.advance(10.0)
    gate = asyncio.Event()

    async def hang() -> int:
        await gate.wait()
        return 1

    hung = asyncio.create_task(run(b, hang))
    await asyncio.sleep(0)
    assert await run(b, ok) == "rejected"  # slot taken
    clock.advance(5.0)
    assert state_of(b) is State.OPEN  # the trial hung past max wait
    assert await run(b, ok) == "rejected"
    gate.set()
    assert await asyncio.wait_for(hung, 1.0) == "ok"
    assert state_of(b) is State.OPEN  # a late success from an old trial closes nothing
    clock.advance(10.0)
    assert await run(b, ok) == "ok"  # a fresh half-open period has a free slot again
    assert state_of(b) is State.CLOSED


async def test_cancellation_is_not_a_failure(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(clock, registry, consecutive_failures=1)
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    task = asyncio.create_task(b.call(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = b.stats()
    assert s.failures == 0 and s.ignored == 1 and s.state is State.CLOSED
    assert s.window_calls == 0


async def test_cancelled_trial_frees_its_slot(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry)
    await trip(b)
    clock.advance(10.0)
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    task = asyncio.create_task(b.call(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state_of(b) is State.HALF_OPEN
    assert await run(b, ok) == "ok"
    assert state_of(b) is State.CLOSED


async def test_which_exceptions_count(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(
        clock,
        registry,
        record_exceptions=(ConnectionError,),
        ignore_exceptions=(KeyError,),
        consecutive_failures=1,
    )

    async def raise_(exc: BaseException) -> int:
        raise exc

    with pytest.raises(ValueError):
        await b.call(raise_, ValueError())  # not recorded: the node answered
    with pytest.raises(KeyError):
        await b.call(raise_, KeyError())  # ignored: neither success nor failure
    s = b.stats()
    assert (s.successes, s.failures, s.ignored, s.window_calls) == (1, 0, 1, 1)
    with pytest.raises(ConnectionError):
        await b.call(raise_, ConnectionRefusedError())
    assert state_of(b) is State.OPEN


async def test_failure_predicate_decides(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(
        clock,
        registry,
        failure_predicate=lambda e: "fatal" in str(e),
        consecutive_failures=1,
    )

    async def raise_(msg: str) -> int:
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError):
        await b.call(raise_, "harmless")
    assert state_of(b) is State.CLOSED
    with pytest.raises(RuntimeError):
        await b.call(raise_, "fatal")
    assert state_of(b) is State.OPEN


async def test_manual_overrides_and_listeners(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    seen: list[tuple[str, str]] = []
    b = make(clock, registry)
    b.add_listener(lambda br, old, new: seen.append((old.value, new.value)))
    b.force_open()
    b.force_open()  # no transition, no second event
    assert await run(b, ok) == "rejected"
    clock.advance(1000.0)
    assert await run(b, ok) == "rejected"  # forced open does not time out
    b.disable()
    for _ in range(10):
        assert await run(b, fail) == "failed"
    assert state_of(b) is State.DISABLED
    b.force_closed()
    await trip(b)
    b.reset()
    assert b.stats().calls == 0 and state_of(b) is State.CLOSED
    assert seen == [
        ("closed", "forced_open"),
        ("forced_open", "disabled"),
        ("disabled", "closed"),
        ("closed", "open"),
        ("open", "closed"),
    ]


async def test_listener_called_once_per_transition_and_errors_contained(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    events: list[State] = []

    def broken(br: CircuitBreaker, old: State, new: State) -> None:
        raise RuntimeError("listener bug")

    b = make(clock, registry, listeners=[broken, lambda br, o, n: events.append(n)])
    await trip(b)
    clock.advance(10.0)
    _ = b.state
    _ = b.state
    await run(b, ok)
    assert events == [State.OPEN, State.HALF_OPEN, State.CLOSED]
    assert b.since == clock.now


async def test_late_result_after_trip_is_ignored(
    clock: ManualClock, registry: BreakerRegistry
) -> None:
    b = make(clock, registry)
    gate = asyncio.Event()

    async def late() -> int:
        await gate.wait()
        return 1

    pending = asyncio.create_task(b.call(late))
    await asyncio.sleep(0)
    await trip(b)
    gate.set()
    assert await pending == 1
    s = b.stats()
    # The window still holds the four failures that tripped it; the late success is not added.
    assert s.state is State.OPEN and s.window_calls == 4 and s.successes == 0


async def test_async_with(clock: ManualClock, registry: BreakerRegistry) -> None:
    b = make(clock, registry, consecutive_failures=2)
    async with b:
        pass
    with pytest.raises(Boom):
        async with b, b:  # nested use in one task
            raise Boom()
    assert state_of(b) is State.OPEN
    with pytest.raises(CircuitOpenError):
        async with b:
            pytest.fail("body must not run")
    assert b.stats().successes == 1 and b.stats().failures == 2


async def test_registry_lists_breakers_and_forgets_dead_ones(clock: ManualClock) -> None:
    reg = BreakerRegistry()
    a = CircuitBreaker("node-a", registry=reg, clock=clock)
    c = CircuitBreaker("node-c", registry=reg, clock=clock)
    CircuitBreaker("node-b", registry=reg, clock=clock)
    gc.collect()
    assert [b.name for b in reg] == ["node-a", "node-c"]
    with pytest.raises(ValueError):
        CircuitBreaker("node-a", registry=reg)
    c.force_open()
    assert [(s.name, s.state) for s in reg.snapshot()] == [
        ("node-a", State.CLOSED),
        ("node-c", State.FORCED_OPEN),
    ]
    assert reg.get("node-a") is a and len(reg) == 2
    reg.unregister("node-a")
    assert reg.get("node-a") is None


def test_default_registry_and_names() -> None:
    from hacontrol.resilience import default_registry

    b = CircuitBreaker()
    assert default_registry.get(b.name) is b
    assert "closed" in repr(b)


def test_rejects_bad_settings(registry: BreakerRegistry) -> None:
    for kw in (
        {"failure_rate_threshold": 1.5},
        {"minimum_calls": 0},
        {"half_open_max_calls": 0},
        {"open_duration": 0},
        {"open_backoff": 0.5},
        {"consecutive_failures": 0},
        {"window_type": "rolling"},
        {"window_size": 0},
    ):
        with pytest.raises(ValueError):
            CircuitBreaker("x", registry=registry, **kw)


def test_only_the_monotonic_clock_is_used() -> None:
    assert clock_module.monotonic is time.monotonic
    src = Path(clock_module.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        for wall in ("time.time(", "datetime.", "time.localtime", "utcnow"):
            assert wall not in text, f"{path.name} uses {wall}"


async def test_construction_is_cheap(registry: BreakerRegistry) -> None:
    start = time.perf_counter()
    breakers = [CircuitBreaker(f"n{i}", registry=registry) for i in range(2000)]
    elapsed = time.perf_counter() - start
    assert len(registry) == len(breakers)
    assert elapsed < 1.0  # about 4 µs each here; generous for slow CI machines
