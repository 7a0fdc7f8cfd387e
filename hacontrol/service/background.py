"""The background procedures: switchovers, rejoins and slot work beside the loop.

One switchover and one rejoin and one slot pass per node at a time, by key; the
controller supplies what a procedure runs and folds its outcome in itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from hacontrol.core.actions import ManageSlots, Rejoin, Switchover
from hacontrol.io.journal import Journal

__all__ = ["BACKGROUND", "Background", "procedure_key"]

log = structlog.get_logger("hacontrol")

# Actions that run as background tasks beside the probe loop.
BACKGROUND = (Switchover, Rejoin, ManageSlots)


def procedure_key(action: Switchover | Rejoin | ManageSlots) -> str:
    """The key of a background procedure: one switchover, one rejoin per node."""
    if isinstance(action, ManageSlots):
        return f"slots:{action.node}"
    return "switchover" if isinstance(action, Switchover) else f"rejoin:{action.node}"


class Background:
    """The running background procedures by key."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def launch(
        self, action: Switchover | Rejoin | ManageSlots, run: Coroutine[Any, Any, None]
    ) -> None:
        """Start ``run`` for ``action`` unless its procedure already runs."""
        key = procedure_key(action)
        if self.running(key):
            # The core never sends a second one while the first runs (in flight /
            # rejoining); if it did, the first one's outcome still settles the state.
            run.close()
            self.journal.append("procedure_skipped", key=key, node=action.node,
                                reason="already running")
            log.warning("procedure_skipped", key=key, node=action.node)
            return
        task = asyncio.create_task(run, name=f"hacontrol:{key}")
        self.tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.tasks.get(key) is done:
                del self.tasks[key]

        task.add_done_callback(forget)

    def running(self, key: str) -> bool:
        """True while the background procedure ``key`` runs."""
        task = self.tasks.get(key)
        return task is not None and not task.done()

    def keys(self) -> list[str]:
        """The keys of the procedures that run now."""
        return [k for k in self.tasks if self.running(k)]

    def cancel(self) -> None:
        """Cancel every procedure (a term that ended takes its procedures with it)."""
        for task in self.tasks.values():
            task.cancel()

    def to_wait_for(self) -> list[asyncio.Task[None]]:
        """The procedures a stop waits for; slot work is cancelled instead (the
        next leader, or start, redoes it)."""
        for key, task in self.tasks.items():
            if key.startswith("slots:") and not task.done():
                task.cancel()
        return [t for t in self.tasks.values() if not t.done()]
