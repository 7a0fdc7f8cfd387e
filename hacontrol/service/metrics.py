"""Prometheus metrics for the controller (``GET /metrics``).

One :class:`Metrics` per controller, with its own registry (never the
process-global one, so tests and several controllers in one process do not
collide). The controller calls the recording methods from its loop; the API
serves :meth:`Metrics.render`. Every metric is prefixed ``hacontrol_``.

Where the controller records what::

    after each probe of a node      metrics.probe(name, obs.latency_s, obs.reachable, kind)
    after each round, per node      metrics.node(name, role, timeline, lag_bytes, replay_lag_s,
                                                 reachable, fenced, maintenance, wal_position,
                                                 replay_position)
    after each round                metrics.cluster(paused, blocked_reason)
    after each round, per node      metrics.breaker(name, str(breaker.state))
    after each round                metrics.loop(result.duration_s)
    when a failover completes       metrics.failover(seconds from detection to promoted)
    when a switchover completes     metrics.switchover(seconds)
    when a node leaves the config   metrics.forget(name)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from hacontrol import __version__

# The *_created series double every counter and histogram and say nothing an
# operator needs (the process start time is in process metrics elsewhere).
disable_created_metrics()  # type: ignore[no-untyped-call]

ROLES = ("primary", "replica", "unknown")
BREAKER_STATES = ("closed", "half_open", "open")
# A probe takes ~1 ms on loopback and up to probe_timeout (1 s default) when a
# node hangs: fine steps from 1 ms to 100 ms, coarse ones up to 10 s.
PROBE_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# A round is one probe round plus, rarely, actions (a promotion: seconds).
LOOP_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
_KIND_RE = re.compile(r"[^a-z0-9_]+")


def _label(value: str, fallback: str) -> str:
    """A bounded, Prometheus-friendly label value (error kinds come from code, but
    an unexpected one must not create an unbounded series)."""
    cleaned = _KIND_RE.sub("_", value.strip().lower()).strip("_")[:40]
    return cleaned or fallback


class Metrics:
    """The controller's metrics, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.probe_seconds = Histogram(
            "hacontrol_probe_duration_seconds", "Duration of one probe of one node.",
            ["node"], buckets=PROBE_BUCKETS, registry=r,
        )
        self.probe_errors = Counter(
            "hacontrol_probe_errors_total", "Failed probes, by node and kind of error.",
            ["node", "kind"], registry=r,
        )
        self.role = Gauge(
            "hacontrol_node_role",
            "1 for the role the node was last seen in (primary, replica, unknown), else 0.",
            ["node", "role"], registry=r,
        )
        self.timeline = Gauge(
            "hacontrol_node_timeline", "Timeline the node is on.", ["node"], registry=r,
        )
        self.lag_bytes = Gauge(
            "hacontrol_node_lag_bytes",
            "Bytes of WAL a replica is behind the primary.", ["node"], registry=r,
        )
        self.replay_lag = Gauge(
            "hacontrol_node_replay_lag_seconds",
            "Seconds since the last transaction a replica replayed was committed.",
            ["node"], registry=r,
        )
        self.reachable = Gauge(
            "hacontrol_node_reachable", "1 if the last probe reached the node.", ["node"],
            registry=r,
        )
        self.fenced = Gauge(
            "hacontrol_node_fenced", "1 if the node is fenced (needs rejoin).", ["node"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "hacontrol_breaker_state",
            "1 for the state the node's probe circuit breaker is in, else 0.",
            ["node", "state"], registry=r,
        )
        self.failovers = Counter(
            "hacontrol_failovers_total", "Completed failovers.", registry=r,
        )
        self.switchovers = Counter(
            "hacontrol_switchovers_total", "Completed switchovers.", registry=r,
        )
        # Created by the first failover (switchover): before it there is no duration,
        # and a 0.0 would read as a very fast one.
        self.last_failover: Gauge | None = None
        self.leader: Gauge | None = None
        self.dcs_up: Gauge | None = None
        self.leader_epoch: Gauge | None = None
        self.last_switchover: Gauge | None = None
        self.maintenance = Gauge(
            "hacontrol_node_maintenance", "1 if the node is in maintenance.", ["node"],
            registry=r,
        )
        self.wal_position = Gauge(
            "hacontrol_node_wal_position_bytes",
            "The node's WAL position as a byte offset: current LSN on a primary, received"
            " (or replayed) LSN on a replica.",
            ["node"], registry=r,
        )
        self.replay_position = Gauge(
            "hacontrol_node_replay_position_bytes",
            "A replica's replayed LSN as a byte offset.", ["node"], registry=r,
        )
        self.slot_retained = Gauge(
            "hacontrol_slot_retained_bytes",
            "WAL a node keeps for one replication slot (restart LSN to the node's position).",
            ["node", "slot", "kind"], registry=r,
        )
        self.slot_active = Gauge(
            "hacontrol_slot_active", "1 while a consumer streams from the slot.",
            ["node", "slot", "kind"], registry=r,
        )
        self._slots: dict[str, set[tuple[str, str]]] = {}
        self.paused = Gauge(
            "hacontrol_paused", "1 while the controller is paused (observe only).", registry=r,
        )
        self.failover_blocked = Gauge(
            "hacontrol_failover_blocked",
            "1 while a needed failover is held back, labelled with why (see /status for the"
            " message and the way out).",
            ["reason"], registry=r,
        )
        self.info = Info("hacontrol", "The controller's version.", registry=r)
        self.info.info({"version": __version__})
        self._blocked_reason: str | None = None
        self.loop_seconds = Histogram(
            "hacontrol_loop_duration_seconds", "Duration of one controller round.",
            buckets=LOOP_BUCKETS, registry=r,
        )
        # Label values in use, so that forget() can remove them.
        self._breaker_states: dict[str, set[str]] = {}
        self._error_kinds: dict[str, set[str]] = {}

    # -- recording

    def probe(
        self, node: str, latency_s: float | None, ok: bool, error_kind: str | None = None
    ) -> None:
        """One probe of ``node``: its duration (when known) and, if it failed, why."""
        if latency_s is not None and latency_s >= 0:
            self.probe_seconds.labels(node).observe(latency_s)
        if not ok:
            kind = _label(error_kind or "", "error")
            self._error_kinds.setdefault(node, set()).add(kind)
            self.probe_errors.labels(node, kind).inc()

    def node(
        self,
        node: str,
        role: str,
        timeline: int | None,
        lag_bytes: int | None,
        replay_lag_s: float | None,
        reachable: bool,
        fenced: bool,
        maintenance: bool = False,
        wal_position: int | None = None,
        replay_position: int | None = None,
    ) -> None:
        """What the last round saw of ``node``. None removes a series (e.g. no lag on
        a primary) rather than exporting a made-up zero."""
        current = role if role in ROLES else "unknown"
        for name in ROLES:
            self.role.labels(node, name).set(1 if name == current else 0)
        self._set(self.timeline, node, timeline)
        self._set(self.lag_bytes, node, lag_bytes)
        self._set(self.replay_lag, node, replay_lag_s)
        self.reachable.labels(node).set(1 if reachable else 0)
        self.fenced.labels(node).set(1 if fenced else 0)
        self.maintenance.labels(node).set(1 if maintenance else 0)
        self._set(self.wal_position, node, wal_position)
        self._set(self.replay_position, node, replay_position)

    def slots(self, node: str, slots: Iterable[tuple[str, str, bool, int | None]]) -> None:
        """The replication slots of ``node`` as (name, kind, active, retained bytes);
        a slot gone since the last call loses its series."""
        seen: set[tuple[str, str]] = set()
        for name, kind, active, retained in slots:
            seen.add((name, kind))
            self.slot_active.labels(node, name, kind).set(1 if active else 0)
            if retained is None:
                self._remove(self.slot_retained, node, name, kind)
            else:
                self.slot_retained.labels(node, name, kind).set(retained)
        for name, kind in self._slots.get(node, set()) - seen:
            self._remove(self.slot_active, node, name, kind)
            self._remove(self.slot_retained, node, name, kind)
        self._slots[node] = seen

    def cluster(self, paused: bool, blocked_reason: str | None) -> None:
        """Whether the controller is paused, and why a needed failover is held back
        (None: none is)."""
        self.paused.set(1 if paused else 0)
        if self._blocked_reason is not None and self._blocked_reason != blocked_reason:
            self._remove(self.failover_blocked, self._blocked_reason)
        if blocked_reason is not None:
            self.failover_blocked.labels(_label(blocked_reason, "unknown")).set(1)
        self._blocked_reason = (
            _label(blocked_reason, "unknown") if blocked_reason is not None else None
        )

    def breaker(self, node: str, state: str) -> None:
        """The state of ``node``'s probe circuit breaker (closed, half_open, open)."""
        current = _label(state, "closed")
        states = self._breaker_states.setdefault(node, set(BREAKER_STATES))
        states.add(current)
        for name in states:
            self.breaker_state.labels(node, name).set(1 if name == current else 0)

    def failover(self, duration_s: float) -> None:
        """A failover completed in ``duration_s`` seconds."""
        self.failovers.inc()
        if self.last_failover is None:
            self.last_failover = Gauge(
                "hacontrol_last_failover_duration_seconds",
                "Duration of the last failover, from detection to a writable new primary.",
                registry=self.registry,
            )
        self.last_failover.set(duration_s)

    def switchover(self, duration_s: float) -> None:
        """A switchover completed in ``duration_s`` seconds."""
        self.switchovers.inc()
        if self.last_switchover is None:
            self.last_switchover = Gauge(
                "hacontrol_last_switchover_duration_seconds",
                "Duration of the last switchover.", registry=self.registry,
            )
        self.last_switchover.set(duration_s)

    def leadership(self, leader: bool, dcs_up: bool, epoch: int | None) -> None:
        """With ``[dcs]``: whether this controller leads, whether etcd answers, the
        term's epoch (created on first use: absent without ``[dcs]``)."""
        if self.leader is None:
            self.leader = Gauge("hacontrol_leader", "1 while this controller leads its scope.",
                                registry=self.registry)
            self.dcs_up = Gauge("hacontrol_dcs_up", "1 while etcd answers this controller.",
                                registry=self.registry)
            self.leader_epoch = Gauge(
                "hacontrol_leader_epoch",
                "The epoch of this controller's term (0 while it does not lead).",
                registry=self.registry,
            )
        assert self.dcs_up is not None and self.leader_epoch is not None
        self.leader.set(1 if leader else 0)
        self.dcs_up.set(1 if dcs_up else 0)
        self.leader_epoch.set(epoch if leader and epoch is not None else 0)

    def loop(self, duration_s: float) -> None:
        """One controller round took ``duration_s`` seconds."""
        self.loop_seconds.observe(duration_s)

    def forget(self, node: str) -> None:
        """Drop every series of ``node`` (it left the configuration)."""
        for metric in (self.probe_seconds, self.timeline, self.lag_bytes, self.replay_lag,
                       self.reachable, self.fenced, self.maintenance, self.wal_position,
                       self.replay_position):
            self._remove(metric, node)
        for role in ROLES:
            self._remove(self.role, node, role)
        self.slots(node, ())
        self._slots.pop(node, None)
        for state in self._breaker_states.pop(node, set()):
            self._remove(self.breaker_state, node, state)
        for kind in self._error_kinds.pop(node, set()):
            self._remove(self.probe_errors, node, kind)

    # -- output

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # -- helpers

    @staticmethod
    def _set(gauge: Gauge, node: str, value: float | None) -> None:
        if value is None:
            Metrics._remove(gauge, node)
        else:
            gauge.labels(node).set(value)

    @staticmethod
    def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
        # Older prometheus-client versions raise for a series that is not there.
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
