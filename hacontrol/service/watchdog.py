"""The systemd watchdog's budget around actions that may be slow.

A promotion may legitimately wait ``promote_timeout`` (plus a pre-promote hook),
longer than ``WatchdogSec``. Each action gets a budget of its own bound; a step
stuck beyond it still stops the pings. The controller is given a
:class:`WatchdogBudget` and enters it around each action it carries out.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from hacontrol.core.actions import (
    Action,
    CancelPromote,
    ConfigureSync,
    Fence,
    Promote,
    Rejoin,
    Repoint,
    RunHook,
    Switchover,
    Unfence,
)
from hacontrol.service.executors import ExecutionContext, rejoin_bound
from hacontrol.service.policies import promote_wait_s
from hacontrol.service.sdnotify import Notifier


def action_bound(ctx: ExecutionContext, action: Action) -> float:
    """Seconds ``action`` may take at most (its own timeouts plus connects)."""
    config = ctx.config
    connect = config.timing.probe_timeout * 2
    hooks = config.hooks
    if isinstance(action, Promote):
        hook = hooks.timeout if hooks.pre_promote else 0.0
        # Quorum mode sets the candidate's synchronous set first: one more connect.
        prepare = connect if action.sync_standbys is not None else 0.0
        return promote_wait_s(ctx.settings) + hook + connect + prepare
    if isinstance(action, Switchover):
        return ctx.settings.switchover_timeout_s * 2
    if isinstance(action, Rejoin):
        return rejoin_bound(config, ctx.driver(action.node))
    if isinstance(action, Fence):
        return connect + (hooks.timeout if hooks.fence else 0.0)
    if isinstance(action, RunHook):
        return hooks.timeout + 1.0
    if isinstance(action, CancelPromote):
        driver = ctx.drivers.get(action.node)
        return 3 * (driver.timeout_hint() if driver is not None else 60.0) + connect
    assert isinstance(action, Repoint | ConfigureSync | Unfence)
    return connect


class WatchdogBudget:
    """Raises the watchdog timeout to an action's bound while it is carried out."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def __call__(self, ctx: ExecutionContext, action: Action) -> AbstractContextManager[None]:
        """The budget of ``action``. A switchover or rejoin runs beside the loop, whose
        rounds keep feeding the watchdog: it needs none (and a long one would hide a
        stuck loop)."""
        if isinstance(action, Switchover | Rejoin):
            return nullcontext()
        return self.notifier.action_budget(action_bound(ctx, action))
