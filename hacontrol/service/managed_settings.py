"""The managed server settings (receiver/sender timeouts), kept in place on every node.

Runs beside the loop, every node at once: a node that hangs on connect (frozen,
half-open) would otherwise hold up the next probe round, and with it failure
detection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from hacontrol.core.model import ClusterView, NodeSpec
from hacontrol.io import steps as act
from hacontrol.io.probe import NodeProber
from hacontrol.service.executors import ExecutionContext

__all__ = ["manage_settings"]

log = structlog.get_logger("hacontrol")


async def manage_settings(
    ctx: ExecutionContext,
    specs: tuple[NodeSpec, ...],
    view: ClusterView,
    probers: Mapping[str, NodeProber],
    *,
    timeout: float,
) -> None:
    """Put the settings ``ctx``'s configuration manages in place where a node's last
    probe saw them differ."""
    wanted = ctx.config.managed_settings_ms()
    if wanted:
        await asyncio.gather(*(
            _manage_node(ctx, spec, view, probers, wanted, timeout)
            for spec in specs
        ))


async def _manage_node(
    ctx: ExecutionContext,
    spec: NodeSpec,
    view: ClusterView,
    probers: Mapping[str, NodeProber],
    wanted: dict[str, int],
    timeout: float,
) -> None:
    obs = view.get(spec.name)
    prober = probers.get(spec.name)
    if obs is None or not obs.reachable or prober is None or not prober.settings_ms:
        return
    if all(prober.settings_ms.get(k) == v for k, v in wanted.items()):
        return
    result = await ctx.guarded(
        spec.name, act.ensure_settings, spec, wanted, prober.settings_ms,
        connect_timeout=timeout,
    )
    if not result.noop:
        ctx.journal.append("settings_managed", node=spec.name, ok=result.ok, detail=result.detail)
        log.info("settings_managed", node=spec.name, ok=result.ok, detail=result.detail)
    if result.ok:
        # Do not re-apply every round while the reload takes effect.
        prober.settings_ms = dict(wanted)
