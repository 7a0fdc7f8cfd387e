"""The leader key of one scope in etcd: campaign, keepalive, fenced writes, resign.

Keys live under ``/hacontrol/<scope>/``. ``leader`` holds the leading controller's
name and is attached to its lease; its create revision is the term's *epoch*. A
fenced write is a transaction that commits only while ``leader``'s create revision
is still that epoch, so a controller whose term ended (its lease expired while it
was stopped, cut off or slow) cannot write, whatever it believes.

Each call returns a :class:`~hacontrol.core.leadership.DcsAnswer` and a detail for
people; the decision of what that means for this controller is
:mod:`hacontrol.core.leadership`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hacontrol.core.leadership import DcsAnswer
from hacontrol.io.etcd import (
    EtcdClient,
    EtcdRefused,
    EtcdUnavailable,
    KeyValue,
    create_revision_is,
    delete_op,
    put_op,
    range_op,
)

__all__ = ["Campaign", "Coordinator"]


@dataclass(frozen=True, slots=True)
class Campaign:
    """What a campaign found: this controller's term (``epoch``) or the leader's name."""

    answer: DcsAnswer
    leader: str | None = None
    epoch: int | None = None
    detail: str = ""
    # With an epoch: when (this process's monotonic clock) the request that last
    # granted or renewed the term's lease was sent; the lease runs at most ttl from it.
    renewed_at: float | None = None


class Coordinator:
    """This controller (``name``) among the controllers of ``prefix`` in etcd."""

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        name: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.name = name
        self.ttl_s = ttl_s
        self.leader_key = f"{prefix}leader"
        self._clock = clock
        self._lease: int | None = None
        # When the request that granted or last renewed the lease was sent.
        self._lease_sent_at = 0.0

    async def campaign(self) -> Campaign:
        """Take the leader key if nobody holds it; say who does otherwise.

        A standby holds no lease (one left unrenewed expires, and a put naming an
        expired lease fails even in the branch not taken): it reads the key, and
        only a free key is worth a lease. A campaign whose answer was lost may
        still have landed: the next one finds the key on this controller's lease
        and takes the term up.
        """
        try:
            held = await self.client.get(self.leader_key)
            if held is None:
                if self._lease is None:
                    sent = self._clock()
                    self._lease, _ = await self.client.grant(self.ttl_s)
                    self._lease_sent_at = sent
                result = await self.client.txn(
                    [create_revision_is(self.leader_key, 0)],
                    [put_op(self.leader_key, self.name, self._lease), range_op(self.leader_key)],
                    [range_op(self.leader_key)],
                )
                kvs = result.ranges[-1] if result.ranges else ()
                held = kvs[0] if kvs else None
                if held is not None and held.lease != self._lease:
                    self._lease = None  # another won: the unused lease expires alone
        except EtcdUnavailable as exc:
            return Campaign(DcsAnswer.UNKNOWN, detail=str(exc))
        except EtcdRefused as exc:
            if exc.not_found:
                self._lease = None  # expired before it was used: grant another
            return Campaign(DcsAnswer.UNKNOWN, detail=str(exc))
        if held is None:
            return Campaign(DcsAnswer.OK, detail="the leader key vanished during the campaign")
        holder = held.value.decode("utf-8", "replace")
        if self._lease is not None and held.lease == self._lease:
            return Campaign(DcsAnswer.OK, holder, held.create_revision,
                            renewed_at=self._lease_sent_at)
        return Campaign(DcsAnswer.OK, holder)

    async def keepalive(self, epoch: int) -> tuple[DcsAnswer, str]:
        """Renew the lease and check the leader key is still this term's."""
        lease = self._lease
        if lease is None:
            return DcsAnswer.LOST, "no lease"
        try:
            sent = self._clock()
            ttl = await self.client.keepalive(lease)
            if ttl > 0:
                self._lease_sent_at = sent
            if ttl <= 0:
                self._lease = None
                return DcsAnswer.LOST, "the lease expired"
            result = await self.client.txn(
                [create_revision_is(self.leader_key, epoch)], [], [range_op(self.leader_key)]
            )
        except EtcdUnavailable as exc:
            return DcsAnswer.UNKNOWN, str(exc)
        except EtcdRefused as exc:
            if exc.not_found:
                self._lease = None
                return DcsAnswer.LOST, "the lease expired"
            return DcsAnswer.UNKNOWN, str(exc)
        if not result.succeeded:
            return DcsAnswer.LOST, _holder_text(result.ranges)
        return DcsAnswer.OK, f"ttl {ttl} s"

    async def fenced_write(
        self,
        epoch: int,
        puts: Mapping[str, bytes],
        deletes: tuple[str, ...] = (),
    ) -> tuple[DcsAnswer, str]:
        """Write ``puts`` (keys relative to the prefix) and delete ``deletes``, all or
        nothing, only while ``epoch`` still owns the leader key."""
        ops = [put_op(self.prefix + k, v) for k, v in puts.items()]
        ops += [delete_op(self.prefix + k) for k in deletes]
        try:
            result = await self.client.txn(
                [create_revision_is(self.leader_key, epoch)], ops, [range_op(self.leader_key)]
            )
        except EtcdUnavailable as exc:
            return DcsAnswer.UNKNOWN, str(exc)
        except EtcdRefused as exc:
            return DcsAnswer.UNKNOWN, str(exc)
        if not result.succeeded:
            return DcsAnswer.LOST, _holder_text(result.ranges)
        return DcsAnswer.OK, f"revision {result.revision}"

    async def publish(self, key: str, value: bytes) -> tuple[DcsAnswer, str]:
        """Write ``key`` (relative to the prefix) unfenced: what any controller may say
        of itself, never a decision."""
        try:
            await self.client.txn([], [put_op(self.prefix + key, value)], [])
        except (EtcdUnavailable, EtcdRefused) as exc:
            return DcsAnswer.UNKNOWN, str(exc)
        return DcsAnswer.OK, ""

    async def read(self) -> tuple[DcsAnswer, dict[str, bytes], str]:
        """Every key of the scope (relative names), as one consistent read."""
        try:
            kvs = await self.client.get_prefix(self.prefix)
        except (EtcdUnavailable, EtcdRefused) as exc:
            return DcsAnswer.UNKNOWN, {}, str(exc)
        size = len(self.prefix)
        return DcsAnswer.OK, {kv.key.decode()[size:]: kv.value for kv in kvs}, ""

    async def resign(self, epoch: int | None) -> tuple[DcsAnswer, str]:
        """Give the term up now (a standby takes over in one poll) and end the lease."""
        lease, self._lease = self._lease, None
        try:
            if epoch is not None:
                await self.client.txn(
                    [create_revision_is(self.leader_key, epoch)], [delete_op(self.leader_key)], []
                )
            if lease is not None:
                await self.client.revoke(lease)
        except (EtcdUnavailable, EtcdRefused) as exc:
            return DcsAnswer.UNKNOWN, str(exc)
        return DcsAnswer.OK, "resigned"

    async def close(self) -> None:
        """Close the client's connections (the lease is left to expire)."""
        await self.client.close()


def _holder_text(ranges: tuple[tuple[KeyValue, ...], ...]) -> str:
    held = ranges[-1] if ranges else ()
    if not held:
        return "the leader key is gone"
    kv = held[0]
    return f"the leader key is held by {kv.value.decode('utf-8', 'replace')} " \
        f"(epoch {kv.create_revision})"
