"""This controller among the controllers of one scope in etcd: campaign, keepalive,
the published state, the gate every side effect passes (``[dcs]``, docs/ha.md).

A task beside the probe loop. As a standby it reads the scope's keys every poll
(the leader, its published state, the controllers) and campaigns when the leader
key is free; as the leader it renews its lease every ttl/3. What etcd's answers
mean is :mod:`hacontrol.core.leadership`'s; this module only carries them out and
says what changed, once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from hacontrol.config.dcs import DcsConfig
from hacontrol.core.leadership import (
    ControllerRole,
    DcsAnswer,
    Leadership,
    after_campaign,
    after_keepalive,
    expire,
    may_act,
    standby,
)
from hacontrol.core.model import ClusterView, Witnesses
from hacontrol.io.coordinator import Coordinator
from hacontrol.io.etcd import EtcdClient
from hacontrol.io.journal import Journal

__all__ = ["LeaderLoop", "Member"]

log = structlog.get_logger("hacontrol.leader")

STATE_KEY = "state"
INTENT_KEY = "intent"
TERM_KEY = "term"
MEMBERS = "members/"
# A standby reads the scope this often: a resigned leader is replaced within it.
MIN_POLL_S, MAX_POLL_S = 0.1, 1.0


Member = dict[str, Any]


class LeaderLoop:
    """Leadership of this controller, kept current by :meth:`run`."""

    def __init__(
        self,
        dcs: DcsConfig,
        journal: Journal,
        *,
        probe_interval_s: float,
        action_bound_s: float,
        api_listen: str | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dcs = dcs
        self.journal = journal
        self.name = dcs.name
        self.api_listen = api_listen
        self._clock = clock
        self._wall = wall
        client = EtcdClient(
            dcs.endpoints, timeout_s=dcs.request_timeout_s(), username=dcs.username,
            password=dcs.password.get_secret_value(), cacert=dcs.cacert, cert=dcs.cert,
            key=dcs.key,
        )
        self.coordinator = Coordinator(client, dcs.prefix(), dcs.name, dcs.ttl, clock)
        self.poll_s = min(MAX_POLL_S, max(MIN_POLL_S, probe_interval_s))
        # An old term's last action may still run this long past its deadline.
        self.action_bound_s = action_bound_s
        self.state = Leadership()
        # The scope's keys as last read (standby) or written (leader).
        self.values: dict[str, bytes] = {}
        # A term won but not yet taken up by the controller (it loads the state first).
        self.new_term: int | None = None
        self._settle_until = 0.0
        self._member_at = -1e9
        self._dcs_said: bool | None = None
        self.detail = "not started"
        # Node -> wall time of this controller's first failed probe of its current
        # run of failures: published, so the leader has a second vantage point.
        self.failing_since: dict[str, float] = {}

    # -- what the controller asks

    def leading(self) -> bool:
        """True while this controller holds a term, deadline not passed."""
        return may_act(self.state, self._clock())

    def may_act(self) -> bool:
        """True while a side effect is allowed now: leading and settled."""
        return self.leading() and self._clock() >= self._settle_until

    def leader_name(self) -> str | None:
        """Who leads, as last known (None: nobody, or not known)."""
        return self.state.leader

    def leader_api(self) -> str | None:
        """The leader's API address, as it published it."""
        leader = self.state.leader
        member = self.members().get(leader) if leader else None
        api = member.get("api") if member else None
        return str(api) if api else None

    def members(self) -> dict[str, Member]:
        """Every controller of the scope as it last published itself."""
        found: dict[str, Member] = {}
        for key, raw in self.values.items():
            if key.startswith(MEMBERS):
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    found[key[len(MEMBERS):]] = data
        return found

    def observe(self, view: ClusterView) -> None:
        """Note which nodes this controller's own probes fail, and since when."""
        now = self._wall()
        for name, obs in view.observations.items():
            if obs.reachable:
                self.failing_since.pop(name, None)
            else:
                self.failing_since.setdefault(name, now)

    def witnesses(self) -> Witnesses:
        """What the other controllers report, for the decision core: a report older
        than two publication intervals (a stopped or cut-off controller) counts
        as no report."""
        now = self._wall()
        fresh_s = 2 * self.dcs.keepalive_s() + self.poll_s
        members = self.members()
        failing: dict[str, list[float]] = {}
        for name, member in members.items():
            wall = member.get("wall")
            if name == self.name or not isinstance(wall, int | float) or now - wall > fresh_s:
                continue
            for node, since in (member.get("failing") or {}).items():
                if isinstance(since, int | float):
                    failing.setdefault(str(node), []).append(max(0.0, float(wall) - since))
        total = len(members | {self.name: {}})
        return Witnesses(total, {n: tuple(v) for n, v in failing.items()})

    def published_state(self) -> Mapping[str, Any] | None:
        """The leader's published snapshot of the facts (None: none yet)."""
        return _loads(self.values.get(STATE_KEY))

    async def commit(self, snapshot: Mapping[str, Any], intent: Mapping[str, Any] | None) -> bool:
        """Write the facts (and the intent of the actions about to run) fenced by this
        term's epoch. False: not written, so nothing may be carried out."""
        epoch = self.state.epoch
        if epoch is None or not self.may_act():
            return False
        puts = {STATE_KEY: _json(snapshot)}
        if intent is not None:
            puts[INTENT_KEY] = _json({**intent, "epoch": epoch, "by": self.name,
                                      "wall": self._wall()})
        answer, detail = await self.coordinator.fenced_write(epoch, puts)
        if answer is DcsAnswer.OK:
            self.values.update(puts)
            return True
        if answer is DcsAnswer.LOST:
            self._lose(detail)
        else:
            self._dcs(False, detail)
        return False

    # -- the task

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign and keep the term until ``stop``; then resign."""
        try:
            while not stop.is_set():
                self._check_deadline()
                if self.state.role is ControllerRole.LEADER:
                    await self._keepalive()
                    pause = self.dcs.keepalive_s()
                    # Wake at the deadline too: the step down is said when it happens.
                    if self.state.deadline is not None:
                        pause = min(pause, max(0.0, self.state.deadline - self._clock()))
                else:
                    await self._follow()
                    pause = self.poll_s
                await self._publish_member()
                try:
                    async with asyncio.timeout(pause):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            await self.resign()
            await self.coordinator.close()

    async def _follow(self) -> None:
        answer, values, detail = await self.coordinator.read()
        if answer is not DcsAnswer.OK:
            self.state = replace(self.state, dcs_up=False)
            self._dcs(False, detail)
            return
        self._dcs(True, "")
        self.values = values
        holder = values.get("leader")
        if holder is not None:
            self.state = standby(holder.decode("utf-8", "replace"), dcs_up=True)
            return
        campaign = await self.coordinator.campaign()
        sent = campaign.renewed_at if campaign.renewed_at is not None else self._clock()
        self.state = after_campaign(
            self.state, campaign.answer, me=self.name, epoch=campaign.epoch,
            leader=campaign.leader, sent_at=sent, ttl_s=self.dcs.ttl,
            margin_s=self.dcs.margin_s(),
        )
        if self.state.role is ControllerRole.LEADER:
            await self._gained()

    async def _gained(self) -> None:
        epoch = self.state.epoch
        _, values, _ = await self.coordinator.read()
        self.values = values or self.values
        term = _loads(self.values.get(TERM_KEY))
        clean = bool(term.get("clean")) if term else True
        # A term that ended without resigning may have an action still running on a
        # node for one action's bound past its deadline, which is at least the
        # margin before its lease ran out: no side effect until then.
        settle = 0.0 if clean else max(0.0, self.action_bound_s - self.dcs.margin_s())
        self._settle_until = self._clock() + settle
        self.new_term = epoch
        previous = term.get("by") if term else None
        if epoch is not None:
            await self.coordinator.fenced_write(
                epoch, {TERM_KEY: _json({"epoch": epoch, "by": self.name, "clean": False})}
            )
        self.journal.append("leadership_gained", epoch=epoch, previous_leader=previous,
                            previous_clean=clean, settle_s=round(settle, 3))
        log.warning("leadership_gained", epoch=epoch, previous_leader=previous,
                    settle_s=round(settle, 3))

    async def _keepalive(self) -> None:
        epoch = self.state.epoch
        assert epoch is not None
        sent = self._clock()
        answer, detail = await self.coordinator.keepalive(epoch)
        before = self.state
        self.state = after_keepalive(self.state, answer, sent_at=sent, ttl_s=self.dcs.ttl,
                                     margin_s=self.dcs.margin_s())
        if answer is DcsAnswer.LOST:
            self._said_lost(before, detail)
            return
        self._dcs(answer is DcsAnswer.OK, detail)
        self._check_deadline()
        if answer is DcsAnswer.OK:
            # The other controllers' entries, for status (the leader's own facts are
            # what it wrote).
            read, values, _ = await self.coordinator.read()
            if read is DcsAnswer.OK:
                self.values.update({k: v for k, v in values.items() if k.startswith(MEMBERS)})

    def _check_deadline(self) -> None:
        before = self.state
        expired = expire(before, self._clock())
        if expired.role is not before.role:
            self.state = expired
            self._said_lost(before, "the lease could not be renewed before its deadline "
                                    f"(etcd: {self.detail})")

    def _lose(self, detail: str) -> None:
        before = self.state
        self.state = standby(None, dcs_up=True)
        self._said_lost(before, detail)

    def _said_lost(self, before: Leadership, detail: str) -> None:
        self.new_term = None
        self.journal.append("leadership_lost", epoch=before.epoch, detail=detail)
        log.critical("leadership_lost", epoch=before.epoch, detail=detail)

    def _dcs(self, up: bool, detail: str) -> None:
        self.detail = detail or ("etcd answers" if up else "etcd does not answer")
        if self._dcs_said is up:
            return
        if self._dcs_said is not None or not up:
            kind = "dcs_reachable" if up else "dcs_unreachable"
            self.journal.append(kind, detail=detail)
            (log.info if up else log.error)(kind, detail=detail)
        self._dcs_said = up

    async def _publish_member(self) -> None:
        now = self._clock()
        if now - self._member_at < self.dcs.keepalive_s():
            return
        self._member_at = now
        member = {
            "name": self.name, "role": self.state.role.value, "epoch": self.state.epoch,
            "api": self.api_listen, "host": socket.gethostname(), "wall": self._wall(),
            "failing": dict(self.failing_since),
        }
        # Unfenced and leaseless: a stopped controller's entry stays, with its age.
        answer, detail = await self.coordinator.publish(MEMBERS + self.name, _json(member))
        if answer is DcsAnswer.OK:
            self.values[MEMBERS + self.name] = _json(member)
        else:
            self._dcs(False, detail)

    async def resign(self) -> None:
        """Give the term up (a clean stop): a standby takes over on its next poll."""
        if self.state.role is not ControllerRole.LEADER:
            return
        epoch = self.state.epoch
        if epoch is not None and self.leading():
            await self.coordinator.fenced_write(
                epoch, {TERM_KEY: _json({"epoch": epoch, "by": self.name, "clean": True})}
            )
        answer, detail = await self.coordinator.resign(epoch)
        self.state = standby(None, dcs_up=answer is DcsAnswer.OK)
        self.journal.append("leadership_resigned", epoch=epoch, detail=detail)
        log.warning("leadership_resigned", epoch=epoch, detail=detail)


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, default=str, separators=(",", ":")).encode()


def _loads(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

