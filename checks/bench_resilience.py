"""Overhead per successful call of hacontrol.resilience next to the usual Python libraries.

Run: .venv/bin/python checks/bench_resilience.py [--calls N] [--repeat R]

Everything runs in one process on one event loop. Each row awaits a trivial
`async def f(): return 1` through the wrapper N times; the best of R runs is kept and the
plain `await f()` loop is subtracted, so the figures are the wrapper's own cost. The ratio
column is ours divided by the peer's (below 1.0 means we are cheaper). Peers come from the
`bench` extra (tenacity, stamina, aiobreaker, purgatory) or the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiobreaker  # type: ignore[import-untyped]
import stamina
import tenacity
from purgatory import AsyncCircuitBreakerFactory

from hacontrol.resilience import (
    BreakerRegistry,
    Bulkhead,
    CircuitBreaker,
    Policy,
    Retry,
    Timeout,
)

Loop = Callable[[int], Awaitable[None]]


async def f() -> int:
    return 1


@dataclass
class Row:
    label: str
    ours: Loop
    peer_label: str | None = None
    peer: Loop | None = None


def build_rows() -> list[Row]:
    """Every measured pair: our wrapper and the peer doing the same job."""
    registry = BreakerRegistry()
    breaker = CircuitBreaker("bench", registry=registry)
    timed_breaker = CircuitBreaker("bench-timed", registry=registry, slow_call_duration=1.0)
    retry = Retry("bench", attempts=3)
    retry_deadline = Retry("bench-deadline", attempts=3, deadline=10.0)
    bulkhead = Bulkhead("bench", max_concurrent=10)
    timeout = Timeout(10.0)
    policy = Policy(
        "bench",
        retry=Retry("bench-policy", attempts=3),
        breaker=CircuitBreaker("bench-policy", registry=registry),
        bulkhead=Bulkhead("bench-policy", max_concurrent=10),
        timeout=Timeout(10.0),
    )
    policy_deadline = Policy(
        "bench-deadline",
        retry=Retry("bench-policy-deadline", attempts=3, deadline=10.0),
        breaker=CircuitBreaker("bench-policy-deadline", registry=registry),
        bulkhead=Bulkhead("bench-policy-deadline", max_concurrent=10),
        timeout=Timeout(10.0),
    )

    tenacity_f = tenacity.retry(stop=tenacity.stop_after_attempt(3))(f)
    tenacity_deadline_f = tenacity.retry(
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(10.0)
    )(f)
    stamina_f = stamina.retry(on=Exception, attempts=3)(f)
    aio_breaker = aiobreaker.CircuitBreaker()
    purgatory_factory = AsyncCircuitBreakerFactory()
    purgatory_breaker = asyncio.get_event_loop().run_until_complete(
        purgatory_factory.get_breaker("bench")
    )
    semaphore = asyncio.Semaphore(10)

    async def b_call(n: int) -> None:
        for _ in range(n):
            await breaker.call(f)

    async def b_ctx(n: int) -> None:
        for _ in range(n):
            async with breaker:
                await f()

    async def b_timed(n: int) -> None:
        for _ in range(n):
            await timed_breaker.call(f)

    async def r_call(n: int) -> None:
        for _ in range(n):
            await retry.call(f)

    async def r_deadline(n: int) -> None:
        for _ in range(n):
            await retry_deadline.call(f)

    async def bh_call(n: int) -> None:
        for _ in range(n):
            await bulkhead.call(f)

    async def bh_ctx(n: int) -> None:
        for _ in range(n):
            async with bulkhead:
                await f()

    async def t_call(n: int) -> None:
        for _ in range(n):
            await timeout.call(f)

    async def p_call(n: int) -> None:
        for _ in range(n):
            await policy.call(f)

    async def pd_call(n: int) -> None:
        for _ in range(n):
            await policy_deadline.call(f)

    async def purgatory_ctx(n: int) -> None:
        for _ in range(n):
            async with purgatory_breaker:
                await f()

    async def aiobreaker_call(n: int) -> None:
        for _ in range(n):
            await aio_breaker.call_async(f)

    async def tenacity_call(n: int) -> None:
        for _ in range(n):
            await tenacity_f()

    async def tenacity_deadline_call(n: int) -> None:
        for _ in range(n):
            await tenacity_deadline_f()

    async def stamina_call(n: int) -> None:
        for _ in range(n):
            await stamina_f()

    async def semaphore_ctx(n: int) -> None:
        for _ in range(n):
            async with semaphore:
                await f()

    async def asyncio_timeout(n: int) -> None:
        for _ in range(n):
            async with asyncio.timeout(10.0):
                await f()

    return [
        Row("breaker.call (closed)", b_call, "purgatory (async with)", purgatory_ctx),
        Row("breaker.call (closed)", b_call, "aiobreaker.call_async", aiobreaker_call),
        Row("async with breaker (closed)", b_ctx, "purgatory (async with)", purgatory_ctx),
        Row("breaker.call, slow-call timing on", b_timed, "purgatory (async with)", purgatory_ctx),
        Row("retry.call (3 attempts)", r_call, "tenacity retry (3 attempts)", tenacity_call),
        Row("retry.call (3 attempts)", r_call, "stamina retry (3 attempts)", stamina_call),
        Row(
            "retry.call (3 attempts, 10 s deadline)",
            r_deadline,
            "tenacity (3 attempts | 10 s)",
            tenacity_deadline_call,
        ),
        Row("bulkhead.call", bh_call, "asyncio.Semaphore (async with)", semaphore_ctx),
        Row("async with bulkhead", bh_ctx, "asyncio.Semaphore (async with)", semaphore_ctx),
        Row("timeout.call", t_call, "asyncio.timeout", asyncio_timeout),
        Row(
            "policy (retry+breaker+bulkhead+timeout)",
            p_call,
            "tenacity retry (3 attempts)",
            tenacity_call,
        ),
        Row(
            "policy, retry with 10 s deadline",
            pd_call,
            "tenacity retry (3 attempts)",
            tenacity_call,
        ),
    ]


def measure(loop: asyncio.AbstractEventLoop, body: Loop, calls: int, repeat: int) -> float:
    """Best-of-`repeat` ns per call of `body`."""
    loop.run_until_complete(body(min(calls, 2000)))  # warm up
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter_ns()
        loop.run_until_complete(body(calls))
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=7)
    opts = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        rows = build_rows()

        async def baseline(n: int) -> None:
            for _ in range(n):
                await f()

        base = measure(loop, baseline, opts.calls, opts.repeat)
        cache: dict[Loop, float] = {}

        def overhead(body: Loop) -> float:
            if body not in cache:
                cache[body] = max(0.0, measure(loop, body, opts.calls, opts.repeat) - base)
            return cache[body]

        print(
            f"Python {sys.version.split()[0]}, {opts.calls} calls, best of {opts.repeat}; "
            f"baseline `await f()` = {base:.0f} ns/call; figures are overhead above it"
        )
        head = f"| {'ours':<42} | {'ns/call':>7} | {'peer':<32} | {'ns/call':>7} | ratio |"
        print(head)
        print("|" + "-" * 44 + "|" + "-" * 8 + ":|" + "-" * 34 + "|" + "-" * 8 + ":|------:|")
        for row in rows:
            ours = overhead(row.ours)
            assert row.peer is not None and row.peer_label is not None
            peer = overhead(row.peer)
            ratio = ours / peer if peer else float("inf")
            print(
                f"| {row.label:<42} | {ours:>7.0f} | {row.peer_label:<32} | {peer:>7.0f} "
                f"| {ratio:5.2f} |"
            )
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
