"""Random sequences of calls and time steps through the breaker, checked against a model."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hacontrol.resilience import BreakerRegistry, CircuitBreaker, CircuitOpenError, ManualClock

WINDOW = 5
MIN_CALLS = 3
FAIL_RATE = 0.5
SLOW_RATE = 0.6
SLOW_AFTER = 1.0
CONSECUTIVE = 3
OPEN_FOR = 10.0
BACKOFF = 2.0
OPEN_CAP = 30.0
TRIAL_SUCCESSES = 2


class Model:
    """The breaker's rules written as plainly as possible (sequential calls only)."""

    def __init__(self) -> None:
        self.state = "closed"
        self.window: deque[tuple[bool, bool]] = deque(maxlen=WINDOW)
        self.consecutive = 0
        self.trips = 0
        self.open_until = 0.0
        self.trial_ok = 0
        self.rejections = 0
        self.failures = 0
        self.transitions: list[tuple[str, str]] = []

    def go(self, new: str) -> None:
        if new != self.state:
            self.transitions.append((self.state, new))
            self.state = new
            self.trial_ok = 0
            if new == "closed":
                self.window.clear()
                self.consecutive = 0

    def tick(self, now: float) -> None:
        if self.state == "open" and now >= self.open_until:
            self.go("half_open")

    def trip(self, now: float) -> None:
        self.open_until = now + min(OPEN_CAP, OPEN_FOR * BACKOFF**self.trips)
        self.trips += 1
        self.go("open")

    def call(self, kind: str, start: float, duration: float) -> str:
        self.tick(start)
        if self.state in ("open", "forced_open"):
            self.rejections += 1
            return "rejected"
        if kind == "cancel" or self.state == "disabled":
            return "done"
        failed = kind == "fail"
        slow = duration >= SLOW_AFTER
        end = start + duration
        if failed:
            self.failures += 1
        if self.state == "half_open":
            if failed or slow:
                self.trip(end)
            else:
                self.trial_ok += 1
                if self.trial_ok >= TRIAL_SUCCESSES:
                    self.trips = 0
                    self.go("closed")
            return "done"
        self.window.append((failed, slow))
        self.consecutive = self.consecutive + 1 if failed else 0
        n = len(self.window)
        fails = sum(f for f, _ in self.window)
        slows = sum(s for _, s in self.window)
        if self.consecutive >= CONSECUTIVE or (
            n >= MIN_CALLS and (fails >= FAIL_RATE * n or slows >= SLOW_RATE * n)
        ):
            self.trip(end)
        return "done"


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.seen: list[tuple[str, str]] = []
        self.breaker = CircuitBreaker(
            "model",
            failure_rate_threshold=FAIL_RATE,
            slow_call_rate_threshold=SLOW_RATE,
            slow_call_duration=SLOW_AFTER,
            consecutive_failures=CONSECUTIVE,
            minimum_calls=MIN_CALLS,
            window_size=WINDOW,
            open_duration=OPEN_FOR,
            open_backoff=BACKOFF,
            max_open_duration=OPEN_CAP,
            success_threshold=TRIAL_SUCCESSES,
            half_open_max_wait=100.0,
            clock=self.clock,
            registry=BreakerRegistry(),
            listeners=[lambda b, old, new: self.seen.append((old.value, new.value))],
        )
        self.model = Model()

    def teardown(self) -> None:
        self.loop.close()

    def _call(self, kind: str, duration: float) -> None:
        clock = self.clock

        async def fn() -> int:
            clock.advance(duration)
            if kind == "fail":
                raise ValueError("fail")
            if kind == "cancel":
                raise asyncio.CancelledError()
            return 1

        async def drive() -> str:
            try:
                await self.breaker.call(fn)
            except CircuitOpenError:
                return "rejected"
            except (ValueError, asyncio.CancelledError):
                return "done"
            return "done"

        start = clock.now
        got = self.loop.run_until_complete(drive())
        want = self.model.call(kind, start, duration)
        assert got == want, (kind, duration, got, want)

    @rule(
        kind=st.sampled_from(["ok", "fail", "cancel"]),
        duration=st.sampled_from([0.0, 0.2, 1.5]),
    )
    def call(self, kind: str, duration: float) -> None:
        self._call(kind, duration)

    @rule(dt=st.sampled_from([0.5, 3.0, 10.0, 25.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule()
    def query_state(self) -> None:
        self.model.tick(self.clock.now)
        assert self.breaker.state.value == self.model.state

    @rule(op=st.sampled_from(["force_open", "force_closed", "disable", "reset"]))
    def operator(self, op: str) -> None:
        getattr(self.breaker, op)()
        m = self.model
        if op == "force_open":
            m.go("forced_open")
        elif op == "disable":
            m.go("disabled")
        else:
            m.trips = 0
            m.go("closed")
            m.window.clear()
            m.consecutive = 0
            if op == "reset":
                m.rejections = m.failures = 0

    @invariant()
    def agrees(self) -> None:
        s: Any = self.breaker.stats()
        self.model.tick(self.clock.now)
        m = self.model
        assert s.state.value == m.state
        assert s.rejections == m.rejections
        assert s.failures == m.failures
        assert s.trips == m.trips
        assert s.window_calls == len(m.window)
        assert self.seen == m.transitions


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True
)
