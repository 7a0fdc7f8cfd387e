"""Sliding windows of call outcomes: the last N calls, or the last T seconds."""

from __future__ import annotations

# Outcome bits. 0 is a fast success, so the common case records a falsy value.
FAILURE = 1
SLOW = 2


class CountWindow:
    """Outcomes of the last `size` calls, in a ring buffer with running totals."""

    __slots__ = ("_buf", "_i", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self.size = size
        self._buf = [0] * size
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, outcome: int, now: float) -> None:
        """Add one outcome, evicting the oldest once the window is full."""
        i = self._i
        buf = self._buf
        if self.calls == self.size:
            old = buf[i]
            if old:
                if old & FAILURE:
                    self.failures -= 1
                if old & SLOW:
                    self.slow -= 1
        else:
            self.calls += 1
        buf[i] = outcome
        if outcome:
            if outcome & FAILURE:
                self.failures += 1
            if outcome & SLOW:
                self.slow += 1
        i += 1
        self._i = 0 if i == self.size else i

    def refresh(self, now: float) -> None:
        """Nothing ages out of a count window."""

    def reset(self) -> None:
        """Forget every outcome."""
        buf = self._buf
        for j in range(self.size):
            buf[j] = 0
        self._i = self.calls = self.failures = self.slow = 0


class TimeWindow:
    """Outcomes of the last `seconds`, kept in `buckets` equal time slices.

    Old slices are dropped lazily when time has moved on, so an idle window costs nothing.
    """

    __slots__ = (
        "_b_calls",
        "_b_fail",
        "_b_slow",
        "_head",
        "_n",
        "_width",
        "calls",
        "failures",
        "seconds",
        "slow",
    )

    def __init__(self, seconds: float, buckets: int = 10) -> None:
        if seconds <= 0 or buckets < 1:
            raise ValueError("time window needs seconds > 0 and at least one bucket")
        self.seconds = seconds
        self._n = buckets
        self._width = seconds / buckets
        self._b_calls = [0] * buckets
        self._b_fail = [0] * buckets
        self._b_slow = [0] * buckets
        self._head: int | None = None
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _advance(self, now: float) -> int:
        idx = int(now // self._width)
        head = self._head
        n = self._n
        if head is None:
            self._head = idx
            return idx % n
        if idx <= head:
            # Same slice, or a clock that stepped back (only a bad injected clock can).
            return head % n
        if idx - head >= n:
            self.reset()
        else:
            for b in range(head + 1, idx + 1):
                j = b % n
                self.calls -= self._b_calls[j]
                self.failures -= self._b_fail[j]
                self.slow -= self._b_slow[j]
                self._b_calls[j] = self._b_fail[j] = self._b_slow[j] = 0
        self._head = idx
        return idx % n

    def record(self, outcome: int, now: float) -> None:
        """Add one outcome at time `now`."""
        j = self._advance(now)
        self._b_calls[j] += 1
        self.calls += 1
        if outcome:
            if outcome & FAILURE:
                self._b_fail[j] += 1
                self.failures += 1
            if outcome & SLOW:
                self._b_slow[j] += 1
                self.slow += 1

    def refresh(self, now: float) -> None:
        """Drop slices that have aged out by `now`."""
        if self._head is not None:
            self._advance(now)

    def reset(self) -> None:
        """Forget every outcome."""
        for j in range(self._n):
            self._b_calls[j] = self._b_fail[j] = self._b_slow[j] = 0
        self._head = None
        self.calls = self.failures = self.slow = 0
