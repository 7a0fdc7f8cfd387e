"""Policy: one object that applies retry, breaker, bulkhead, timeout and fallback.

Fixed order, outermost first::

    fallback( retry( breaker( bulkhead( timeout( call ))))))

* the timeout bounds one attempt, and a timed-out attempt counts as a breaker failure;
* the bulkhead slot is held only while an attempt runs, never during a retry's backoff;
* the breaker sees every attempt, and once it opens, CircuitOpenError stops the retry at once
  (it is not retried), so a flapping node cannot cause a retry storm;
* the retry deadline covers all attempts and backoff sleeps, and cancels the attempt in flight;
* the fallback sees only what is left after all of that (never a CancelledError).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from .breaker import BreakerRegistry, CircuitBreaker, default_registry
from .breaker_state import BreakerStats
from .bulkhead import Bulkhead, BulkheadStats
from .retry import Retry, RetryStats
from .timeout import Timeout

P = ParamSpec("P")
T = TypeVar("T")

Fallback = Callable[[Exception], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """Stats of every layer present in a policy."""

    name: str
    breaker: BreakerStats | None
    retry: RetryStats | None
    bulkhead: BulkheadStats | None
    timeouts: int
    fallbacks: int


class Policy:
    """Compose the optional layers in the fixed order documented above."""

    __slots__ = (
        "_fallback",
        "_fallback_on",
        "_head",
        "_rest",
        "breaker",
        "bulkhead",
        "fallbacks",
        "name",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        name: str = "policy",
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        bulkhead: Bulkhead | None = None,
        timeout: Timeout | float | None = None,
        fallback: Fallback | None = None,
        fallback_on: tuple[type[Exception], ...] = (Exception,),
    ) -> None:
        self.name = name
        self.retry = retry
        self.breaker = breaker
        self.bulkhead = bulkhead
        if isinstance(timeout, int | float):
            timeout = Timeout(float(timeout), name=f"{name}.timeout")
        self.timeout = timeout
        self._fallback = fallback
        self._fallback_on = fallback_on
        self.fallbacks = 0
        # Each layer's `call(fn, *args)` awaits `fn(*args)`, so the chain is just the layers'
        # bound methods passed as leading arguments: no closures, no per-call allocation
        # beyond the argument tuple.
        layers: list[Callable[..., Awaitable[Any]]] = [
            layer.call for layer in (retry, breaker, bulkhead, timeout) if layer is not None
        ]
        self._head: Callable[..., Awaitable[Any]] | None = layers[0] if layers else None
        self._rest: tuple[Callable[..., Awaitable[Any]], ...] = tuple(layers[1:])

    @classmethod
    def for_node(
        cls,
        name: str,
        *,
        timeout: float = 2.0,
        attempts: int | None = 3,
        deadline: float | None = None,
        max_concurrent: int = 4,
        max_queue: int = 8,
        max_wait: float | None = 1.0,
        retry: bool = True,
        registry: BreakerRegistry | None = default_registry,
        **breaker_options: Any,
    ) -> Policy:
        """A ready policy for one node: named layers, breaker registered as `name`.

        `retry=False` leaves out the retry layer (for non-idempotent actions like promote).
        """
        return cls(
            name,
            retry=Retry(f"{name}.retry", attempts=attempts, deadline=deadline) if retry else None,
            breaker=CircuitBreaker(name, registry=registry, **breaker_options),
            bulkhead=Bulkhead(
                f"{name}.bulkhead",
                max_concurrent=max_concurrent,
                max_queue=max_queue,
                max_wait=max_wait,
            ),
            timeout=Timeout(timeout, name=f"{name}.timeout"),
        )

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `await fn(*args, **kwargs)` through every layer."""
        head = self._head
        if self._fallback is None:
            if head is None:
                return await fn(*args, **kwargs)
            result: T = await head(*self._rest, fn, *args, **kwargs)
            return result
        try:
            if head is None:
                return await fn(*args, **kwargs)
            result = await head(*self._rest, fn, *args, **kwargs)
            return result
        except Exception as exc:
            if not isinstance(exc, self._fallback_on):
                raise
            self.fallbacks += 1
            fallback_result: T = await self._fallback(exc)
            return fallback_result

    def stats(self) -> PolicyStats:
        """Stats of every layer."""
        return PolicyStats(
            self.name,
            self.breaker.stats() if self.breaker is not None else None,
            self.retry.stats() if self.retry is not None else None,
            self.bulkhead.stats() if self.bulkhead is not None else None,
            self.timeout.timeouts if self.timeout is not None else 0,
            self.fallbacks,
        )
