"""Stay passive while another controller is active on the same cluster (no ``[dcs]``).

Before its first round the controller takes the cluster's advisory lock on every
node it can reach (:class:`~hacontrol.io.claim.ClusterClaim`). Found held by
another session, it releases what it took, says loudly who holds it, and tries
again until the other is gone: two controllers acting at once promoted twice and
ran two pg_rewind on one data directory. While it runs, each round takes the lock
again, in the background, on the nodes where its session ended (a restart, a
fence ending sessions); one found held by another is reported, never fought over.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable

import structlog

from hacontrol.core.model import NodeSpec
from hacontrol.io.claim import ClusterClaim, Holder
from hacontrol.io.journal import Journal

__all__ = ["ExclusiveGate"]

log = structlog.get_logger("hacontrol.controller")

# How often a passive controller looks again, and says again why it waits.
RETRY_S = 1.0
REPEAT_S = 30.0


class ExclusiveGate:
    """The lock sessions of the one active controller."""

    def __init__(
        self, specs: Iterable[NodeSpec], journal: Journal, *, timeout: float, name: str
    ) -> None:
        self.claim = ClusterClaim(specs, timeout=timeout, name=name)
        self.journal = journal
        self._keeping: asyncio.Task[None] | None = None
        self._reported: frozenset[tuple[str, int]] = frozenset()
        self.holders: tuple[Holder, ...] = ()

    async def wait_active(self, stop: asyncio.Event) -> bool:
        """Take the lock on the cluster; False if ``stop`` was set first."""
        said_at: float | None = None
        while not stop.is_set():
            holders = await self.claim.claim()
            # No node reachable: nothing to act on, nothing to conflict over yet; the
            # rounds take the lock as the nodes come back (keep).
            if not holders:
                if said_at is not None:
                    self.journal.append("controller_active", nodes=sorted(self.claim.held()))
                    log.warning("controller_active", nodes=sorted(self.claim.held()),
                                message="the other controller is gone: this one acts now")
                self.holders = ()
                return True
            await self.claim.release()
            self.holders = tuple(holders)
            now = time.monotonic()
            if said_at is None or now - said_at >= REPEAT_S:
                self._say_passive(holders, first=said_at is None)
                said_at = now
            # Jitter: two controllers started together must not retry in step.
            try:
                async with asyncio.timeout(RETRY_S * random.uniform(0.5, 1.5)):
                    await stop.wait()
            except TimeoutError:
                pass
        return False

    def _say_passive(self, holders: list[Holder], *, first: bool) -> None:
        who = "; ".join(h.describe() for h in holders)
        message = (f"another controller is active on this cluster: {who}; this one "
                   "stays passive (no action) until it stops. Stop one of them, or "
                   "run several with [dcs] (docs/ha.md)")
        if first:
            self.journal.append("controller_passive", message=message,
                                holders=[h.describe() for h in holders])
        log.critical("controller_passive", message=message)

    def keep(self) -> None:
        """Take the lock again where it was lost, in the background (not in the round)."""
        if self._keeping is not None and not self._keeping.done():
            return
        if self.claim.held() == frozenset(self.claim.specs):
            return
        self._keeping = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        holders = await self.claim.claim()
        seen = frozenset((h.node, h.pid) for h in holders)
        for h in holders:
            if (h.node, h.pid) not in self._reported:
                message = (f"another controller holds the cluster's lock on {h.node}: "
                           f"{h.describe()}; two controllers may act on one cluster: stop "
                           "one of them")
                self.journal.append("controller_conflict", node=h.node, message=message)
                log.critical("controller_conflict", node=h.node, message=message)
        self._reported = seen
        self.holders = tuple(holders)

    async def set_specs(self, specs: Iterable[NodeSpec]) -> None:
        """Follow a reload's nodes."""
        await self.claim.set_specs(specs)

    async def close(self) -> None:
        """Stop keeping and give the lock up."""
        if self._keeping is not None:
            self._keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeping
        await self.claim.release()
