"""Per-attempt timeout that cancels the attempt, cheaper than asyncio.timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ._tasks import get_running_loop, task_on
from .errors import AttemptTimeoutError

P = ParamSpec("P")
T = TypeVar("T")


class _Expiry:
    """Timer callback that cancels the task and remembers that it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def run_within(
    delay: float,
    make_error: Callable[[], BaseException],
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    """Await `fn(*args, **kwargs)`; cancel it after `delay` s and raise `make_error()`.

    A cancellation that came from elsewhere (the caller, a task group) is re-raised as is,
    even if it arrives together with ours: the task's cancel count tells them apart, as
    asyncio.timeout does.
    """
    loop = get_running_loop()
    task = task_on(loop)
    if task is None:
        raise RuntimeError("run_within needs a running task")
    expiry = _Expiry(task)
    cancelling = task.cancelling()
    handle = loop.call_later(delay, expiry)
    try:
        return await fn(*args, **kwargs)
    except asyncio.CancelledError as exc:
        if expiry.fired:
            expiry.fired = False
            if task.uncancel() <= cancelling:
                raise make_error() from exc
        raise
    finally:
        handle.cancel()
        if expiry.fired:
            # The timer fired but the attempt swallowed the cancellation: take our cancel
            # request back so it does not leak to the caller.
            task.uncancel()


class Timeout:
    """Cancel an attempt that runs longer than `seconds`; raises AttemptTimeoutError."""

    __slots__ = ("name", "seconds", "timeouts")

    def __init__(self, seconds: float, name: str = "timeout") -> None:
        if seconds <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.seconds = seconds
        self.name = name
        self.timeouts = 0

    def _error(self) -> BaseException:
        self.timeouts += 1
        return AttemptTimeoutError(self.name, self.seconds)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `await fn(*args, **kwargs)` with this timeout."""
        # Same logic as run_within, inlined: one coroutine frame less per attempt.
        loop = get_running_loop()
        task = task_on(loop)
        if task is None:
            raise RuntimeError("Timeout.call needs a running task")
        expiry = _Expiry(task)
        cancelling = task.cancelling()
        handle = loop.call_later(self.seconds, expiry)
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError as exc:
            if expiry.fired:
                expiry.fired = False
                if task.uncancel() <= cancelling:
                    raise self._error() from exc
            raise
        finally:
            handle.cancel()
            if expiry.fired:
                task.uncancel()
