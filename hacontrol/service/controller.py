"""The controller loop: probe every node, decide, act, journal. The imperative shell.

One round: probe all nodes in parallel (each behind its own resilience policy, so
a hung node costs one probe timeout and never the loop), fold the view into the
decision core, journal its events, carry out its actions, and fold each outcome
back in. After a promote the next round starts at once, so completion and
repointing are not delayed by the probe interval.

The long procedures — a planned switchover and a rejoin — run as background
tasks beside the loop (one switchover, one rejoin per node), so probe rounds go
on every interval while they work; each reports its outcome to the decision
core when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import structlog

from hacontrol.config import Config
from hacontrol.core.actions import (
    Action,
    ActionOutcome,
    Decision,
    ManageSlots,
    Promote,
    Rejoin,
    Switchover,
)
from hacontrol.core.apply import apply_outcome
from hacontrol.core.handle import handle_request
from hacontrol.core.invariants import check as check_invariants
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.core.requests import Request
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.round import decide
from hacontrol.core.state import ControllerState, carried_over
from hacontrol.io.claim import lock_session_name
from hacontrol.io.drivers.base import NodeDriver
from hacontrol.io.journal import Journal
from hacontrol.io.pg import set_term
from hacontrol.redact import redact_text
from hacontrol.resilience import CircuitBreaker
from hacontrol.service.background import BACKGROUND, Background, procedure_key
from hacontrol.service.distributed import (
    commit_facts,
    end_older_terms_everywhere,
    followed_state,
    not_carried_out,
    take_up_term,
)
from hacontrol.service.exclusive import ExclusiveGate
from hacontrol.service.executors import (
    EXECUTORS,
    ExecutionContext,
    Executor,
    decision_settings,
    rejoin_bound,
)
from hacontrol.service.guards import NodeGuards
from hacontrol.service.hook_tasks import HookTasks
from hacontrol.service.leader import LeaderLoop
from hacontrol.service.managed_settings import manage_settings
from hacontrol.service.policies import ActionPolicies, promote_wait_s
from hacontrol.service.recovery import (
    ForeignJournalError,
    check_journal_identity,
    recover_state,
)
from hacontrol.service.reporting import (
    record_action_finished,
    record_action_started,
    record_events,
    record_step,
    report_broken_invariants,
)
from hacontrol.service.snapshot import StatusSnapshot, status_snapshot

__all__ = ["BACKGROUND", "Controller", "ForeignJournalError", "RoundResult", "procedure_key"]

log = structlog.get_logger("hacontrol")

ActionBudget = Callable[[ExecutionContext, Action], AbstractContextManager[None]]
"""What the controller enters around each action it carries out (a watchdog budget)."""


def _no_budget(ctx: ExecutionContext, action: Action) -> AbstractContextManager[None]:
    return nullcontext()


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round saw and did (for callers that watch the loop)."""

    view: ClusterView
    decision: Decision
    outcomes: tuple[ActionOutcome, ...]
    duration_s: float


