"""Carrying out the core's actions: one executor per action type, one signature.

``EXECUTORS[type(action)](ctx, action)`` does what ``action`` asks and reports it as
an :class:`ActionOutcome`; it never raises for node trouble. An outcome says
``attempted=False`` when the shell certainly did not carry the action out (no
connection, a policy rejected it, a driver or hook refused first), so a failure
needs no settling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from hacontrol.config import Config
from hacontrol.core.actions import (
    Action,
    ActionOutcome,
    CancelPromote,
    ConfigureSync,
    Fence,
    ManageSlots,
    Promote,
    Rejoin,
    Repoint,
    RunHook,
    Switchover,
    Unfence,
)
from hacontrol.core.events import hook_env
from hacontrol.core.model import NodeSpec
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.slot_names import repoint_slot, sync_dbname
from hacontrol.io import slots as slot_steps
from hacontrol.io import steps as act
from hacontrol.io.drivers.base import NodeDriver, NullDriver, Step
from hacontrol.io.hooks import HookResult, run_hook
from hacontrol.io.journal import Journal
from hacontrol.io.procedures.rejoin import Record, missing_steps, rejoin
from hacontrol.io.procedures.switchover import SwitchoverContext, run_switchover
from hacontrol.redact import redact_text
from hacontrol.service.hook_tasks import HookTasks
from hacontrol.service.policies import ActionPolicies, guarded, promote_wait_s

# Driver steps a rejoin may take in sequence (status, two stops, checkpoint, rewind,
# standby configuration, start, and stops again after a failed start), each bounded
# by the driver's own step timeout: the bound of one rejoin is built from them.
REJOIN_STEPS = 8


@dataclass(frozen=True, slots=True)
class ExecutionContext:
    """What carrying out an action needs from the controller (as configured now)."""

    config: Config
    settings: DecisionSettings
    specs: Mapping[str, NodeSpec]
    drivers: Mapping[str, NodeDriver]
    policies: Mapping[str, ActionPolicies]
    journal: Journal
    hooks: HookTasks
    # Journals and logs one step of a procedure.
    record: Record

    @property
    def connect_timeout(self) -> float:
        """Seconds one connection to a node may take."""
        return self.config.timing.probe_timeout

    def driver(self, node: str) -> NodeDriver:
        """The driver of ``node`` (one that can do nothing if none is configured)."""
        return self.drivers.get(node) or NullDriver(node)

    async def guarded(
        self, node: str, step: Callable[..., Any], *args: Any, promote: bool = False, **kw: Any
    ) -> act.StepResult:
        """Run one step behind ``node``'s action policy."""
        return await guarded(self.policies[node], step, *args, promote=promote, **kw)


Executor = Callable[[ExecutionContext, Action], Awaitable[ActionOutcome]]
_A = TypeVar("_A", bound=Action)


def outcome(action: Action, result: act.StepResult) -> ActionOutcome:
    """The outcome of an action that was one step."""
    status = OutcomeStatus.SUCCEEDED if result.ok else OutcomeStatus.FAILED
    return ActionOutcome(action, status, result.detail, attempted=result.attempted)


def _untouched(action: Action, detail: str) -> ActionOutcome:
    return ActionOutcome(action, OutcomeStatus.FAILED, detail, attempted=False)


async def promote(ctx: ExecutionContext, action: Promote) -> ActionOutcome:
    """Run the pre-promote hook, set the synchronous set (quorum mode), promote."""
    hooks = ctx.config.hooks
    spec = ctx.specs[action.node]
    if hooks.pre_promote:
        env = hook_env("pre_promote", node=action.node, old_primary=action.old_primary)
        hook = await run_hook(hooks.pre_promote, env, hooks.timeout)
        ctx.journal.append("hook_finished", hook="pre_promote", node=action.node, ok=hook.ok,
                           returncode=hook.returncode, output=redact_text(hook.output))
        if not hook.ok:
            return _untouched(action, f"pre_promote hook failed ({hook.returncode}); not promoted")
    if action.sync_standbys is not None:
        # Quorum mode: the candidate's first commit as primary must already wait
        # for its replicas, so its synchronous set is in place before the promote.
        prepared = await ctx.guarded(
            action.node, act.set_standby_names, spec, action.sync_standbys,
            connect_timeout=ctx.connect_timeout,
        )
        if not prepared.ok:
            return _untouched(
                action, f"could not set its synchronous set ({prepared.detail}); not promoted"
            )
    result = await ctx.guarded(
        action.node, act.promote, spec, promote=True,
        connect_timeout=ctx.connect_timeout, wait_s=promote_wait_s(ctx.settings),
        slots=action.slots,
    )
    if result.ok:
        return ActionOutcome(action, OutcomeStatus.SUCCEEDED, result.detail)
    # Could not connect, or the policy never ran it: certainly nothing happened.
    # Anything else may have landed (pg_promote sent, then the link stalled).
    status = OutcomeStatus.UNCERTAIN if result.attempted else OutcomeStatus.FAILED
    return ActionOutcome(action, status, result.detail, attempted=result.attempted)


