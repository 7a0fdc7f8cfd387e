"""What a circuit breaker shows of itself: its state and a snapshot of its counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["BreakerStats", "State"]


class State(enum.Enum):
    """Breaker states."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of one breaker. `since` and `open_until` are monotonic timestamps."""

    name: str
    state: State
    since: float
    calls: int
    successes: int
    failures: int
    slow_calls: int
    rejections: int
    ignored: int
    window_calls: int
    failure_rate: float
    slow_call_rate: float
    consecutive_failures: int
    trips: int
    open_until: float | None