class Controller:
    """Keeps one cluster writable. Build it from a Config; run it with :meth:`run`."""

    def __init__(
        self,
        config: Config,
        *,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.monotonic,
        action_budget: ActionBudget = _no_budget,
    ) -> None:
        self.config = config
        self.specs: tuple[NodeSpec, ...] = config.node_specs()
        self.by_name = {spec.name: spec for spec in self.specs}
        self.drivers: dict[str, NodeDriver] = config.build_drivers()
        self.settings = decision_settings(config, self.drivers)
        self.journal = journal if journal is not None else Journal(config.journal)
        self._clock = clock
        self.action_budget = action_budget
        # The executor of each action type; a test may swap one entry.
        self.executors: dict[type[Action], Executor] = dict(EXECUTORS)
        self.guards = NodeGuards(clock)
        self.probers = self.guards.probers
        self.breakers: dict[str, CircuitBreaker] = self.guards.breakers
        self.action_policies: dict[str, ActionPolicies] = self.guards.action_policies
        for spec in self.specs:
            self._add_node(spec)
        self.state, self._journal_identity = recover_state(
            self.journal, self.specs, pinned=config.system_identifier, clock=clock
        )
        self.view: ClusterView | None = None
        self.rounds = 0
        self.last_round_s = 0.0
        self._broken: tuple[str, ...] = ()  # invariants the last decision broke
        # Rounds and operator requests take turns: a request is decided on the
        # state and view of a completed round, never in the middle of one.
        self._turn = asyncio.Lock()
        self.background = Background(self.journal)
        # Background procedures by key ("switchover", "rejoin:NODE").
        self.procedures = self.background.tasks
        self._settings_task: asyncio.Task[None] | None = None
        self.hooks = HookTasks(self.journal, self._fold_later)
        listen = config.api.listen if config.api.enabled else None
        # With [dcs] the controllers of the scope share the cluster through etcd;
        # without, this one acts only while it holds the cluster's lock.
        self.leader: LeaderLoop | None = None
        self.exclusive: ExclusiveGate | None = None
        self._sweep: asyncio.Task[None] | None = None
        if config.dcs is not None:
            self.leader = LeaderLoop(
                config.dcs, self.journal, probe_interval_s=config.timing.probe_interval,
                action_bound_s=config.timing.probe_timeout, api_listen=listen, clock=clock,
            )
        else:
            self.exclusive = ExclusiveGate(
                self.specs, self.journal, timeout=config.timing.probe_timeout,
                name=lock_session_name(listen),
            )

    # -- start-up and reload

    def _add_node(self, spec: NodeSpec) -> None:
        self.guards.add(spec, self.config.timing, promote_wait=promote_wait_s(self.settings))

    def _check_journal_identity(self, view: ClusterView) -> None:
        self._journal_identity = check_journal_identity(
            self.journal, self._journal_identity, view, self.by_name
        )

    async def reload(
        self, config: Config, *, settings_changed: list[str] | None = None
    ) -> list[str]:
        """Switch to a new configuration between rounds; returns what changed (the
        nodes, and ``settings_changed``: the other keys the caller found changed).

        The decision state carries over (known primary, fences, flags, health);
        nodes that were removed are forgotten, new nodes start unprobed, and a
        node whose DSN changed gets a fresh probe connection.
        """
        async with self._turn:
            changes: list[str] = list(settings_changed or ())
            old_specs = self.by_name
            new_specs = {spec.name: spec for spec in config.node_specs()}
            for name in sorted(set(old_specs) - set(new_specs)):
                changes.append(f"node {name} removed")
                await self.guards.remove(name)
            self.config = config
            self.specs = config.node_specs()
            self.by_name = new_specs
            self.drivers = config.build_drivers()
            for driver in self.drivers.values():
                driver.expect_system_identifier(self.state.system_identifier)
            self.settings = decision_settings(config, self.drivers)
            for spec in self.specs:
                old = old_specs.get(spec.name)
                if old == spec and spec.name in self.probers:
                    self.probers[spec.name].timeout = config.timing.probe_timeout
                    continue
                changes.append(f"node {spec.name} {'changed' if old else 'added'}")
                if spec.name in self.probers:
                    await self.probers[spec.name].close()
                self._add_node(spec)
            self.state = carried_over(self.state, self.specs)
            if self.exclusive is not None:
                await self.exclusive.set_specs(self.specs)
            self.journal.append("config_reloaded", changes=changes)
            log.info("config_reloaded", changes=changes)
            return changes

    # -- the loop

    async def run(
        self,
        stop: asyncio.Event,
        on_round: Callable[[RoundResult], None] | None = None,
    ) -> None:
        """Run rounds until ``stop`` is set. The round in flight always completes."""
        self.journal.append("controller_started", nodes=[s.name for s in self.specs])
        log.info(
            "controller_started", nodes=[s.name for s in self.specs], mode=str(self.settings.mode)
        )
        leader_stop = asyncio.Event()
        leader_task = (
            asyncio.create_task(self.leader.run(leader_stop), name="hacontrol:leader")
            if self.leader is not None else None
        )
        try:
            if self.exclusive is not None and not await self.exclusive.wait_active(stop):
                return
            listener_failing = False
            while not stop.is_set():
                if self.exclusive is not None:
                    self.exclusive.keep()
                result = await self.step()
                if on_round is not None:
                    try:
                        on_round(result)
                        listener_failing = False
                    except Exception:
                        # Metrics and notifications must never stop failover; said
                        # once per run of failures, not every round.
                        if not listener_failing:
                            log.exception("round_listener_failed")
                        listener_failing = True
                promoted = any(isinstance(a, Promote) for a in result.decision.actions)
                delay = 0.0 if promoted else self.settings.probe_interval_s - result.duration_s
                if delay > 0:
                    try:
                        async with asyncio.timeout(delay):
                            await stop.wait()
                    except TimeoutError:
                        pass
        finally:
            try:
                await self.wait_procedures()
            finally:
                if leader_task is not None:
                    # After the last action: resign, so a standby takes over at once.
                    leader_stop.set()
                    with contextlib.suppress(Exception):
                        await leader_task
                await self.close()
                self.journal.append("controller_stopped", rounds=self.rounds)
                log.info("controller_stopped", rounds=self.rounds)

    async def step(self) -> RoundResult:
        """One round: probe, decide, journal, carry out, fold the outcomes."""
        async with self._turn:
            started = self._clock()
            view = await self.probe_round()
            self._check_journal_identity(view)
            if self.leader is not None:
                self.leader.observe(view)
                if not self.leader.leading():
                    return self._follow(view, started)
                if self.leader.new_term is not None:
                    self._take_up_term(self.leader)
                view = replace(view, witnesses=self.leader.witnesses())
            decision = decide(self.state, view, self.specs, self.settings)
            self._broken = report_broken_invariants(
                self.journal,
                check_invariants(decision.state, self.specs, view, decision.actions),
                self._broken,
            )
            self._learn(decision.state)
            self.state = decision.state
            self.view = view
            record_events(self.journal, decision.events)
            outcomes = await self._carry_out(decision.actions)
            if not self.state.paused and self._may_act():
                self._start_settings(view)
            if self.leader is not None:
                await commit_facts(self.leader, self.journal)
            self.rounds += 1
            self.last_round_s = self._clock() - started
            return RoundResult(view, decision, outcomes, self.last_round_s)

    def _take_up_term(self, leader: LeaderLoop) -> None:
        """The first round of a term: the facts taken up, this term's connections
        named after it, the older terms' sessions ended on every node (before the
        first action, see _carry_out)."""
        epoch = leader.new_term
        self.state = take_up_term(leader, self.journal, self.state, self.specs,
                                  pinned=self.config.system_identifier, clock=self._clock)
        if epoch is not None:
            set_term(epoch)
            self._sweep = asyncio.create_task(end_older_terms_everywhere(
                self.specs, epoch, self.journal, timeout=self.config.timing.probe_timeout
            ))

    def _follow(self, view: ClusterView, started: float) -> RoundResult:
        """A standby's round: its own probes, the leader's facts, no decision."""
        assert self.leader is not None
        set_term(None)
        self.background.cancel()  # a term that ended takes its procedures with it
        self.state = followed_state(self.leader, self.state, self.specs,
                                    pinned=self.config.system_identifier, clock=self._clock)
        self.view = view
        self.rounds += 1
        self.last_round_s = self._clock() - started
        return RoundResult(view, Decision(self.state), (), self.last_round_s)

    def _may_act(self) -> bool:
        """True unless another controller may be the one acting now."""
        return self.leader is None or self.leader.may_act()

    def _learn(self, state: ControllerState) -> None:
        """Tell the drivers the cluster's identity once it is known, so they refuse a
        data directory of another cluster."""
        if state.system_identifier != self.state.system_identifier or self.rounds == 0:
            for driver in self.drivers.values():
                driver.expect_system_identifier(state.system_identifier)

    async def handle(self, request: Request) -> tuple[Decision, tuple[ActionOutcome, ...]]:
        """Decide on an operator request against the latest round and carry it out."""
        async with self._turn:
            view = self.view if self.view is not None else await self.probe_round()
            self.view = view
            decision = handle_request(self.state, view, self.specs, self.settings, request)
            self.state = decision.state
            record_events(self.journal, decision.events)
            outcomes = await self._carry_out(decision.actions)
            return decision, outcomes

    async def _carry_out(self, actions: tuple[Action, ...]) -> tuple[ActionOutcome, ...]:
        """Execute actions in order, folding each outcome (and any follow-up
        actions it produces) back into the state. Switchovers and rejoins are
        started in the background; their outcomes are folded in when they end."""
        outcomes: list[ActionOutcome] = []
        if actions and self._sweep is not None:
            # The older terms' sessions end before this term's first action.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sweep),
                                       self.config.timing.probe_timeout * 2)
            self._sweep = None
        if actions and self.leader is not None and not await commit_facts(
            self.leader, self.journal, actions
        ):
            # Not committed in this term: nothing is carried out, and the core hears
            # that nothing reached a node.
            for action in actions:
                outcome = not_carried_out(action, self.leader)
                outcomes.append(outcome)
                self._fold(outcome)
            return tuple(outcomes)
        queue = list(actions)
        # Follow-ups are few (a hook after a switchover); the bound keeps a
        # misbehaving rule from looping.
        budget = len(queue) + 16
        while queue and budget > 0:
            budget -= 1
            action = queue.pop(0)
            if isinstance(action, BACKGROUND):
                self.background.launch(action, self._procedure(action))
                continue
            outcome = await self.execute(action)
            outcomes.append(outcome)
            queue.extend(self._fold(outcome))
        return tuple(outcomes)

    def _fold(self, outcome: ActionOutcome) -> tuple[Action, ...]:
        """Report ``outcome`` to the decision core; the follow-up actions."""
        follow = apply_outcome(self.state, outcome, self._clock(), self.settings)
        self.state = follow.state
        record_events(self.journal, follow.events)
        return follow.actions

    async def _fold_later(self, outcome: ActionOutcome) -> None:
        """Fold the outcome of something that ended beside the loop, between rounds."""
        async with self._turn:
            self._fold(outcome)

    # -- background procedures

    async def _procedure(self, action: Switchover | Rejoin | ManageSlots) -> None:
        """Run one background procedure to its outcome and report it under the turn lock."""
        try:
            outcome = await self.execute(action)
        except asyncio.CancelledError:
            self.journal.append("action_finished", action=type(action).__name__,
                                node=action.node, status="cancelled",
                                detail="the controller stopped while it ran")
            raise
        except Exception as exc:  # a bug must not leave the state waiting for ever
            detail = f"{type(exc).__name__}: {redact_text(str(exc))}"
            log.error("procedure_failed", action=type(action).__name__, node=action.node,
                      error=detail)
            # A switchover may have got past its promote: only what is seen decides.
            status = OutcomeStatus.FAILED if isinstance(action, Rejoin | ManageSlots) else (
                OutcomeStatus.UNCERTAIN
            )
            outcome = ActionOutcome(action, status, f"internal error: {detail}")
        async with self._turn:
            follow = self._fold(outcome)
            await self._carry_out(follow)

    def running(self, key: str) -> bool:
        """True while the background procedure ``key`` runs."""
        return self.background.running(key)

    async def wait_procedures(self) -> None:
        """Wait for the background procedures to end (a stop lets them finish: a
        switchover cut short could leave no writable primary). Cancelled: they are
        cancelled too, and their driver programs killed. Slot work is only cancelled:
        the next leader (or start) redoes it."""
        tasks = self.background.to_wait_for() + self.hooks.pending()
        if self._settings_task is not None:
            self._settings_task.cancel()  # redone at the next start
            tasks.append(self._settings_task)
        if not tasks:
            return
        log.info("waiting_for_procedures", procedures=sorted(self.procedures))
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- probing

    async def probe_round(self) -> ClusterView:
        """Probe every node in parallel; one Observation each, whatever happens."""
        heartbeat = self.config.postgres.heartbeat and self._may_act()
        return await self.guards.probe_round(
            self.specs, heartbeat=self.state.primary if heartbeat else None
        )

    # -- actions

    def context(self) -> ExecutionContext:
        """What the executors need, as configured now."""
        return ExecutionContext(
            config=self.config,
            settings=self.settings,
            specs=self.by_name,
            drivers=self.drivers,
            policies=self.action_policies,
            journal=self.journal,
            hooks=self.hooks,
            record=lambda kind, fields: record_step(self.journal, kind, fields),
        )

    async def execute(self, action: Action) -> ActionOutcome:
        """Carry out one action and report what happened. Never raises for node trouble."""
        if self.leader is not None and not self.leader.may_act():
            return not_carried_out(action, self.leader)
        ctx = self.context()
        with self.action_budget(ctx, action):
            record_action_started(self.journal, action)
            outcome = await self.executors[type(action)](ctx, action)
            record_action_finished(self.journal, action, outcome)
            return outcome

    def rejoin_bound(self, node: str) -> float:
        """Seconds one rejoin of ``node`` may take at most."""
        return rejoin_bound(self.config, self.context().driver(node))

    def _start_settings(self, view: ClusterView) -> None:
        # Beside the loop: a node that hangs on connect (frozen, half-open) would
        # otherwise hold up the next probe round, and with it failure detection.
        if self._settings_task is None or self._settings_task.done():
            self._settings_task = asyncio.create_task(
                self.manage_settings(view), name="manage-settings"
            )

    async def manage_settings(self, view: ClusterView) -> None:
        """Keep the managed server settings (receiver/sender timeouts) in place on
        every node at once."""
        await manage_settings(self.context(), self.specs, view, self.probers,
                              timeout=self.config.timing.probe_timeout)

    # -- reporting

    async def close(self) -> None:
        """Close every probe connection and give the cluster's lock up."""
        await self.guards.close()
        if self.exclusive is not None:
            await self.exclusive.close()

    def status(self) -> StatusSnapshot:
        """The last round's view, primary, flags, breakers and procedures."""
        resilience = {name: self.guards.resilience(name) for name in self.breakers}
        return status_snapshot(
            self.state, self.view, self.specs,
            mode=str(self.settings.mode),
            breakers={name: r.breaker for name, r in resilience.items()},
            rounds=self.rounds,
            last_round_s=self.last_round_s,
            procedures=self.background.keys(),
            drivers={name: d.describe() for name, d in self.drivers.items()},
            resilience=resilience,
        )

    def snapshot(self) -> dict[str, Any]:
        """:meth:`status` in its JSON form (for status output)."""
        return self.status().to_json()


