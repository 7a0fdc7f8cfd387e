"""The fault trials' catalogue: the faults (:data:`FAULTS`) and what each must show,
the replication modes (:data:`MODES`), the phase timings, and a trial's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hacontrol.config import ConfigError, config_from_mapping
from hacontrol.testing.checker import (
    Window,
)
from hacontrol.testing.netem import Impairment

STALE_FIRST_ID = 1_000_000_000
# A stall of the client's writes shorter than this is scheduling noise, not an outage.
OUTAGE_GAP_S = 0.5
ALL_MODES = frozenset({"async", "sync", "quorum"})
# "Writes resume within a few seconds": the bound for faults that promise it. A
# controller restart plus a round of probes take 1-3 s on a 2-core machine; this
# leaves room for scheduling noise and still fails a wait on a timeout (30 s
# promote timeout, 30 s max_standby_streaming_delay, 300 s cool-down).
RTO_FEW_S = 10.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault of the matrix and what the controller should do about it."""

    name: str
    failovers: int  # expected promotions (the least accepted)
    what: str
    # The most promotions accepted (None: exactly ``failovers``).
    max_failovers: int | None = None
    # Modes in which no acknowledged write may be lost.
    lossless: frozenset[str] = frozenset({"quorum"})
    # The node the controller must follow at the end (None: any).
    final_primary: str | None = None
    # A node the controller must fence (journaled Fence that succeeded) and that
    # must not take writes at the end.
    must_fence: str | None = None
    # Exactly one node takes writes at the end, and it is the controller's primary.
    one_writable: bool = False
    # Writes must resume within this many seconds (the RTO column).
    rto_limit: float | None = None
    # "takeover": fault -> first client write on another node than pg1;
    # "resume": the fault's mark (e.g. a kill) -> first client write after it;
    # "outage": end of the client's first stall (faults without a failover).
    rto: str = ""
    # The fault talks to the controller's API (operator commands).
    api: bool = False
    # Controllers on etcd (2: hacontrol.testing.fault_controllers); 1: one alone.
    controllers: int = 1

    @property
    def most_failovers(self) -> int:
        return self.failovers if self.max_failovers is None else self.max_failovers

    @property
    def rto_kind(self) -> str:
        return self.rto or ("takeover" if self.failovers else "outage")


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("kill", 1, "SIGKILL of the primary and all its processes; restarted after the "
          "failover (returns as a stale primary)"),
    Fault("hang-short", 0, "SIGSTOP of the primary for less than the detection window"),
    Fault("hang-long", 1, "SIGSTOP of the primary until well after the failover, then SIGCONT"),
    Fault("partition-controller", 0, "primary cut off from the controller only"),
    Fault("partition-primary", 1, "primary cut off from everyone (its stale client keeps "
          "writing to it), healed after the failover"),
    Fault("partition-replica", 0, "one replica cut off from everyone"),
    Fault("netem", 0, "latency, jitter and loss on the controller's links to every node"),
    Fault("controller-kill", 1, "primary SIGKILLed, controller SIGKILLed as soon as it "
          "journals the start of the promotion, then restarted"),
    Fault("stray-promote", 0, "pg3 put in maintenance through the CLI, its replication cut "
          "for 3 s under writes, then pg_promote() on it by hand (an operator's mistake)",
          lossless=ALL_MODES, final_primary="pg1", must_fence="pg3", api=True),
    Fault("replay-conflict", 1, "a repeatable-read report open on pg2 holds back its replay "
          "of an ACCESS EXCLUSIVE lock taken on pg1; then pg1 SIGKILLed (and restarted)",
          lossless=frozenset({"sync", "quorum"}), one_writable=True, rto_limit=RTO_FEW_S),
    # Either outcome is right after the restart: the target promoted and kept, or
    # the fence on pg1 lifted (hence 0 or 1 promotions).
    Fault("controller-kill-switchover", 0, "switchover to pg2 through the CLI (pg2's replay "
          "paused), controller SIGKILLed at the fence step and restarted",
          max_failovers=1, lossless=ALL_MODES, one_writable=True, rto_limit=RTO_FEW_S,
          rto="resume", api=True),
    # Two controllers on etcd (ttl 3 s): the primary dies with the leader gone.
    Fault("leader-kill", 1, "the leading controller and the primary SIGKILLed together; the "
          "standby controller leads and fails over", controllers=2),
    Fault("leader-freeze", 1, "the leading controller SIGSTOPped and the primary SIGKILLed; "
          "SIGCONT after the other's failover: it must take no action", controllers=2),
    Fault("leader-cut-etcd", 1, "the leading controller cut off from etcd (not from the "
          "nodes) and the primary SIGKILLed; the other leads and fails over", controllers=2),
)}


