"""Hooks that run beside the probe loop, so a slow hook never delays probing,
fencing or detection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

from hacontrol.core.actions import ActionOutcome, RunHook
from hacontrol.core.results import OutcomeStatus
from hacontrol.io.hooks import run_hook
from hacontrol.io.journal import Journal
from hacontrol.redact import redact_text


class HookTasks:
    """The hooks running beside the loop, the latest by key (event, or "fence:NODE").

    Hooks with one key run one after another, in the order they were asked for (a
    role change hook sees the changes in order). A failed hook that carries out a
    :class:`RunHook` action is reported through ``on_failure``.
    """

    def __init__(
        self, journal: Journal, on_failure: Callable[[ActionOutcome], Awaitable[None]]
    ) -> None:
        self.journal = journal
        self.on_failure = on_failure
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def running(self, key: str) -> bool:
        """True while a hook under ``key`` is running or waiting its turn."""
        return key in self.tasks

    def start(
        self,
        key: str,
        event: str,
        node: str,
        command: str,
        env: Mapping[str, str],
        *,
        timeout: float,
        action: RunHook | None = None,
    ) -> None:
        """Run ``command`` in the background, after the hook under ``key`` before it."""
        previous = self.tasks.get(key)

        async def body() -> None:
            if previous is not None and not previous.done():
                with contextlib.suppress(Exception):
                    await previous
            hook = await run_hook(command, dict(env), timeout)
            self.journal.append("hook_finished", hook=event, node=node, ok=hook.ok,
                                returncode=hook.returncode, output=redact_text(hook.output),
                                duration_s=round(hook.duration_s, 3))
            if not hook.ok and action is not None:
                await self.on_failure(ActionOutcome(
                    action, OutcomeStatus.FAILED,
                    f"exit {hook.returncode}: {redact_text(hook.output)}",
                ))

        task = asyncio.create_task(body(), name=f"hacontrol:hook:{key}")
        self.tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.tasks.get(key) is done:
                del self.tasks[key]

        task.add_done_callback(forget)

    def pending(self) -> list[asyncio.Task[None]]:
        """The hook tasks not finished yet."""
        return [t for t in self.tasks.values() if not t.done()]