async def repoint(ctx: ExecutionContext, action: Repoint) -> ActionOutcome:
    """Point a replica at the primary."""
    result = await ctx.guarded(
        action.node, act.repoint, ctx.specs[action.node], ctx.specs[action.primary],
        connect_timeout=ctx.connect_timeout, slot=action.slot, slot_sync=action.slot_sync,
        dbname=sync_dbname(ctx.settings),
    )
    return outcome(action, result)


# How long creating a logical slot may wait for the transactions writing when it
# started (it runs beside the loop, on its own connection, outside the node's
# bulkhead, so a long transaction never holds back a fence or a promote).
LOGICAL_SLOT_WAIT_S = 60.0


async def manage_slots(ctx: ExecutionContext, action: ManageSlots) -> ActionOutcome:
    """Create and drop slots on a node (not behind its action policy: see above)."""
    bound = LOGICAL_SLOT_WAIT_S + 4 * ctx.connect_timeout
    try:
        done = await asyncio.wait_for(slot_steps.manage_slots(
            ctx.specs[action.node], action, connect_timeout=ctx.connect_timeout,
            logical_wait_s=LOGICAL_SLOT_WAIT_S,
        ), bound)
    except TimeoutError:
        return ActionOutcome(action, OutcomeStatus.FAILED, f"timed out after {bound:.0f} s")
    status = OutcomeStatus.SUCCEEDED if done.step.ok else OutcomeStatus.FAILED
    return ActionOutcome(action, status, done.step.detail, attempted=done.step.attempted,
                         slot_lsns=done.lsns)


async def configure_sync(ctx: ExecutionContext, action: ConfigureSync) -> ActionOutcome:
    """Set a node's synchronous_standby_names."""
    result = await ctx.guarded(
        action.node, act.set_standby_names, ctx.specs[action.node], action.value,
        connect_timeout=ctx.connect_timeout,
    )
    return outcome(action, result)


async def unfence(ctx: ExecutionContext, action: Unfence) -> ActionOutcome:
    """Let a node take writes again."""
    result = await ctx.guarded(
        action.node, act.unfence, ctx.specs[action.node], connect_timeout=ctx.connect_timeout
    )
    return outcome(action, result)


def _fence_env(action: Fence) -> dict[str, str]:
    return hook_env("fence", node=action.node, reason=action.reason)


async def fence(ctx: ExecutionContext, action: Fence) -> ActionOutcome:
    """Stop a node from taking writes, by SQL and the fence hook if one is set."""
    hooks = ctx.config.hooks
    spec = ctx.specs[action.node]
    if action.then is not None and hooks.fence:
        # The old primary was unreachable: a failover waits on this fence, so
        # the hook (e.g. STONITH) and one SQL attempt run side by side instead
        # of the hook waiting out the SQL step's retries.
        sql, hook = await asyncio.gather(
            act.fence(spec, connect_timeout=ctx.connect_timeout), _fence_hook(ctx, action)
        )
        if sql.ok or hook.ok:
            detail = f"{sql.detail}; fence hook {'ok' if hook.ok else 'failed'}"
            return ActionOutcome(action, OutcomeStatus.SUCCEEDED, detail)
        return ActionOutcome(
            action, OutcomeStatus.FAILED, f"{sql.detail}; fence hook failed ({hook.returncode})"
        )
    result = await ctx.guarded(action.node, act.fence, spec, connect_timeout=ctx.connect_timeout)
    if hooks.fence:
        # Beside the loop: the next round sees whether the node still takes writes
        # and fences it again; one fence hook per node at a time.
        key = f"fence:{action.node}"
        if not ctx.hooks.running(key):
            ctx.hooks.start(key, "fence", action.node, hooks.fence, _fence_env(action),
                            timeout=hooks.timeout)
        if not result.ok:
            # The hook was started: the fence is under way, whatever SQL could do.
            return ActionOutcome(action, OutcomeStatus.FAILED,
                                 f"{result.detail}; the fence hook runs beside the loop")
    return outcome(action, result)


async def _fence_hook(ctx: ExecutionContext, action: Fence) -> HookResult:
    hooks = ctx.config.hooks
    hook = await run_hook(hooks.fence, _fence_env(action), hooks.timeout)
    ctx.journal.append("hook_finished", hook="fence", node=action.node, ok=hook.ok,
                       returncode=hook.returncode, output=redact_text(hook.output))
    return hook


async def run_event_hook(ctx: ExecutionContext, action: RunHook) -> ActionOutcome:
    """Start the hook beside the loop: a slow hook must never delay probing, fencing
    or detection. Its result is journaled, and a failure reported, when it ends."""
    command = getattr(ctx.config.hooks, action.event, "")
    if not command:
        return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "no hook configured")
    ctx.hooks.start(action.event, action.event, action.node, command, action.env,
                    timeout=ctx.config.hooks.timeout, action=action)
    return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "started beside the probe loop")


