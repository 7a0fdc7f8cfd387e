"""Retry with backoff, jitter, an attempt limit and an overall deadline.

The deadline is enforced during an attempt too: the attempt in flight when it passes is
cancelled, so a 1.0 s budget returns after 1.0 s, not after the slow attempt finishes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from .backoff import Backoff, JitterKind, jittered
from .clock import Clock, Sleep, monotonic
from .errors import AttemptTimeoutError, BulkheadFullError, CircuitOpenError, RetryError
from .timeout import run_within

P = ParamSpec("P")
T = TypeVar("T")


# One generator for every Retry without its own: seeding a Random per instance reads
# os.urandom and would dominate the cost of building a policy per node.
_shared_rng = random.Random()


class _DeadlineHit(Exception):
    """Private marker: the retry's own deadline timer cancelled the attempt."""


def _deadline_hit() -> BaseException:
    return _DeadlineHit()


@dataclass(frozen=True, slots=True)
class RetryStats:
    """Counters of one Retry since it was made."""

    name: str
    calls: int
    attempts: int
    retries: int
    successes: int
    exhausted: int
    deadline_hits: int
    not_retried: int


class Retry:
    """Call again after a retryable failure, up to `attempts` and within `deadline` seconds.

    An exception is retried when it is an instance of `retry_on`, not of `give_up_on`, and
    `retry_if(exc)` (when given) is true. A result is retried when `retry_if_result(result)`
    is true. Anything else propagates unchanged. When attempts or time run out, RetryError
    is raised with the attempt count and the last error (or last result).
    CancelledError is never retried: it is not an Exception.
    """

    __slots__ = (
        "_attempts",
        "_backoff",
        "_clock",
        "_deadline",
        "_give_up_on",
        "_jitter",
        "_result_pred",
        "_retry_if",
        "_retry_on",
        "_rng",
        "_sleep",
        "attempts",
        "calls",
        "deadline_hits",
        "exhausted",
        "name",
        "not_retried",
        "retries",
        "successes",
    )

    def __init__(
        self,
        name: str = "retry",
        *,
        attempts: int | None = 3,
        deadline: float | None = None,
        backoff: Backoff | None = None,
        jitter: JitterKind = "full",
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        give_up_on: tuple[type[BaseException], ...] = (CircuitOpenError, BulkheadFullError),
        retry_if: Callable[[BaseException], bool] | None = None,
        retry_if_result: Callable[[Any], bool] | None = None,
        clock: Clock = monotonic,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if attempts is None and deadline is None:
            raise ValueError("give Retry an attempt limit, a deadline, or both")
        if attempts is not None and attempts < 1:
            raise ValueError("attempts must be >= 1")
        if deadline is not None and deadline <= 0:
            raise ValueError("deadline must be > 0 seconds")
        if jitter not in ("none", "full", "equal", "decorrelated"):
            raise ValueError(f"unknown jitter {jitter!r}")
        self.name = name
        self._attempts = attempts or 0
        self._deadline = deadline
        self._backoff = backoff if backoff is not None else Backoff()
        self._jitter: JitterKind = jitter
        self._retry_on = retry_on
        self._give_up_on = give_up_on
        self._retry_if = retry_if
        self._result_pred = retry_if_result
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else _shared_rng
        self.calls = self.attempts = self.retries = self.successes = 0
        self.exhausted = self.deadline_hits = self.not_retried = 0

    def stats(self) -> RetryStats:
        """Counters so far."""
        return RetryStats(
            self.name,
            self.calls,
            self.attempts,
            self.retries,
            self.successes,
            self.exhausted,
            self.deadline_hits,
            self.not_retried,
        )

    def _retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, self._retry_on) or isinstance(exc, self._give_up_on):
            return False
        return self._retry_if is None or self._retry_if(exc)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `await fn(*args, **kwargs)` with retries."""
        self.calls += 1
        if self._deadline is None:
            # Hot path: first attempt, no timer, no clock read.
            self.attempts += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not self._retryable(exc):
                    self.not_retried += 1
                    raise
                return await self._again(fn, args, kwargs, exc, None, None)
            pred = self._result_pred
            if pred is None or not pred(result):
                self.successes += 1
                return result
            return await self._again(fn, args, kwargs, None, result, None)
        deadline_at = self._clock() + self._deadline
        return await self._again(fn, args, kwargs, None, None, deadline_at, first=True)

    async def _again(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: BaseException | None,
        result: Any,
        deadline_at: float | None,
        first: bool = False,
    ) -> T:
        """The slow path: every attempt after the first, and every attempt under a deadline."""
        clock = self._clock
        limit = self._attempts
        attempt = 0 if first else 1
        prev = self._backoff.base
        while True:
            if not first:
                if limit and attempt >= limit:
                    self.exhausted += 1
                    raise RetryError(self.name, attempt, "attempts exhausted", error, result)
                delay = jittered(self._jitter, self._backoff, attempt - 1, prev, self._rng)
                prev = delay
                if deadline_at is not None and clock() + delay >= deadline_at:
                    # Sleeping would overrun the budget: give up now, not after the sleep.
                    self.deadline_hits += 1
                    raise RetryError(self.name, attempt, "deadline exceeded", error, result)
                self.retries += 1
                if self._sleep is not None:
                    await self._sleep(delay)
                else:
                    await asyncio.sleep(delay)
            first = False
            attempt += 1
            remaining = 0.0
            if deadline_at is not None:
                remaining = deadline_at - clock()
                if remaining <= 0:
                    self.deadline_hits += 1
                    raise RetryError(self.name, attempt - 1, "deadline exceeded", error, result)
            self.attempts += 1
            try:
                if deadline_at is None:
                    value = await fn(*args, **kwargs)
                else:
                    value = await run_within(remaining, _deadline_hit, fn, args, kwargs)
            except _DeadlineHit:
                self.deadline_hits += 1
                budget = self._deadline or 0.0
                raise RetryError(
                    self.name,
                    attempt,
                    "deadline exceeded during an attempt",
                    AttemptTimeoutError(self.name, budget),
                ) from None
            except Exception as exc:
                if not self._retryable(exc):
                    self.not_retried += 1
                    raise
                error = exc
                result = None
                continue
            pred = self._result_pred
            if pred is None or not pred(value):
                self.successes += 1
                return value
            error = None
            result = value