@dataclass(frozen=True, slots=True)
class Mode:
    """Replication mode: server-side synchronous replication and the controller's
    configuration tables for it (``{"replication": {...}}``)."""

    name: str
    server_sync: bool
    controller: dict[str, dict[str, Any]] = field(default_factory=dict)


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("async", False),
    # synchronous_standby_names = 'ANY 1 (pg1, pg2, pg3)' on every node, set by
    # the harness; the controller does not know about it.
    Mode("sync", True),
    # The controller manages synchronous_standby_names = 'ANY 1 (...)' and fails
    # over only to a replica that holds every acknowledged commit.
    Mode("quorum", False, {"replication": {"synchronous": "quorum", "quorum": 1}}),
)}


def mode_unavailable(mode: Mode) -> str | None:
    """Why the controller cannot run ``mode`` yet, or None when it can."""
    if not mode.controller:
        return None
    probe = {"nodes": [{"name": "a", "dsn": "host=127.0.0.1"},
                       {"name": "b", "dsn": "host=127.0.0.2"}], **mode.controller}
    try:
        config_from_mapping(probe)
    except ConfigError as exc:
        return f"the controller does not accept {mode.controller}: {exc.problems[0]}"
    return None


@dataclass(frozen=True, slots=True)
class Timings:
    """How long each phase lasts (seconds)."""

    warmup: float = 1.5
    hang_short: float = 1.0
    hold: float = 10.0  # partitions without a failover, and the minimum hold with one
    netem: float = 60.0
    impairment: Impairment = field(default_factory=lambda: Impairment(0.3, 0.2, 0.10))
    netem_direction: str = "in"
    react: float = 30.0  # how long the controller may take to fail over or fence
    settle: float = 2.0
    stray_lag: float = 3.0  # stray-promote: pg3 cut off from replication this long
    hold_back: float = 5.0  # how long a replay hold-back may take to show
    operator: float = 30.0  # bound on one `hacontrol` command


@dataclass
class TrialResult:
    """What one trial showed."""

    fault: str
    mode: str
    failovers_expected: int
    failovers_max: int = -1  # -1: same as failovers_expected
    failovers_seen: int = 0
    rto: float | None = None
    acked: int = 0
    lost: int = 0
    lost_by_writer: dict[str, int] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    windows_after_fence: list[Window] = field(default_factory=list)
    fenced_at: float | None = None
    final_primary: str | None = None
    # Nodes that took writes at the end (out of recovery, not read-only); None when
    # the trial did not get that far.
    writable_at_end: list[str] | None = None
    lost_counted: bool = False
    # The controller's exit status when it ended by itself during the trial.
    controller_exit: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # What the fault's mechanics showed (e.g. pg3_promoted, replay_held_bytes).
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.failovers_max < 0:
            self.failovers_max = self.failovers_expected

    @property
    def ok(self) -> bool:
        """No error, an accepted number of failovers, no split brain after the fence.
        (checks/chaos.py's ``violations`` checks the fault's other expectations.)"""
        return (
            self.error is None
            and self.failovers_expected <= self.failovers_seen <= self.failovers_max
            and not self.windows_after_fence
        )

