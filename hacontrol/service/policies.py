"""The resilience policies around probes and actions: breakers, bulkheads, retries.

A probe or a step never raises for node trouble: :func:`guarded_probe` answers an
:class:`Observation` and :func:`guarded` a :class:`StepResult` whatever happens,
and says whether the step was attempted at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hacontrol.core.model import Observation
from hacontrol.core.settings import DecisionSettings
from hacontrol.io.probe import NodeProber
from hacontrol.io.steps import StepResult
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

# The longest a promote waits for the node to leave recovery, whatever
# promote_timeout says: the loop, the watchdog and a stop are bounded by it.
PROMOTE_WAIT_CAP_S = 60.0


def promote_wait_s(settings: DecisionSettings) -> float:
    """Seconds one promote waits for the node to become writable."""
    return min(settings.promote_timeout_s, PROMOTE_WAIT_CAP_S)


def probe_breaker(
    node: str, *, probe_interval: float, probe_timeout: float, registry: BreakerRegistry
) -> CircuitBreaker:
    """The breaker of ``node``'s probes."""
    # Opens after a run of failures, which status and metrics show. It lets one
    # trial probe through every round: a returning old primary must be seen (and
    # fenced) within a round or two, so the breaker may not hide it any longer.
    return CircuitBreaker(
        f"probe:{node}",
        failure_rate_threshold=None,
        consecutive_failures=5,
        minimum_calls=5,
        open_duration=probe_interval * 0.9,
        half_open_max_calls=1,
        half_open_max_wait=probe_timeout * 2,
        registry=registry,
    )


def probe_policy(node: str, breaker: CircuitBreaker, probe_timeout: float) -> Policy:
    """The policy of ``node``'s probes."""
    # The prober bounds itself by the probe timeout; the policy's timeout is a
    # backstop a little above it, so it never pre-empts the prober's own.
    return Policy(f"probe:{node}", breaker=breaker, timeout=probe_timeout * 1.5)


class _ProbeFailed(Exception):
    def __init__(self, observation: Observation) -> None:
        super().__init__(observation.error or "unreachable")
        self.observation = observation


async def _probe_or_raise(prober: NodeProber, heartbeat: bool) -> Observation:
    # The breaker counts exceptions, so a failed observation travels as one.
    obs = await prober.probe(heartbeat=heartbeat)
    if not obs.reachable:
        raise _ProbeFailed(obs)
    return obs


async def guarded_probe(
    policy: Policy, prober: NodeProber, *, heartbeat: bool, clock: Callable[[], float]
) -> Observation:
    """Probe one node behind its policy: one Observation, whatever happens."""
    name = prober.spec.name
    try:
        obs: Observation = await policy.call(_probe_or_raise, prober, heartbeat)
        return obs
    except CircuitOpenError:
        return Observation(name, clock(), False, error="circuit open after repeated failures")
    except _ProbeFailed as failed:
        return failed.observation
    except TimeoutError:
        return Observation(name, clock(), False, error="probe timed out")


@dataclass(frozen=True, slots=True)
class ActionPolicies:
    """The two policies of one node's actions. They share one bulkhead, so a node
    never has two actions in flight; only idempotent steps are retried, and only
    when the node could not be reached at all."""

    idempotent: Policy
    promote: Policy


def action_policies(
    node: str, *, probe_timeout: float, promote_wait: float, registry: BreakerRegistry
) -> ActionPolicies:
    """The action policies of ``node``."""
    t = probe_timeout
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
            registry=registry,
        ),
        bulkhead=slot,
        timeout=2 * t + 1.0,
    )
    promote = Policy(f"promote:{node}", bulkhead=slot, timeout=promote_wait + 2 * t + 1.0)
    return ActionPolicies(idempotent, promote)


class StepFailed(Exception):
    """A step that answered not ok, raised so that policies count and retry it."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.detail)
        self.result = result


async def _checked(step: Callable[..., Any], *args: Any, **kw: Any) -> StepResult:
    # Policies count and retry exceptions, so a failed step travels as one.
    result: StepResult = await step(*args, **kw)
    if not result.ok:
        raise StepFailed(result)
    return result


def _unreachable(exc: BaseException) -> bool:
    """Retry a step only when it certainly did nothing (it could not reach the node)."""
    # Only idempotent steps are retried, and for them "not attempted" is always "could
    # not connect"; the promote, which may also refuse before sending, is never retried.
    return isinstance(exc, StepFailed) and not exc.result.attempted


def _not_attempted(exc: BaseException) -> StepResult:
    return StepResult(False, f"not attempted: {exc}", attempted=False)


async def guarded(
    policies: ActionPolicies,
    step: Callable[..., Any],
    *args: Any,
    promote: bool = False,
    **kw: Any,
) -> StepResult:
    """Run one step behind the node's action policy; never raises for node trouble."""
    policy = policies.promote if promote else policies.idempotent
    try:
        result: StepResult = await policy.call(_checked, step, *args, **kw)
        return result
    except StepFailed as failed:
        return failed.result
    except (CircuitOpenError, BulkheadFullError) as exc:
        # Rejected before the step ran: certainly nothing happened.
        return _not_attempted(exc)
    except RetryError as exc:
        last = exc.last_error
        if isinstance(last, StepFailed):
            return last.result
        if isinstance(last, CircuitOpenError | BulkheadFullError):
            return _not_attempted(exc)
        return StepResult(False, f"timed out: {exc}")
    except TimeoutError as exc:
        # An attempt cut off mid-way (AttemptTimeoutError is one): it may have
        # taken effect, e.g. pg_promote already sent. Never "not attempted".
        return StepResult(False, f"timed out: {exc}")
    except ResilienceError as exc:
        return StepResult(False, f"failed: {exc}")
