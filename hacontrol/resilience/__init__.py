"""Resilience for every probe and action the controller sends to a node.

Circuit breaker, retry, bulkhead, timeout and a Policy composing them as
fallback(retry(breaker(bulkhead(timeout(call))))). Async-first, monotonic clock only,
and `asyncio.CancelledError` is never counted as a failure, retried or swallowed.
"""

from .backoff import Backoff, BackoffKind, JitterKind, jittered
from .breaker import BreakerRegistry, CircuitBreaker, Listener, default_registry
from .breaker_state import BreakerStats, State
from .bulkhead import Bulkhead, BulkheadStats
from .clock import Clock, ManualClock, Sleep
from .errors import (
    AttemptTimeoutError,
    BulkheadFullError,
    CircuitOpenError,
    ResilienceError,
    RetryError,
)
from .policy import Policy, PolicyStats
from .retry import Retry, RetryStats
from .timeout import Timeout

__all__ = [
    "AttemptTimeoutError",
    "Backoff",
    "BackoffKind",
    "BreakerRegistry",
    "BreakerStats",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "JitterKind",
    "Listener",
    "ManualClock",
    "Policy",
    "PolicyStats",
    "ResilienceError",
    "Retry",
    "RetryError",
    "RetryStats",
    "Sleep",
    "State",
    "Timeout",
    "default_registry",
    "jittered",
]
