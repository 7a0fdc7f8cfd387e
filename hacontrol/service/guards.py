"""Per node: its prober and the resilience that guards its probes and actions.

Breakers and action policies outlive a reload that changes the node's DSN (their
history is the node's, not the connection's); the prober is rebuilt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hacontrol.config.sections import TimingConfig
from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.io.probe import NodeProber
from hacontrol.resilience import BreakerRegistry, CircuitBreaker, Policy
from hacontrol.service.policies import (
    ActionPolicies,
    action_policies,
    guarded_probe,
    probe_breaker,
    probe_policy,
)
from hacontrol.service.snapshot import NodeResilience, node_resilience

__all__ = ["NodeGuards"]


class NodeGuards:
    """The probers, probe breakers and policies, and action policies of the nodes."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.registry = BreakerRegistry()
        self.probers: dict[str, NodeProber] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.probe_policies: dict[str, Policy] = {}
        self.action_policies: dict[str, ActionPolicies] = {}

    def add(self, spec: NodeSpec, timing: TimingConfig, *, promote_wait: float) -> None:
        """A prober for ``spec``, and its breakers and policies unless it has them."""
        self.probers[spec.name] = NodeProber(spec, timing.probe_timeout, self._clock)
        if spec.name not in self.breakers:
            self.breakers[spec.name] = probe_breaker(
                spec.name, probe_interval=timing.probe_interval,
                probe_timeout=timing.probe_timeout, registry=self.registry,
            )
        if spec.name not in self.action_policies:
            self.action_policies[spec.name] = action_policies(
                spec.name, probe_timeout=timing.probe_timeout,
                promote_wait=promote_wait, registry=self.registry,
            )
        self.probe_policies[spec.name] = probe_policy(
            spec.name, self.breakers[spec.name], timing.probe_timeout
        )

    async def remove(self, name: str) -> None:
        """Forget node ``name``: its connection closed, its breakers unregistered."""
        await self.probers.pop(name).close()
        self.breakers.pop(name)
        self.probe_policies.pop(name)
        self.registry.unregister(f"probe:{name}")
        self.registry.unregister(f"act:{name}")
        self.action_policies.pop(name)

    async def probe_round(
        self, specs: tuple[NodeSpec, ...], *, heartbeat: str | None
    ) -> ClusterView:
        """Probe every node in parallel; one Observation each, whatever happens.
        ``heartbeat``: the node whose probe also writes the heartbeat."""
        names = [s.name for s in specs]
        results = await asyncio.gather(*(
            guarded_probe(self.probe_policies[name], self.probers[name],
                          heartbeat=name == heartbeat, clock=self._clock)
            for name in names
        ))
        return ClusterView(at=self._clock(), observations=dict(zip(names, results, strict=True)))

    def resilience(self, name: str) -> NodeResilience:
        """Node ``name``'s probe breaker and action bulkhead, for status."""
        policies = self.action_policies.get(name)
        bulkhead = policies.idempotent.bulkhead if policies is not None else None
        return node_resilience(self.breakers[name].stats(),
                               bulkhead.stats() if bulkhead is not None else None)

    async def close(self) -> None:
        """Close every probe connection."""
        await asyncio.gather(*(p.close() for p in self.probers.values()), return_exceptions=True)

