"""The controller loop: probe every node, decide, act, journal. The imperative shell.

One round: probe all nodes in parallel (each behind its own resilience policy, so
a hung node costs one probe timeout and never the loop), fold the view into the
decision core, carry out its actions, journal and log every event. After a
promote the next round starts at once, so completion and repointing are not
delayed by the probe interval.

The long procedures — a planned switchover and a rejoin — run as background
tasks beside the loop (one switchover, one rejoin per node), so probe rounds go
on every interval while they work; each reports its outcome to the decision
core when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from hacontrol import act
from hacontrol.actions import (
    Action,
    ActionOutcome,
    CancelPromote,
    ConfigureSync,
    Decision,
    Event,
    Fence,
    OutcomeStatus,
    Promote,
    Rejoin,
    Repoint,
    Request,
    RunHook,
    Severity,
    Switchover,
    Unfence,
)
from hacontrol.config import Config
from hacontrol.decide import apply_outcome, decide, handle_request, learn_identity
from hacontrol.drivers.base import NodeDriver, NullDriver, Step
from hacontrol.hooks import HookResult, run_hook
from hacontrol.journal import Journal
from hacontrol.model import ClusterView, DecisionSettings, NodeSpec, Observation
from hacontrol.pgconn import connect
from hacontrol.probe import NodeProber
from hacontrol.redact import redact_text
from hacontrol.rejoin import missing_steps, rejoin
from hacontrol.resilience import (
    BreakerRegistry,
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Policy,
    ResilienceError,
    Retry,
    RetryError,
)
from hacontrol.state import ControllerState, FailoverInFlight, Operation, initial_state
from hacontrol.switchover import SwitchoverContext, run_switchover

log = structlog.get_logger("hacontrol")

# Actions that run as background tasks beside the probe loop.
BACKGROUND = (Switchover, Rejoin)
# Driver steps a rejoin may take in sequence (status, two stops, checkpoint, rewind,
# standby configuration, start, and stops again after a failed start), each bounded
# by the driver's own step timeout: the bound of one rejoin is built from them.
_REJOIN_STEPS = 8

_SEVERITY_LEVEL = {
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.CRITICAL: "critical",
}


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
    ) -> None:
        self.config = config
        self.specs: tuple[NodeSpec, ...] = config.node_specs()
        self.by_name = {spec.name: spec for spec in self.specs}
        self.drivers: dict[str, NodeDriver] = _drivers(config)
        self.settings = _settings(config, self.drivers)
        self.journal = journal if journal is not None else Journal(config.journal)
        self._clock = clock
        timeout = config.timing.probe_timeout
        self.breaker_registry = BreakerRegistry()
        self.probers = {s.name: NodeProber(s, timeout, clock) for s in self.specs}
        self.breakers = {s.name: self._breaker(s.name) for s in self.specs}
        self.probe_policies = {
            # The prober bounds itself by the probe timeout; the policy's timeout is
            # a backstop a little above it, so it never pre-empts the prober's own.
            s.name: Policy(f"probe:{s.name}", breaker=self.breakers[s.name], timeout=timeout * 1.5)
            for s in self.specs
        }
        self.action_policies: dict[str, tuple[Policy, Policy]] = {
            s.name: self._action_policies(s.name) for s in self.specs
        }
        self._journal_identity: int | None = None
        self.state: ControllerState = self._recover_state()
        self.view: ClusterView | None = None
        self.rounds = 0
        self.last_round_s = 0.0
        # Rounds and operator requests take turns: a request is decided on the
        # state and view of a completed round, never in the middle of one.
        self._turn = asyncio.Lock()
        # Background procedures by key ("switchover", "rejoin:NODE").
        self.procedures: dict[str, asyncio.Task[None]] = {}
        # Hooks running beside the loop, the latest by key (event, or "fence:NODE").
        self._hooks: dict[str, asyncio.Task[None]] = {}

    # -- start-up

    def _breaker(self, node: str) -> CircuitBreaker:
        # Opens after a run of failures, which status and metrics show. It lets one
        # trial probe through every round: a returning old primary must be seen (and
        # fenced) within a round or two, so the breaker may not hide it any longer.
        return CircuitBreaker(
            f"probe:{node}",
            failure_rate_threshold=None,
            consecutive_failures=5,
            minimum_calls=5,
            open_duration=self.config.timing.probe_interval * 0.9,
            half_open_max_calls=1,
            half_open_max_wait=self.config.timing.probe_timeout * 2,
            registry=self.breaker_registry,
        )

    def _action_policies(self, node: str) -> tuple[Policy, Policy]:
        """(idempotent, promote) policies of one node. They share one bulkhead, so a
        node never has two actions in flight; only idempotent steps are retried, and
        only when the node could not be reached at all."""
        t = self.config.timing.probe_timeout
        slot = Bulkhead(f"act:{node}.bulkhead", max_concurrent=1, max_queue=8, max_wait=6 * t)
        idempotent = Policy(
            f"act:{node}",
            retry=Retry(f"act:{node}.retry", attempts=3, deadline=6 * t, retry_if=_unreachable),
            breaker=CircuitBreaker(
                f"act:{node}",
                failure_rate_threshold=None,
                consecutive_failures=5,
                minimum_calls=5,
                open_duration=5.0,
                registry=self.breaker_registry,
            ),
            bulkhead=slot,
            timeout=2 * t + 1.0,
        )
        wait = min(self.settings.promote_timeout_s, 60.0)
        promote = Policy(f"promote:{node}", bulkhead=slot, timeout=wait + 2 * t + 1.0)
        return idempotent, promote

    async def _guarded(
        self, node: str, step: Callable[..., Any], *args: Any, promote: bool = False, **kw: Any
    ) -> act.StepResult:
        """Run one act.* step behind the node's action policy; never raises for node trouble."""
        idempotent, promoting = self.action_policies[node]
        policy = promoting if promote else idempotent
        try:
            result: act.StepResult = await policy.call(_checked, step, *args, **kw)
            return result
        except _StepFailed as failed:
            return failed.result
        except (CircuitOpenError, BulkheadFullError) as exc:
            # Rejected before the step ran: certainly nothing happened.
            return act.StepResult(False, f"not attempted: {exc}")
        except RetryError as exc:
            last = exc.last_error
            if isinstance(last, _StepFailed):
                return last.result
            if isinstance(last, CircuitOpenError | BulkheadFullError):
                return act.StepResult(False, f"not attempted: {exc}")
            return act.StepResult(False, f"timed out: {exc}")
        except TimeoutError as exc:
            # An attempt cut off mid-way (AttemptTimeoutError is one): it may have
            # taken effect, e.g. pg_promote already sent. Never "not attempted".
            return act.StepResult(False, f"timed out: {exc}")
        except ResilienceError as exc:
            return act.StepResult(False, f"failed: {exc}")

    def _recover_state(self) -> ControllerState:
        recovered = self.journal.recover()
        last_failover_at: float | None = None
        if recovered.last_failover_wall is not None:
            # The journal holds wall-clock times; carry only the elapsed part of
            # the cool-down over to this process's monotonic clock.
            last_failover_at = self._monotonic_from_wall(recovered.last_failover_wall)
        pinned = self.config.system_identifier
        if (
            pinned is not None
            and recovered.system_identifier is not None
            and recovered.system_identifier != pinned
        ):
            raise ForeignJournalError(
                f"journal {self.journal.path} was written for the cluster with system"
                f" identifier {recovered.system_identifier}, but system_identifier ="
                f" {pinned} is pinned: give this cluster its own journal path"
            )
        # Checked against the nodes in the first rounds (see _check_journal_identity).
        self._journal_identity = recovered.system_identifier
        if recovered.records:
            self.journal.append(
                "controller_recovered",
                primary=recovered.primary,
                paused=recovered.paused,
                maintenance=sorted(recovered.maintenance),
                fenced=sorted(recovered.fenced),
                unresolved_failover=recovered.unresolved_failover,
                system_identifier=recovered.system_identifier,
            )
        in_flight = self._resumed_flight(recovered.unresolved_failover)
        if in_flight is not None:
            log.warning(
                "unresolved_operation",
                message=f"the previous controller stopped during a {in_flight.kind} to"
                f" {in_flight.candidate}: a failover is re-driven to the same candidate, a"
                " switchover settled from what the nodes show",
                **dict(recovered.unresolved_failover or {}),
            )
        return initial_state(
            self.specs,
            known_primary=recovered.primary,
            paused=recovered.paused,
            maintenance=recovered.maintenance,
            fenced=recovered.fenced,
            last_failover_at=last_failover_at,
            in_flight=in_flight,
            system_identifier=pinned or recovered.system_identifier,
        )

    def _monotonic_from_wall(self, wall: float) -> float:
        return self._clock() - max(0.0, time.time() - wall)

    def _resumed_flight(self, unresolved: Any) -> FailoverInFlight | None:
        """The operation the previous controller left unfinished, as an in-flight one."""
        if not unresolved or unresolved.get("node") not in self.by_name:
            return None
        try:
            kind = Operation(str(unresolved.get("operation") or "failover"))
        except ValueError:
            kind = Operation.FAILOVER
        previous = unresolved.get("previous_failover")
        old_timeline = unresolved.get("old_timeline")
        return FailoverInFlight(
            candidate=str(unresolved["node"]),
            old_primary=str(unresolved.get("old_primary") or ""),
            started_at=self._monotonic_from_wall(float(unresolved.get("started") or 0.0)),
            old_timeline=int(old_timeline) if old_timeline is not None else None,
            previous_failover_at=(
                self._monotonic_from_wall(float(previous)) if previous is not None else None
            ),
            kind=kind,
            resumed=True,
        )

    def _check_journal_identity(self, view: ClusterView) -> None:
        """Refuse to go on with a journal written for another cluster (a leftover file
        must never fence this cluster's primary): once a majority of the nodes agree on
        an identifier, it must be the journal's."""
        expected = self._journal_identity
        if expected is None:
            return
        seen = learn_identity(view, self.by_name)
        if seen is None:
            return
        self._journal_identity = None
        if seen != expected:
            self.journal.append("foreign_journal", severity="critical",
                                journal_system_identifier=expected, nodes_system_identifier=seen)
            raise ForeignJournalError(
                f"journal {self.journal.path} was written for the cluster with system"
                f" identifier {expected}, but the nodes report {seen}: give this cluster its"
                " own journal path (or move the old journal away)"
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
                await self.probers.pop(name).close()
                self.breakers.pop(name)
                self.probe_policies.pop(name)
                self.breaker_registry.unregister(f"probe:{name}")
                self.breaker_registry.unregister(f"act:{name}")
                self.action_policies.pop(name)
            self.config = config
            self.specs = config.node_specs()
            self.by_name = new_specs
            self.drivers = _drivers(config)
            for driver in self.drivers.values():
                driver.expect_system_identifier(self.state.system_identifier)
            self.settings = _settings(config, self.drivers)
            timeout = config.timing.probe_timeout
            for spec in self.specs:
                old = old_specs.get(spec.name)
                if old == spec and spec.name in self.probers:
                    self.probers[spec.name].timeout = timeout
                    continue
                changes.append(f"node {spec.name} {'changed' if old else 'added'}")
                if spec.name in self.probers:
                    await self.probers[spec.name].close()
                self.probers[spec.name] = NodeProber(spec, timeout, self._clock)
                if spec.name not in self.breakers:
                    self.breakers[spec.name] = self._breaker(spec.name)
                if spec.name not in self.action_policies:
                    self.action_policies[spec.name] = self._action_policies(spec.name)
                self.probe_policies[spec.name] = Policy(
                    f"probe:{spec.name}", breaker=self.breakers[spec.name], timeout=timeout * 1.5
                )
            kept = initial_state(
                self.specs,
                known_primary=self.state.primary,
                paused=self.state.paused,
                maintenance=self.state.maintenance,
                fenced=self.state.fenced,
                last_failover_at=self.state.last_failover_at,
            )
            nodes = {n: self.state.nodes.get(n, h) for n, h in kept.nodes.items()}
            self.state = replace(
                self.state,
                nodes=nodes,
                primary=kept.primary,
                maintenance=kept.maintenance,
                fenced=kept.fenced,
            )
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
        try:
            while not stop.is_set():
                result = await self.step()
                if on_round is not None:
                    on_round(result)
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
                await self.close()
                self.journal.append("controller_stopped", rounds=self.rounds)
                log.info("controller_stopped", rounds=self.rounds)

    async def step(self) -> RoundResult:
        """One round: probe, decide, act."""
        async with self._turn:
            started = self._clock()
            view = await self.probe_round()
            self._check_journal_identity(view)
            decision = decide(self.state, view, self.specs, self.settings)
            self._learn(decision.state)
            self.state = decision.state
            self.view = view
            self._record_events(decision.events)
            outcomes = await self._carry_out(decision.actions)
            if not self.state.paused:
                await self.manage_settings(view)
            self.rounds += 1
            self.last_round_s = self._clock() - started
            return RoundResult(view, decision, outcomes, self.last_round_s)

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
            self._record_events(decision.events)
            outcomes = await self._carry_out(decision.actions)
            return decision, outcomes

    async def _carry_out(self, actions: tuple[Action, ...]) -> tuple[ActionOutcome, ...]:
        """Execute actions in order, folding each outcome (and any follow-up
        actions it produces) back into the state. Switchovers and rejoins are
        started in the background; their outcomes are folded in when they end."""
        outcomes: list[ActionOutcome] = []
        queue = list(actions)
        # Follow-ups are few (a hook after a switchover); the bound keeps a
        # misbehaving rule from looping.
        budget = len(queue) + 16
        while queue and budget > 0:
            budget -= 1
            action = queue.pop(0)
            if isinstance(action, BACKGROUND):
                self._launch(action)
                continue
            outcome = await self.execute(action)
            outcomes.append(outcome)
            queue.extend(self._fold(outcome))
        return tuple(outcomes)

    def _fold(self, outcome: ActionOutcome) -> tuple[Action, ...]:
        """Report ``outcome`` to the decision core; the follow-up actions."""
        follow = apply_outcome(self.state, outcome, self._clock(), self.settings)
        self.state = follow.state
        self._record_events(follow.events)
        return follow.actions

    # -- background procedures

    def _launch(self, action: Switchover | Rejoin) -> None:
        key = procedure_key(action)
        running = self.procedures.get(key)
        if running is not None and not running.done():
            # The core never sends a second one while the first runs (in flight /
            # rejoining); if it did, the first one's outcome still settles the state.
            self.journal.append("procedure_skipped", key=key, node=action.node,
                                reason="already running")
            log.warning("procedure_skipped", key=key, node=action.node)
            return
        task = asyncio.create_task(self._procedure(action), name=f"hacontrol:{key}")
        self.procedures[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.procedures.get(key) is done:
                del self.procedures[key]

        task.add_done_callback(forget)

    async def _procedure(self, action: Switchover | Rejoin) -> None:
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
            status = OutcomeStatus.FAILED if isinstance(action, Rejoin) else (
                OutcomeStatus.UNCERTAIN
            )
            outcome = ActionOutcome(action, status, f"internal error: {detail}")
        async with self._turn:
            follow = self._fold(outcome)
            await self._carry_out(follow)

    def running(self, key: str) -> bool:
        """True while the background procedure ``key`` runs."""
        task = self.procedures.get(key)
        return task is not None and not task.done()

    async def wait_procedures(self) -> None:
        """Wait for the background procedures to end (a stop lets them finish: a
        switchover cut short could leave no writable primary). Cancelled: they are
        cancelled too, and their driver programs killed."""
        tasks = [t for t in (*self.procedures.values(), *self._hooks.values()) if not t.done()]
        if not tasks:
            return
        log.info("waiting_for_procedures", procedures=sorted(self.procedures))
        await asyncio.gather(*tasks, return_exceptions=True)

    async def probe_round(self) -> ClusterView:
        """Probe every node in parallel; one Observation each, whatever happens."""
        names = [s.name for s in self.specs]
        results = await asyncio.gather(*(self._probe(name) for name in names))
        return ClusterView(at=self._clock(), observations=dict(zip(names, results, strict=True)))

    async def _probe(self, name: str) -> Observation:
        prober = self.probers[name]
        heartbeat = self.config.postgres.heartbeat and name == self.state.primary
        try:
            obs: Observation = await self.probe_policies[name].call(
                self._probe_or_raise, prober, heartbeat
            )
            return obs
        except CircuitOpenError:
            return Observation(
                name, self._clock(), False, error="circuit open after repeated failures"
            )
        except _ProbeFailed as failed:
            return failed.observation
        except TimeoutError:
            return Observation(name, self._clock(), False, error="probe timed out")

    @staticmethod
    async def _probe_or_raise(prober: NodeProber, heartbeat: bool) -> Observation:
        # The breaker counts exceptions, so a failed observation travels as one.
        obs = await prober.probe(heartbeat=heartbeat)
        if not obs.reachable:
            raise _ProbeFailed(obs)
        return obs

    # -- actions

    async def execute(self, action: Action) -> ActionOutcome:
        """Carry out one action and report what happened. Never raises for node trouble."""
        timeout = self.config.timing.probe_timeout
        self.journal.append(
            "action_started", action=type(action).__name__, node=action.node, reason=action.reason
        )
        log.info(
            "action_started", action=type(action).__name__, node=action.node, reason=action.reason
        )
        if isinstance(action, Promote):
            outcome = await self._promote(action, timeout)
        elif isinstance(action, Repoint):
            result = await self._guarded(
                action.node, act.repoint, self.by_name[action.node],
                self.by_name[action.primary], connect_timeout=timeout,
            )
            outcome = _outcome(action, result)
        elif isinstance(action, Fence):
            outcome = await self._fence(action, timeout)
        elif isinstance(action, RunHook):
            outcome = await self._hook(action)
        elif isinstance(action, ConfigureSync):
            result = await self._guarded(
                action.node, set_standby_names, self.by_name[action.node], action.value,
                connect_timeout=timeout,
            )
            outcome = _outcome(action, result)
        elif isinstance(action, Rejoin):
            outcome = await self._rejoin(action)
        elif isinstance(action, Unfence):
            result = await self._guarded(
                action.node, act.unfence, self.by_name[action.node], connect_timeout=timeout
            )
            outcome = _outcome(action, result)
        elif isinstance(action, CancelPromote):
            outcome = await self._cancel_promote(action)
        else:
            outcome = await self._switchover(action)
        self.journal.append(
            "action_finished",
            action=type(action).__name__,
            node=action.node,
            status=str(outcome.status),
            detail=outcome.detail,
        )
        level = "info" if outcome.status is OutcomeStatus.SUCCEEDED else "error"
        log.log(_level(level), "action_finished", action=type(action).__name__, node=action.node,
                status=str(outcome.status), detail=outcome.detail)
        return outcome

    async def _promote(self, action: Promote, timeout: float) -> ActionOutcome:
        hooks = self.config.hooks
        if hooks.pre_promote:
            env = {
                "HACONTROL_EVENT": "pre_promote",
                "HACONTROL_NODE": action.node,
                "HACONTROL_OLD_PRIMARY": action.old_primary,
            }
            hook = await run_hook(hooks.pre_promote, env, hooks.timeout)
            self.journal.append("hook_finished", hook="pre_promote", node=action.node, ok=hook.ok,
                                returncode=hook.returncode, output=redact_text(hook.output))
            if not hook.ok:
                return ActionOutcome(action, OutcomeStatus.FAILED,
                                     f"pre_promote hook failed ({hook.returncode}); not promoted")
        if action.sync_standbys is not None:
            # Quorum mode: the candidate's first commit as primary must already wait
            # for its replicas, so its synchronous set is in place before the promote.
            prepared = await self._guarded(
                action.node, set_standby_names, self.by_name[action.node],
                action.sync_standbys, connect_timeout=timeout,
            )
            if not prepared.ok:
                return ActionOutcome(
                    action, OutcomeStatus.FAILED,
                    f"could not set its synchronous set ({prepared.detail}); not promoted",
                )
        result = await self._guarded(
            action.node,
            act.promote,
            self.by_name[action.node],
            promote=True,
            connect_timeout=timeout,
            wait_s=min(self.settings.promote_timeout_s, 60.0),
        )
        if result.ok:
            return ActionOutcome(action, OutcomeStatus.SUCCEEDED, result.detail)
        # Could not connect, or the policy never ran it: certainly nothing happened.
        certain = result.detail.startswith(("cannot connect", "not attempted"))
        status = OutcomeStatus.FAILED if certain else OutcomeStatus.UNCERTAIN
        return ActionOutcome(action, status, result.detail)

    async def _fence(self, action: Fence, timeout: float) -> ActionOutcome:
        hooks = self.config.hooks
        if action.then is not None and hooks.fence:
            # The old primary was unreachable: a failover waits on this fence, so
            # the hook (e.g. STONITH) and one SQL attempt run side by side instead
            # of the hook waiting out the SQL step's retries.
            sql, hook = await asyncio.gather(
                act.fence(self.by_name[action.node], connect_timeout=timeout),
                self._fence_hook(action),
            )
            if sql.ok or hook.ok:
                detail = f"{sql.detail}; fence hook {'ok' if hook.ok else 'failed'}"
                return ActionOutcome(action, OutcomeStatus.SUCCEEDED, detail)
            return ActionOutcome(
                action, OutcomeStatus.FAILED,
                f"{sql.detail}; fence hook failed ({hook.returncode})",
            )
        result = await self._guarded(
            action.node, act.fence, self.by_name[action.node], connect_timeout=timeout
        )
        if hooks.fence:
            # Beside the loop: the next round sees whether the node still takes writes
            # and fences it again; one fence hook per node at a time.
            key = f"fence:{action.node}"
            if key not in self._hooks:
                env = {"HACONTROL_EVENT": "fence", "HACONTROL_NODE": action.node,
                       "HACONTROL_REASON": action.reason}
                self._hook_beside_loop(key, "fence", action.node, hooks.fence, env)
            if not result.ok:
                return ActionOutcome(action, OutcomeStatus.FAILED,
                                     f"{result.detail}; the fence hook runs beside the loop")
        return _outcome(action, result)

    async def _fence_hook(self, action: Fence) -> HookResult:
        hooks = self.config.hooks
        env = {"HACONTROL_EVENT": "fence", "HACONTROL_NODE": action.node,
               "HACONTROL_REASON": action.reason}
        hook = await run_hook(hooks.fence, env, hooks.timeout)
        self.journal.append("hook_finished", hook="fence", node=action.node, ok=hook.ok,
                            returncode=hook.returncode, output=redact_text(hook.output))
        return hook

    def _record(self, kind: str, fields: dict[str, Any]) -> None:
        """Journal and log one step of a procedure."""
        self.journal.append(kind, **fields)
        failed = fields.get("ok") is False
        log.log(_level("warning" if failed else "info"), kind,
                **{k: v for k, v in fields.items() if k != "output"})

    def switchover_context(self) -> SwitchoverContext:
        """What the switchover procedure needs, from the configuration."""
        config = self.config
        return SwitchoverContext(
            specs=dict(self.by_name),
            drivers=dict(self.drivers),
            record=self._record,
            catchup_timeout=config.switchover.catchup_timeout,
            connect_timeout=config.timing.probe_timeout,
            promote_timeout=min(self.settings.promote_timeout_s, 60.0),
            rejoin_timeout=config.rejoin.timeout,
            max_lag_bytes=self.settings.max_lag_bytes,
            allow_basebackup=config.rejoin.allow_basebackup,
        )

    async def _switchover(self, action: Switchover) -> ActionOutcome:
        return await run_switchover(self.switchover_context(), action)

    def rejoin_bound(self, node: str) -> float:
        """Seconds one rejoin of ``node`` may take at most: every driver step at its own
        timeout, the base backup if allowed, and two waits for streaming."""
        driver = self.drivers.get(node) or NullDriver(node)
        rj = self.config.rejoin
        bound = _REJOIN_STEPS * driver.timeout_hint() + 2 * rj.timeout
        if rj.allow_basebackup:
            bound += float(getattr(driver, "basebackup_timeout", 3600.0))
        return bound

    async def _rejoin(self, action: Rejoin) -> ActionOutcome:
        node, primary = action.node, action.primary
        driver = self.drivers.get(node) or NullDriver(node)
        rj = self.config.rejoin
        bound = self.rejoin_bound(node)
        try:
            async with asyncio.timeout(bound):
                result = await rejoin(
                    self.by_name[node], self.by_name[primary], driver,
                    allow_basebackup=rj.allow_basebackup, timeout=rj.timeout,
                    record=self._record, connect_timeout=self.config.timing.probe_timeout,
                )
        except TimeoutError:
            # Whatever step hung was killed; never leave the node running half-rejoined.
            try:
                async with asyncio.timeout(driver.timeout_hint()):
                    stopped = await driver.stop("immediate")
                note = "stopped" if stopped.ok else f"stop failed: {stopped.detail}"
            except TimeoutError:
                note = "stop timed out"
            self._record("rejoin_finished", {"node": node, "ok": False, "method": None,
                                             "detail": f"timed out after {bound:g} s ({note})"})
            return ActionOutcome(action, OutcomeStatus.FAILED,
                                 f"rejoin of {node} did not finish within {bound:g} s ({note})")
        status = OutcomeStatus.SUCCEEDED if result.ok else OutcomeStatus.FAILED
        return ActionOutcome(action, status, result.detail)

    async def _cancel_promote(self, action: CancelPromote) -> ActionOutcome:
        """Withdraw a promote request the node may still hold: stop it, remove the
        request (it survives a restart), start it again as a replica."""
        driver = self.drivers.get(action.node) or NullDriver(action.node)
        if not driver.can(Step.STOP, Step.START, Step.DISCARD_PROMOTE):
            return ActionOutcome(action, OutcomeStatus.FAILED,
                                 f"{driver.describe()} cannot stop, discard and start: untouched")
        steps: list[str] = []
        try:
            async with asyncio.timeout(3 * driver.timeout_hint()):
                for step in (driver.stop("fast"), driver.discard_promote(), driver.start()):
                    result = await step
                    self._record("promote_cancel_step", {"node": action.node, **result.fields()})
                    steps.append(result.detail)
                    if not result.ok:
                        # Stopped but not started again is still safe: nothing can land.
                        return ActionOutcome(action, OutcomeStatus.FAILED, "; ".join(steps))
        except TimeoutError:
            steps.append("timed out")
            return ActionOutcome(action, OutcomeStatus.FAILED, "; ".join(steps))
        return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "; ".join(steps))

    async def _hook(self, action: RunHook) -> ActionOutcome:
        """Start the hook beside the loop: a slow hook must never delay probing, fencing
        or detection. Its result is journaled, and a failure reported, when it ends."""
        command = getattr(self.config.hooks, action.event, "")
        if not command:
            return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "no hook configured")
        self._hook_beside_loop(action.event, action.event, action.node, command, action.env,
                               action)
        return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "started beside the probe loop")

    def _hook_beside_loop(
        self,
        key: str,
        event: str,
        node: str,
        command: str,
        env: Mapping[str, str],
        action: RunHook | None = None,
    ) -> None:
        """Run a hook in the background. Hooks with one key run one after another, in
        the order they were asked for (a role change hook sees the changes in order)."""
        previous = self._hooks.get(key)

        async def body() -> None:
            if previous is not None and not previous.done():
                with contextlib.suppress(Exception):
                    await previous
            hook = await run_hook(command, dict(env), self.config.hooks.timeout)
            self.journal.append("hook_finished", hook=event, node=node, ok=hook.ok,
                                returncode=hook.returncode, output=redact_text(hook.output),
                                duration_s=round(hook.duration_s, 3))
            if not hook.ok and action is not None:
                failed = ActionOutcome(action, OutcomeStatus.FAILED,
                                       f"exit {hook.returncode}: {redact_text(hook.output)}")
                async with self._turn:
                    self._fold(failed)

        task = asyncio.create_task(body(), name=f"hacontrol:hook:{key}")
        self._hooks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._hooks.get(key) is done:
                del self._hooks[key]

        task.add_done_callback(forget)

    async def manage_settings(self, view: ClusterView) -> None:
        """Keep the managed server settings (receiver/sender timeouts) in place."""
        wanted = self.config.managed_settings_ms()
        if not wanted:
            return
        for spec in self.specs:
            obs = view.get(spec.name)
            prober = self.probers[spec.name]
            if obs is None or not obs.reachable or not prober.settings_ms:
                continue
            if all(prober.settings_ms.get(k) == v for k, v in wanted.items()):
                continue
            result = await self._guarded(
                spec.name, act.ensure_settings, spec, wanted, prober.settings_ms,
                connect_timeout=self.config.timing.probe_timeout,
            )
            if not result.noop:
                self.journal.append("settings_managed", node=spec.name, ok=result.ok,
                                    detail=result.detail)
                log.info("settings_managed", node=spec.name, ok=result.ok, detail=result.detail)
            if result.ok:
                # Do not re-apply every round while the reload takes effect.
                prober.settings_ms = dict(wanted)

    # -- reporting

    def _record_events(self, events: tuple[Event, ...]) -> None:
        for event in events:
            self.journal.append(
                event.kind,
                node=event.node,
                severity=str(event.severity),
                message=event.message,
                details=dict(event.details),
            )
            log.log(
                _level(_SEVERITY_LEVEL[event.severity]),
                event.kind,
                node=event.node,
                message=event.message,
                **{k: v for k, v in event.details.items() if k not in ("node", "message")},
            )

    async def close(self) -> None:
        """Close every probe connection."""
        await asyncio.gather(*(p.close() for p in self.probers.values()), return_exceptions=True)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly summary of the last round (for status output)."""
        from hacontrol.status import snapshot

        snap = snapshot(self)
        snap["rejoining"] = sorted(self.state.rejoining)
        snap["procedures"] = sorted(k for k in self.procedures if self.running(k))
        snap["drivers"] = {name: d.describe() for name, d in sorted(self.drivers.items())}
        return snap


async def set_standby_names(
    spec: NodeSpec, value: str, *, connect_timeout: float
) -> act.StepResult:
    """ALTER SYSTEM SET synchronous_standby_names = ``value`` and reload (idempotent;
    works on a replica too, where it takes effect once the node is promoted)."""
    started = time.monotonic()
    try:
        conn = await connect(spec.dsn, connect_timeout)
    except Exception as exc:
        return act.StepResult(
            False, f"cannot connect: {_error_text(exc)}", time.monotonic() - started
        )
    try:
        literal = "'" + value.replace("'", "''") + "'"
        await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = {literal}")
        await conn.execute("SELECT pg_reload_conf()")
        shown = value or "'' (asynchronous)"
        return act.StepResult(
            True, f"synchronous_standby_names = {shown}", time.monotonic() - started
        )
    except Exception as exc:
        return act.StepResult(False, _error_text(exc), time.monotonic() - started)
    finally:
        conn.terminate()


def procedure_key(action: Switchover | Rejoin) -> str:
    """The key of a background procedure: one switchover, one rejoin per node."""
    return "switchover" if isinstance(action, Switchover) else f"rejoin:{action.node}"


def _drivers(config: Config) -> dict[str, NodeDriver]:
    return config.build_drivers()


def _settings(config: Config, drivers: dict[str, NodeDriver]) -> DecisionSettings:
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


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ForeignJournalError(Exception):
    """The journal belongs to another cluster: the controller must not use it."""


class _StepFailed(Exception):
    def __init__(self, result: act.StepResult) -> None:
        super().__init__(result.detail)
        self.result = result


async def _checked(step: Callable[..., Any], *args: Any, **kw: Any) -> act.StepResult:
    # Policies count and retry exceptions, so a failed step travels as one.
    result: act.StepResult = await step(*args, **kw)
    if not result.ok:
        raise _StepFailed(result)
    return result


def _unreachable(exc: BaseException) -> bool:
    """Retry a step only when the node could not be reached: then it did nothing."""
    return isinstance(exc, _StepFailed) and exc.result.detail.startswith("cannot connect")


class _ProbeFailed(Exception):
    def __init__(self, observation: Observation) -> None:
        super().__init__(observation.error or "unreachable")
        self.observation = observation


def _outcome(action: Action, result: act.StepResult) -> ActionOutcome:
    status = OutcomeStatus.SUCCEEDED if result.ok else OutcomeStatus.FAILED
    return ActionOutcome(action, status, result.detail)


def _level(name: str) -> int:
    import logging

    return {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
            "critical": logging.CRITICAL}[name]
