"""The controller as a service: loop, HTTP API, metrics, systemd notifications, signals.

:class:`Service` owns one :class:`~hacontrol.service.controller.Controller` and runs it
with its edges in one event loop:

* the HTTP API (``hacontrol.service.api``) on ``api.listen``, this object being its backend;
* Prometheus metrics (``hacontrol.service.metrics``) fed from every completed round and
  from the journal's ``failover_completed`` / ``switchover_completed`` events;
* the systemd notify protocol (``hacontrol.service.sdnotify``): READY=1 after the first
  full probe round, STATUS= with a one-line summary, the watchdog fed only by
  completed rounds, its timeout raised around the few actions that may be slow;
* signals: SIGTERM/SIGINT finish the round (and action) in flight, stop the API,
  and exit 0 within a bound; a second one stops at once (exit 1). SIGHUP reloads
  the configuration file; an invalid file keeps the running configuration and
  logs one error.

Exit codes of :meth:`Service.run`: :data:`EXIT_OK` (0) clean stop,
:data:`EXIT_FAILED` (1) failure (the API could not bind, the loop failed, or the
stop took longer than its bound). Bad configuration (2) is caught before a
Service exists, or a journal written for another cluster (:data:`EXIT_CONFIG`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from hacontrol.config import Config, ConfigError, config_warnings, load_config
from hacontrol.core.actions import Rejoin
from hacontrol.core.events import EventKind
from hacontrol.core.model import Role
from hacontrol.core.requests import (
    ManualFailover,
    Pause,
    RejoinRequest,
    Request,
    Resume,
    SetMaintenance,
    SwitchoverRequest,
)
from hacontrol.core.results import OutcomeStatus
from hacontrol.io.journal import Journal
from hacontrol.service.api import SubmitResult, bound_address, start_api
from hacontrol.service.controller import Controller, RoundResult
from hacontrol.service.dashboard import DashboardFeed
from hacontrol.service.distributed import controllers_json, standby_refusal
from hacontrol.service.metrics import Metrics
from hacontrol.service.policies import promote_wait_s
from hacontrol.service.recovery import ForeignJournalError
from hacontrol.service.sdnotify import Notifier
from hacontrol.service.snapshot import StatusSnapshot
from hacontrol.service.watchdog import WatchdogBudget

log = structlog.get_logger("hacontrol.service")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

# Events kept in memory for GET /status ("events") and for watchers.
RECENT_EVENTS = 200
STATUS_EVENTS = 20
# Extra seconds a stop may take beyond the longest action's own bound.
STOP_MARGIN_S = 10.0


class RecordingJournal(Journal):
    """A :class:`Journal` that also keeps the latest records in memory and tells
    listeners about each one (metrics, the demo's timeline)."""

    def __init__(self, path: str | Path, keep: int = RECENT_EVENTS) -> None:
        super().__init__(path)
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record durably, remember it, and pass it to every listener."""
        record = super().append(kind, **fields)
        self.recent.append(record)
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception as exc:  # a listener must never break journaling
                log.warning("journal_listener_failed", error=f"{type(exc).__name__}: {exc}")
        return record


def _restart_keys(config: Config) -> dict[str, str]:
    """The settings a reload cannot change (the API's socket, the journal file)."""
    return {
        "api.listen": config.api.listen,
        "api.enabled": str(config.api.enabled),
        "journal": str(config.journal),
    }


def _log_warnings(config: Config, when: str) -> None:
    """check-config's warnings, in the log too: under systemd nobody reads a terminal."""
    for line in config_warnings(config):
        log.warning("config_warning", when=when, message=line)


def config_changes(old: Config, new: Config) -> list[str]:
    """The changed settings outside ``[[nodes]]`` (the controller reports those), as
    key paths only: a value may be a secret."""
    before = _flatten(old.model_dump(mode="json", exclude={"nodes"}))
    after = _flatten(new.model_dump(mode="json", exclude={"nodes"}))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def request_for(kind: str, params: dict[str, Any]) -> Request:
    """The controller request for a validated API command."""
    if kind == "pause":
        return Pause()
    if kind == "resume":
        return Resume()
    if kind == "maintenance":
        return SetMaintenance(str(params["node"]), bool(params["on"]))
    if kind == "failover":
        return ManualFailover(str(params["to"]), bool(params.get("force", False)))
    if kind == "switchover":
        to = params.get("to")
        return SwitchoverRequest(str(to) if to is not None else None)
    if kind == "rejoin":
        return RejoinRequest(str(params["node"]))
    raise ValueError(f"unknown command {kind!r}")


def error_kind(error: str | None) -> str:
    """A short, bounded label for a failed probe (metrics): ``timeout``,
    ``circuit_open`` or the exception's class name."""
    text = (error or "").strip()
    if not text:
        return "error"
    if text.startswith("probe timed out") or text.startswith("TimeoutError"):
        return "timeout"
    if text.startswith("circuit open"):
        return "circuit_open"
    return text.split(":", 1)[0].split()[0]


def summary_line(snapshot: StatusSnapshot) -> str:
    """One line for ``systemctl status``: ``primary pg1 tl 1; 3/3 ok; automatic``."""
    nodes = snapshot.nodes
    ok = sum(1 for n in nodes if n.health == "ok")
    primary = snapshot.primary
    timeline = next((n.timeline for n in nodes if n.name == primary and n.timeline), None)
    head = f"primary {primary}" + (f" tl {timeline}" if timeline else "") if primary else (
        "no primary"
    )
    parts = [head, f"{ok}/{len(nodes)} ok", snapshot.mode]
    bad = [f"{n.name} {n.health}" for n in nodes if n.health != "ok"]
    if bad:
        parts.append(", ".join(bad))
    if snapshot.paused:
        parts.append("PAUSED")
    if snapshot.failover_in_flight:
        parts.append(f"failover to {snapshot.failover_in_flight} in flight")
    if snapshot.rejoining:
        parts.append(f"rejoining {', '.join(snapshot.rejoining)}")
    return "; ".join(p for p in parts if p)


class Service:
    """One controller with its API, metrics and systemd notifications."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | Path | None = None,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.prometheus = metrics if metrics is not None else Metrics()
        self.journal = RecordingJournal(config.journal)
        self.journal.listeners.append(self._count_operations)
        self.controller = Controller(
            config, journal=self.journal, action_budget=WatchdogBudget(self.notifier)
        )
        self.runner: web.AppRunner | None = None
        self.api_address: str | None = None
        self.round_listeners: list[Callable[[RoundResult], None]] = []
        self.dashboard = DashboardFeed()
        self.journal.listeners.append(self.dashboard.record)
        self.started_wall = time.time()
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self._stopping = False
        # What only a restart changes, as this process started with it.
        self._in_effect = _restart_keys(config)
        _log_warnings(config, "start")

    # -- ApiBackend

    def snapshot(self) -> dict[str, Any]:
        """The controller's view plus the latest events and a few facts about itself."""
        snap = self.controller.status().to_json()
        snap["events"] = list(self.journal.recent)[-STATUS_EVENTS:]
        snap["controller"] = {
            "pid": os.getpid(),
            "started_at": self.started_wall,
            "uptime_s": round(time.time() - self.started_wall, 1),
            "api": self.api_address,
            "config": str(self.config_path) if self.config_path else None,
        }
        if self.controller.leader is not None:
            snap["controllers"] = controllers_json(self.controller.leader)
        return snap

    def history(
        self,
        limit: int,
        *,
        kinds: frozenset[str] | None = None,
        nodes: frozenset[str] | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """The last ``limit`` journal records that match, oldest first."""
        # From the file: it also holds what earlier runs of the controller recorded.
        return self.journal.read(limit=limit, kinds=kinds, nodes=nodes, since=since)

    def metrics(self) -> bytes:
        """The Prometheus exposition."""
        return self.prometheus.render()

    async def submit(self, kind: str, params: dict[str, Any]) -> SubmitResult:
        """Decide an operator command and carry it out.

        400/409 for a refusal (the message says why and what would allow it), 200
        when done, 202 when a failover or switchover was started and completes in
        a later round, 500 when an action was carried out and failed.
        """
        not_leader = standby_refusal(self.controller.leader)
        if not_leader is not None:
            return not_leader
        request = request_for(kind, params)
        decision, outcomes = await self.controller.handle(request)
        events = [
            {"kind": e.kind, "node": e.node, "message": e.message, "severity": str(e.severity)}
            for e in decision.events
        ]
        data: dict[str, Any] = {"events": events}
        if decision.refused is not None:
            refusal = decision.refused
            data["code"] = refusal.code
            return SubmitResult(False, 400 if refusal.bad_request else 409, refusal.message, data)
        data["actions"] = [
            {"action": type(o.action).__name__, "node": o.action.node, "status": str(o.status),
             "detail": o.detail}
            for o in outcomes
        ]
        failed = [o for o in outcomes if o.status is not OutcomeStatus.SUCCEEDED]
        if failed:
            first = failed[0]
            message = (
                f"{kind}: {type(first.action).__name__} of {first.action.node} {first.status}:"
                f" {first.detail}"
            )
            return SubmitResult(False, 500, message, data)
        flight = self.controller.state.in_flight
        message = "; ".join(e.message for e in decision.events) or f"{kind}: done"
        started = [a for a in decision.actions if isinstance(a, Rejoin)]
        if started:
            # The procedure runs in the background; its outcome is journaled
            # (node_rejoined / rejoin_failed) and shown by GET /status.
            data["rejoin"] = {"node": started[0].node, "primary": started[0].primary}
            return SubmitResult(True, 202, message, data)
        if flight is not None and kind in ("failover", "switchover"):
            data["in_flight"] = {"candidate": flight.candidate, "old_primary": flight.old_primary,
                                 "kind": str(flight.kind)}
            return SubmitResult(True, 202, message, data)
        return SubmitResult(True, 200, message, data)

    # -- feeding metrics and systemd

    def _on_round(self, result: RoundResult) -> None:
        metrics = self.prometheus
        for name, obs in result.view.observations.items():
            metrics.probe(name, obs.latency_s, obs.reachable,
                          None if obs.reachable else error_kind(obs.error))
        snap = self.controller.status()
        for row in snap.nodes:
            found = result.view.get(row.name)
            seen = found if found is not None and found.reachable else None
            metrics.node(row.name, row.role, row.timeline, row.lag_bytes,
                         row.replay_lag_s if row.role == str(Role.REPLICA) else None,
                         row.reachable, row.fenced, row.maintenance,
                         seen.wal_position if seen else None,
                         seen.replay_lsn if seen and seen.role is Role.REPLICA else None)
            if seen is not None:
                metrics.slots(row.name, ((s.name, s.kind, s.active, s.retained_bytes)
                                         for s in row.slots))
        blocked = self.controller.state.failover_blocked
        metrics.cluster(self.controller.state.paused,
                        str(blocked.reason) if blocked is not None else None)
        for name, breaker in self.controller.breakers.items():
            metrics.breaker(name, breaker.state.value)
        metrics.loop(result.duration_s)
        leader = self.controller.leader
        if leader is not None:
            metrics.leadership(leader.leading(), leader.state.dcs_up, leader.state.epoch)
        self.dashboard.round_done(
            (name, obs.latency_s, obs.reachable) for name, obs in result.view.observations.items()
        )
        self.notifier.round_completed(summary_line(snap))
        for listener in list(self.round_listeners):
            listener(result)

    def _count_operations(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind not in (EventKind.FAILOVER_COMPLETED, EventKind.SWITCHOVER_COMPLETED):
            return
        details = record.get("details") or {}
        duration = details.get("duration_s")
        seconds = float(duration) if isinstance(duration, int | float) else 0.0
        if kind == EventKind.FAILOVER_COMPLETED:
            self.prometheus.failover(seconds)
        else:
            self.prometheus.switchover(seconds)

    # -- lifecycle

    def stop_bound(self) -> float:
        """Seconds a stop may take: the longest action's bound plus a margin."""
        settings = self.controller.settings
        timing = self.config.timing
        # A switchover running past its own limit is cut short rather than
        # holding the stop beyond systemd's TimeoutStopSec (90 s in the unit).
        longest = max(
            promote_wait_s(settings) + self.config.hooks.timeout,
            settings.switchover_timeout_s,
        )
        return longest + timing.probe_timeout * 2 + STOP_MARGIN_S

    def request_stop(self, why: str = "stop requested") -> None:
        """Finish the round in flight, then stop (a second call stops at once)."""
        if self._stop is None or self._force is None:
            return
        if self._stopping:
            log.warning("stop_forced", reason=why)
            self._force.set()
            return
        self._stopping = True
        log.info("stopping", reason=why)
        self.notifier.stopping("stopping: finishing the round in flight")
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the configuration file in the background (SIGHUP)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Re-read and apply the configuration file; False (old one kept) if it is invalid."""
        if self.config_path is None:
            log.warning("config_reload_skipped", reason="no configuration file to re-read")
            return False
        self.notifier.reloading("reloading the configuration")
        try:
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                log.error(
                    "config_reload_failed",
                    file=str(self.config_path),
                    problems=exc.problems,
                    message="the configuration file is invalid; the running configuration is kept",
                )
                return False
            old = self.config
            # Compared with what is in effect, not with the previous file: putting a
            # value back to the one in use needs no restart.
            for what, value in _restart_keys(new).items():
                if value != self._in_effect[what]:
                    log.warning("config_change_needs_restart", key=what,
                                message=f"{what} changed; it takes effect after a restart")
            removed = {s.name for s in old.node_specs()} - {s.name for s in new.node_specs()}
            await self.controller.reload(new, settings_changed=config_changes(old, new))
            _log_warnings(new, "reload")
            self.config = new
            for name in removed:
                self.prometheus.forget(name)
            self.dashboard.latency.keep_only(s.name for s in new.node_specs())
            return True
        finally:
            self.notifier.ready(summary_line(self.controller.status()))

    async def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; returns the exit code."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        signals: list[signal.Signals] = []
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
                signals.append(sig)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            signals.append(signal.SIGHUP)
        try:
            return await self._run()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self.notifier.close()

    async def _run(self) -> int:
        assert self._stop is not None and self._force is not None
        if self.config.api.enabled:
            try:
                self.runner = await start_api(
                    self, self.config.api.listen, lambda: self.config.api.bearer_token(),
                    self.dashboard,
                )
            except OSError as exc:
                log.error("api_start_failed", listen=self.config.api.listen,
                          error=exc.strerror or str(exc))
                return EXIT_FAILED
            self.api_address = bound_address(self.runner)
        code = EXIT_OK
        loop_task = asyncio.create_task(self.controller.run(self._stop, on_round=self._on_round))
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({loop_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not loop_task.done():
                code = await self._finish(loop_task)
            elif isinstance(failure := loop_task.exception(), ForeignJournalError):
                # A leftover journal of another cluster: a configuration mistake.
                log.critical("foreign_journal", message=str(failure))
                print(f"error: {failure}", file=sys.stderr)
                code = EXIT_CONFIG
            elif failure is not None:
                log.error("controller_failed", error=f"{type(failure).__name__}: {failure}")
                code = EXIT_FAILED
        except asyncio.CancelledError:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop_task
            raise
        finally:
            stop_wait.cancel()
            for task in list(self._reloads):
                task.cancel()
            if self.runner is not None:
                await self.runner.cleanup()
                self.runner = None
        log.info("service_stopped", exit_code=code)
        return code

    async def _finish(self, loop_task: asyncio.Task[None]) -> int:
        """Let the round in flight finish, within :meth:`stop_bound` (or until forced)."""
        assert self._force is not None
        bound = self.stop_bound()
        force_wait = asyncio.create_task(self._force.wait())
        try:
            done, _ = await asyncio.wait({loop_task, force_wait}, timeout=bound,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            force_wait.cancel()
        if loop_task in done:
            failure = loop_task.exception()
            if failure is not None:
                log.error("controller_failed", error=f"{type(failure).__name__}: {failure}")
                return EXIT_FAILED
            return EXIT_OK
        log.error("stop_timed_out" if not self._force.is_set() else "stop_forced_now",
                  bound_s=round(bound, 1),
                  message="the round in flight did not finish; cancelling it")
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(loop_task, 5.0)
        return EXIT_FAILED