def switchover_context(ctx: ExecutionContext) -> SwitchoverContext:
    """What the switchover procedure needs, from the configuration."""
    config = ctx.config
    return SwitchoverContext(
        specs=dict(ctx.specs),
        drivers=dict(ctx.drivers),
        record=ctx.record,
        catchup_timeout=config.switchover.catchup_timeout,
        connect_timeout=config.timing.probe_timeout,
        promote_timeout=promote_wait_s(ctx.settings),
        rejoin_timeout=config.rejoin.timeout,
        max_lag_bytes=ctx.settings.max_lag_bytes,
        allow_basebackup=config.rejoin.allow_basebackup,
        member_slots=ctx.settings.member_slots,
        sync_dbname=sync_dbname(ctx.settings),
    )


async def switchover(ctx: ExecutionContext, action: Switchover) -> ActionOutcome:
    """Run the planned switchover procedure."""
    return await run_switchover(switchover_context(ctx), action)


def rejoin_bound(config: Config, driver: NodeDriver) -> float:
    """Seconds one rejoin may take at most: every driver step at its own timeout, the
    base backup if allowed, and two waits for streaming."""
    rj = config.rejoin
    bound = REJOIN_STEPS * driver.timeout_hint() + 2 * rj.timeout
    if rj.allow_basebackup:
        bound += float(getattr(driver, "basebackup_timeout", 3600.0))
    return bound


async def rejoin_node(ctx: ExecutionContext, action: Rejoin) -> ActionOutcome:
    """Bring a node back as a replica of the primary, within its bound."""
    node, primary = action.node, action.primary
    driver = ctx.driver(node)
    rj = ctx.config.rejoin
    bound = rejoin_bound(ctx.config, driver)
    try:
        async with asyncio.timeout(bound):
            result = await rejoin(
                ctx.specs[node], ctx.specs[primary], driver,
                allow_basebackup=rj.allow_basebackup, timeout=rj.timeout,
                record=ctx.record, connect_timeout=ctx.connect_timeout,
                slot=repoint_slot(ctx.settings, node), dbname=sync_dbname(ctx.settings),
            )
    except TimeoutError:
        # Whatever step hung was killed; never leave the node running half-rejoined.
        try:
            async with asyncio.timeout(driver.timeout_hint()):
                stopped = await driver.stop("immediate")
            note = "stopped" if stopped.ok else f"stop failed: {stopped.detail}"
        except TimeoutError:
            note = "stop timed out"
        ctx.record("rejoin_finished", {"node": node, "ok": False, "method": None,
                                       "detail": f"timed out after {bound:g} s ({note})"})
        return ActionOutcome(action, OutcomeStatus.FAILED,
                             f"rejoin of {node} did not finish within {bound:g} s ({note})")
    status = OutcomeStatus.SUCCEEDED if result.ok else OutcomeStatus.FAILED
    return ActionOutcome(action, status, result.detail, attempted=result.attempted)


async def cancel_promote(ctx: ExecutionContext, action: CancelPromote) -> ActionOutcome:
    """Withdraw a promote request the node may still hold: stop it, remove the
    request (it survives a restart), start it again as a replica."""
    driver = ctx.driver(action.node)
    if not driver.can(Step.STOP, Step.START, Step.DISCARD_PROMOTE):
        return _untouched(action, f"{driver.describe()} cannot stop, discard and start: untouched")
    steps: list[str] = []
    try:
        async with asyncio.timeout(3 * driver.timeout_hint()):
            for step in (driver.stop("fast"), driver.discard_promote(), driver.start()):
                result = await step
                ctx.record("promote_cancel_step", {"node": action.node, **result.fields()})
                steps.append(result.detail)
                if not result.ok:
                    # Stopped but not started again is still safe: nothing can land.
                    return ActionOutcome(action, OutcomeStatus.FAILED, "; ".join(steps))
    except TimeoutError:
        steps.append("timed out")
        return ActionOutcome(action, OutcomeStatus.FAILED, "; ".join(steps))
    return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "; ".join(steps))


def _entry(
    kind: type[_A], run: Callable[[ExecutionContext, _A], Awaitable[ActionOutcome]]
) -> tuple[type[Action], Executor]:
    # Looked up by the exact type of the action, so each executor only ever gets its own.
    return cast("type[Action]", kind), cast(Executor, run)


EXECUTORS: dict[type[Action], Executor] = dict((
    _entry(Promote, promote),
    _entry(Repoint, repoint),
    _entry(Fence, fence),
    _entry(RunHook, run_event_hook),
    _entry(ConfigureSync, configure_sync),
    _entry(Rejoin, rejoin_node),
    _entry(Unfence, unfence),
    _entry(CancelPromote, cancel_promote),
    _entry(Switchover, switchover),
    _entry(ManageSlots, manage_slots),
))
"""The executor of every action type."""


def decision_settings(config: Config, drivers: Mapping[str, NodeDriver]) -> DecisionSettings:
    """The core's settings, with the nodes whose driver can run a rejoin."""
    allow = config.rejoin.allow_basebackup
    capable = frozenset(
        name for name, d in drivers.items() if not missing_steps(d, allow_basebackup=allow)
    )
    return replace(
        config.decision_settings(),
        rejoin_nodes=capable,
        system_identifier=config.system_identifier,
    )
