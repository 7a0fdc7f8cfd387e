"""Circuit breaker: stop calling a node that keeps failing, probe it again later.

States: closed (calls pass, outcomes recorded), open (calls rejected until the open duration
has passed), half-open (exactly `half_open_max_calls` concurrent trial calls, the rest are
rejected at once), forced-open and disabled (operator overrides).

Everything runs on one event loop, so state changes need no lock: each transition happens
synchronously between two awaits. Every transition bumps a generation number; a call that
finishes after the state it was admitted under has gone is ignored, so a late result can
neither close a breaker that re-opened nor free a trial slot of a newer half-open period.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from ._tasks import get_running_loop, task_on
from .breaker_state import BreakerStats, State
from .clock import Clock, monotonic
from .errors import CircuitOpenError
from .window import FAILURE, SLOW, CountWindow, TimeWindow

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)


_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN
_FORCED_OPEN = State.FORCED_OPEN
_DISABLED = State.DISABLED

# How an exception counts.
_SUCCESS = 0
_FAIL = FAILURE
_IGNORE = -1

Listener = Callable[["CircuitBreaker", State, State], None]


class BreakerRegistry:
    """Every live breaker by name, so the controller can list them and their states.

    Holds weak references: a breaker that nothing else uses disappears from the list.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: weakref.WeakValueDictionary[str, CircuitBreaker] = (
            weakref.WeakValueDictionary()
        )

    def register(self, breaker: CircuitBreaker) -> None:
        """Add a breaker; a second live breaker with the same name is an error."""
        other = self._items.get(breaker.name)
        if other is not None and other is not breaker:
            raise ValueError(f"a circuit breaker named {breaker.name!r} is already registered")
        self._items[breaker.name] = breaker

    def unregister(self, name: str) -> None:
        """Remove a breaker by name (no error if absent)."""
        self._items.pop(name, None)

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker with this name, if it is still alive."""
        return self._items.get(name)

    def breakers(self) -> list[CircuitBreaker]:
        """All live breakers, sorted by name."""
        return sorted(self._items.values(), key=lambda b: b.name)

    def snapshot(self) -> list[BreakerStats]:
        """Stats of every live breaker, sorted by name."""
        return [b.stats() for b in self.breakers()]

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self.breakers())

    def __len__(self) -> int:
        return len(self._items)


default_registry = BreakerRegistry()

_counter = 0


def _auto_name() -> str:
    global _counter
    _counter += 1
    return f"breaker-{_counter}"


class CircuitBreaker:
    """Async circuit breaker with count- or time-based sliding window.

    Use `await breaker.call(fn, *args, **kw)` or `async with breaker: ...`.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_consec_limit",
        "_consecutive",
        "_entries",
        "_eval_on_success",
        "_fail_rate",
        "_gen",
        "_half_open_max",
        "_ignore",
        "_listeners",
        "_max_open",
        "_max_wait",
        "_min_calls",
        "_open_backoff",
        "_open_duration",
        "_open_until",
        "_predicate",
        "_record",
        "_since",
        "_slow_duration",
        "_slow_rate",
        "_state",
        "_success_threshold",
        "_timed",
        "_trial_active",
        "_trial_ok",
        "_trial_starts",
        "_trips",
        "_window",
        "calls",
        "failures",
        "ignored",
        "name",
        "rejections",
        "slow_calls",
        "successes",
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        failure_rate_threshold: float | None = 0.5,
        slow_call_rate_threshold: float | None = None,
        slow_call_duration: float | None = None,
        consecutive_failures: int | None = None,
        minimum_calls: int = 10,
        window_type: Literal["count", "time"] = "count",
        window_size: float = 100,
        window_buckets: int = 10,
        open_duration: float = 30.0,
        open_backoff: float = 1.0,
        max_open_duration: float | None = None,
        half_open_max_calls: int = 1,
        half_open_max_wait: float = 30.0,
        success_threshold: int = 1,
        record_exceptions: tuple[type[BaseException], ...] = (Exception,),
        ignore_exceptions: tuple[type[BaseException], ...] = (),
        failure_predicate: Callable[[BaseException], bool] | None = None,
        listeners: Iterable[Listener] = (),
        clock: Clock = monotonic,
        registry: BreakerRegistry | None = default_registry,
    ) -> None:
        for label, rate in (
            ("failure_rate_threshold", failure_rate_threshold),
            ("slow_call_rate_threshold", slow_call_rate_threshold),
        ):
            if rate is not None and not 0.0 < rate <= 1.0:
                raise ValueError(f"{label} must be a fraction in (0, 1]")
        if slow_call_rate_threshold is not None and slow_call_duration is None:
            raise ValueError("slow_call_rate_threshold needs slow_call_duration")
        if minimum_calls < 1 or half_open_max_calls < 1 or success_threshold < 1:
            raise ValueError("minimum_calls, half_open_max_calls, success_threshold must be >= 1")
        if consecutive_failures is not None and consecutive_failures < 1:
            raise ValueError("consecutive_failures must be >= 1")
        if open_duration <= 0 or half_open_max_wait <= 0 or open_backoff < 1.0:
            raise ValueError("open_duration, half_open_max_wait > 0 and open_backoff >= 1")
        self.name = name if name is not None else _auto_name()
        self._fail_rate = failure_rate_threshold
        self._slow_rate = slow_call_rate_threshold
        self._slow_duration = slow_call_duration
        self._consec_limit = consecutive_failures or 0
        self._min_calls = minimum_calls
        self._window: CountWindow | TimeWindow
        if window_type == "count":
            self._window = CountWindow(int(window_size))
            self._eval_on_success = False
        elif window_type == "time":
            self._window = TimeWindow(float(window_size), window_buckets)
            # Old successes age out, so the failure rate can rise on a success.
            self._eval_on_success = True
        else:
            raise ValueError("window_type must be 'count' or 'time'")
        # Read the clock around a call only when something needs the time.
        self._timed = slow_call_duration is not None or window_type == "time"
        self._open_duration = open_duration
        self._open_backoff = open_backoff
        self._max_open = max_open_duration
        self._half_open_max = half_open_max_calls
        self._max_wait = half_open_max_wait
        self._success_threshold = success_threshold
        self._record = record_exceptions
        self._ignore = ignore_exceptions
        self._predicate = failure_predicate
        self._listeners: list[Listener] = list(listeners)
        self._clock = clock
        self._state = _CLOSED
        self._since = clock()
        self._gen = 0
        self._consecutive = 0
        self._trips = 0
        self._open_until = 0.0
        self._trial_active = 0
        self._trial_ok = 0
        self._trial_starts: list[float] = []
        self._entries: dict[asyncio.Task[Any] | None, tuple[int, float, Any]] = {}
        self.calls = self.successes = self.failures = self.slow_calls = 0
        self.rejections = self.ignored = 0
        if registry is not None:
            registry.register(self)

    # ----------------------------------------------------------------- public API

    @property
    def state(self) -> State:
        """Current state; an expired open period or a hung trial is resolved first."""
        if self._state is _OPEN or self._state is _HALF_OPEN:
            self._tick(self._clock())
        return self._state

    @property
    def since(self) -> float:
        """Monotonic time of the last transition."""
        return self._since

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(breaker, old, new)` once per transition."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        self._listeners.remove(listener)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `await fn(*args, **kwargs)` through the breaker."""
        if self._state is _CLOSED:
            # Hot path, inlined: no lock, no allocation, clock read only if a rule needs it.
            gen = self._gen
            self.calls += 1
            timed = self._timed
            start = self._clock() if timed else 0.0
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                self._on_error(exc, gen, start)
                raise
            if gen == self._gen:
                outcome = 0
                now = 0.0
                if timed:
                    now = self._clock()
                    sd = self._slow_duration
                    if sd is not None and now - start >= sd:
                        outcome = SLOW
                        self.slow_calls += 1
                self.successes += 1
                self._consecutive = 0
                w = self._window
                w.record(outcome, now)
                if outcome or self._eval_on_success or w.calls == self._min_calls:
                    self._evaluate(now)
            return result
        gen, start = self._admit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, gen, start)
            raise
        self._on_success(gen, start)
        return result

    async def __aenter__(self) -> CircuitBreaker:
        if self._state is _CLOSED:
            gen = self._gen
            self.calls += 1
            start = self._clock() if self._timed else 0.0
        else:
            gen, start = self._admit()
        task = task_on(get_running_loop())
        entries = self._entries
        # A linked stack per task, so nested use of one breaker in one task works too.
        entries[task] = (gen, start, entries.get(task))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = task_on(get_running_loop())
        entries = self._entries
        gen, start, prev = entries.pop(task)
        if prev is not None:
            entries[task] = prev
        if exc is None:
            self._on_success(gen, start)
        else:
            self._on_error(exc, gen, start)

    def force_open(self) -> None:
        """Reject every call until `force_closed()`, `reset()` or `disable()`."""
        self._transition(_FORCED_OPEN, self._clock())

    def force_closed(self) -> None:
        """Close now with an empty window, whatever the recent outcomes were."""
        self._trips = 0
        self._transition(_CLOSED, self._clock())
        self._window.reset()
        self._consecutive = 0

    def disable(self) -> None:
        """Let every call through and record nothing."""
        self._transition(_DISABLED, self._clock())

    def reset(self) -> None:
        """Back to a fresh closed breaker: empty window, no trips, counters zeroed."""
        self._trips = 0
        self._transition(_CLOSED, self._clock())
        self._window.reset()
        self._consecutive = 0
        self.calls = self.successes = self.failures = self.slow_calls = 0
        self.rejections = self.ignored = 0

    def stats(self) -> BreakerStats:
        """A consistent snapshot of counters and state."""
        now = self._clock()
        self._tick(now)
        w = self._window
        w.refresh(now)
        n = w.calls
        return BreakerStats(
            name=self.name,
            state=self._state,
            since=self._since,
            calls=self.calls,
            successes=self.successes,
            failures=self.failures,
            slow_calls=self.slow_calls,
            rejections=self.rejections,
            ignored=self.ignored,
            window_calls=n,
            failure_rate=w.failures / n if n else 0.0,
            slow_call_rate=w.slow / n if n else 0.0,
            consecutive_failures=self._consecutive,
            trips=self._trips,
            open_until=self._open_until if self._state is _OPEN else None,
        )

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.value}>"

    # ----------------------------------------------------------------- internals

    def _tick(self, now: float) -> None:
        """Resolve time-driven transitions: open period over, or a half-open trial hung."""
        state = self._state
        if state is _OPEN:
            if now >= self._open_until:
                self._transition(_HALF_OPEN, now)
        elif state is _HALF_OPEN:
            starts = self._trial_starts
            if starts and now - min(starts) >= self._max_wait:
                self._trip(now)

    def _admit(self) -> tuple[int, float]:
        """Admit a call or raise CircuitOpenError; returns (generation, start time)."""
        state = self._state
        if state is _CLOSED:
            self.calls += 1
            return self._gen, self._clock() if self._timed else 0.0
        if state is _DISABLED:
            return self._gen, 0.0
        now = self._clock()
        self._tick(now)
        state = self._state
        if state is _HALF_OPEN and self._trial_active < self._half_open_max:
            self._trial_active += 1
            self._trial_starts.append(now)
            self.calls += 1
            return self._gen, now
        self.rejections += 1
        retry_after = self._open_until - now if state is _OPEN else None
        raise CircuitOpenError(self.name, state.value, retry_after)

    def _classify(self, exc: BaseException) -> int:
        if not isinstance(exc, Exception):
            # CancelledError, KeyboardInterrupt, GeneratorExit: not the node's fault.
            return _IGNORE
        if self._ignore and isinstance(exc, self._ignore):
            return _IGNORE
        if self._predicate is not None:
            return _FAIL if self._predicate(exc) else _SUCCESS
        return _FAIL if isinstance(exc, self._record) else _SUCCESS

    def _on_success(self, gen: int, start: float) -> None:
        if gen != self._gen:
            return
        state = self._state
        if state is _DISABLED:
            return
        outcome = 0
        now = 0.0
        if self._timed:
            now = self._clock()
            sd = self._slow_duration
            if sd is not None and now - start >= sd:
                outcome = SLOW
        self._complete(outcome, gen, start, now)

    def _on_error(self, exc: BaseException, gen: int, start: float) -> None:
        kind = self._classify(exc)
        if gen != self._gen or self._state is _DISABLED:
            return
        if kind == _IGNORE:
            self.ignored += 1
            if self._state is _HALF_OPEN:
                self._trial_active -= 1
                self._trial_starts.remove(start)
            return
        outcome = kind
        now = 0.0
        if self._timed:
            now = self._clock()
            sd = self._slow_duration
            if sd is not None and now - start >= sd:
                outcome |= SLOW
        self._complete(outcome, gen, start, now)

    def _complete(self, outcome: int, gen: int, start: float, now: float) -> None:
        if outcome & FAILURE:
            self.failures += 1
        else:
            self.successes += 1
        if outcome & SLOW:
            self.slow_calls += 1
        if self._state is _HALF_OPEN:
            self._trial_active -= 1
            self._trial_starts.remove(start)
            bad = outcome & FAILURE or (outcome & SLOW and self._slow_rate is not None)
            if bad:
                self._trip(now if self._timed else self._clock())
                return
            self._trial_ok += 1
            if self._trial_ok >= self._success_threshold:
                self._transition(_CLOSED, now if self._timed else self._clock())
            return
        # Closed.
        if outcome & FAILURE:
            self._consecutive += 1
        else:
            self._consecutive = 0
        w = self._window
        w.record(outcome, now)
        if outcome or self._eval_on_success or w.calls == self._min_calls:
            self._evaluate(now)

    def _evaluate(self, now: float) -> None:
        if self._consec_limit and self._consecutive >= self._consec_limit:
            self._trip(now if self._timed else self._clock())
            return
        w = self._window
        n = w.calls
        if n < self._min_calls:
            return
        fr = self._fail_rate
        sr = self._slow_rate
        if (fr is not None and w.failures >= fr * n) or (sr is not None and w.slow >= sr * n):
            self._trip(now if self._timed else self._clock())

    def _trip(self, now: float) -> None:
        duration = self._open_duration * self._open_backoff**self._trips
        if self._max_open is not None and duration > self._max_open:
            duration = self._max_open
        self._trips += 1
        self._open_until = now + duration
        self._transition(_OPEN, now)

    def _transition(self, new: State, now: float) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._since = now
        self._gen += 1
        self._trial_active = 0
        self._trial_ok = 0
        self._trial_starts = []
        if new is _CLOSED:
            self._window.reset()
            self._consecutive = 0
            if old is _HALF_OPEN:
                self._trips = 0
        for listener in tuple(self._listeners):
            try:
                listener(self, old, new)
            except Exception:
                # A broken listener must not change how the breaker protects the node.
                log.exception("circuit breaker listener failed", extra={"breaker": self.name})
