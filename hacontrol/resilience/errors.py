"""Exceptions raised by the resilience modules."""

from __future__ import annotations


class ResilienceError(Exception):
    """Base class of every error the resilience modules raise themselves."""


class CircuitOpenError(ResilienceError):
    """The breaker rejected the call without running it."""

    def __init__(self, name: str, state: str, retry_after: float | None = None) -> None:
        self.name = name
        self.state = state
        # Seconds until the breaker will admit a trial call; None when unknown (forced open,
        # half-open with all trial slots taken).
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is {state}, call rejected")


class BulkheadFullError(ResilienceError):
    """No slot became free in time (or the queue was full)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"bulkhead {name!r} full: {reason}")


class RetryError(ResilienceError):
    """Retries are exhausted: attempts used up or the overall deadline passed."""

    def __init__(
        self,
        name: str,
        attempts: int,
        reason: str,
        last_error: BaseException | None = None,
        last_result: object = None,
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.reason = reason
        self.last_error = last_error
        self.last_result = last_result
        last = repr(last_error) if last_error is not None else f"result {last_result!r}"
        super().__init__(f"retry {name!r} gave up after {attempts} attempt(s), {reason}: {last}")


class AttemptTimeoutError(ResilienceError, TimeoutError):
    """One attempt ran longer than its timeout and was cancelled."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        super().__init__(f"timeout {name!r}: attempt exceeded {seconds:g}s")
