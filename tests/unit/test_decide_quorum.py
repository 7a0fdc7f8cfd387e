"""The decision core in synchronous quorum mode: managing the primary's set (take-over,
repair, degrade/restore, strict), and failing over only without losing a commit."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.core.actions import ActionOutcome, ConfigureSync, Decision
from hacontrol.core.events import Severity
from hacontrol.core.model import Observation, ReplicationClient
from hacontrol.core.requests import ManualFailover
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import SyncQuorum
from tests.unit.test_decide_support import (
    BASE_LSN,
    SETTINGS,
    Sim,
    down,
    kinds,
    primary,
    promotes,
    replica,
    spec,
)

QUORUM = replace(SETTINGS, synchronous="quorum", sync_quorum=1)
STRICT = replace(QUORUM, sync_strict=True)
LOCAL = "ANY 1 (pg1, pg2, pg3)"  # what LocalCluster(sync=True) sets on every node


def stream(name: str, flush: int = BASE_LSN) -> ReplicationClient:
    return ReplicationClient(name, "127.0.0.1", "streaming", "quorum", flush, flush, flush)


def prim(at: float, names: str, *rows: ReplicationClient, lsn: int = BASE_LSN) -> Observation:
    return replace(primary("pg1", at, lsn=lsn), replication=rows, synchronous_standby_names=names)


def syncs(decision: Decision) -> list[ConfigureSync]:
    return [a for a in decision.actions if isinstance(a, ConfigureSync)]


def warm(sim: Sim, names: str = LOCAL, rounds: int = 4) -> float:
    at = 0.0
    for i in range(rounds):
        at = i * 0.2
        sim.step(at, prim(at, names, stream("pg2"), stream("pg3")), replica("pg2", at),
                 replica("pg3", at))
    return at


def crash(sim: Sim, start: float, rounds: int, *others: Observation) -> list[Decision]:
    """Rounds with pg1 dead; ``others`` are re-stamped every round."""
    out = []
    for i in range(rounds):
        at = start + i * 0.2
        out.append(sim.step(at, down("pg1", at), *(replace(o, at=at) for o in others)))
    return out


# --------------------------------------------------------------------------- managing the set


def test_the_local_cluster_setting_is_taken_over_without_a_change() -> None:
    sim = Sim(settings=QUORUM)
    warm(sim)
    assert sim.state.primary == "pg1"
    assert sim.state.sync_in_force == SyncQuorum(frozenset({"pg2", "pg3"}), 1, "any")
    assert not any(isinstance(a, ConfigureSync) for a in sim.all_actions())


def test_mode_off_never_touches_the_setting() -> None:
    sim = Sim(settings=SETTINGS)
    warm(sim, names="")
    assert not any(isinstance(a, ConfigureSync) for a in sim.all_actions())


def test_an_async_primary_gets_the_set_once_and_it_is_not_repeated_while_applying() -> None:
    sim = Sim(settings=QUORUM)
    warm(sim, names="", rounds=6)
    sent = [a for a in sim.all_actions() if isinstance(a, ConfigureSync)]
    assert [(a.node, a.value) for a in sent] == [("pg1", "ANY 1 (pg2, pg3)")]
    assert sim.state.sync_requested == "ANY 1 (pg2, pg3)"
    # Seen in force: the request is done and nothing more is sent.
    at = 2.0
    d = sim.step(at, prim(at, "ANY 1 (pg2, pg3)", stream("pg2"), stream("pg3")),
                 replica("pg2", at), replica("pg3", at))
    assert not syncs(d) and sim.state.sync_requested is None
    assert sim.state.sync_pending == ()


def test_a_lost_replica_is_dropped_and_both_lost_degrade_then_restore() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    d = sim.step(at, prim(at, LOCAL, stream("pg2")), replica("pg2", at), down("pg3", at))
    assert [a.value for a in syncs(d)] == ["ANY 1 (pg2)"]
    assert "sync_degraded" not in kinds(d.events)
    at += 0.2
    d = sim.step(at, prim(at, "ANY 1 (pg2)"), down("pg2", at), down("pg3", at))
    assert [a.value for a in syncs(d)] == [""]
    degraded = [e for e in d.events if e.kind == "sync_degraded"]
    assert len(degraded) == 1 and degraded[0].severity is Severity.CRITICAL
    assert "asynchronous" in degraded[0].message
    for _ in range(3):  # reported once, applied once
        at += 0.2
        d = sim.step(at, prim(at, ""), down("pg2", at), down("pg3", at))
        assert not syncs(d) and "sync_degraded" not in kinds(d.events)
    at += 0.2
    d = sim.step(at, prim(at, "", stream("pg2"), stream("pg3")), replica("pg2", at),
                 replica("pg3", at))
    assert [a.value for a in syncs(d)] == ["ANY 1 (pg2, pg3)"]
    assert kinds(d.events).count("sync_restored") == 1


def test_a_primary_probe_gap_neither_restores_nor_repeats_the_degradation() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    sim.step(at, prim(at, LOCAL), down("pg2", at), down("pg3", at))
    at += 0.2
    d = sim.step(at, down("pg1", at), down("pg2", at), down("pg3", at))
    assert "sync_restored" not in kinds(d.events)
    at += 0.2
    d = sim.step(at, prim(at, ""), down("pg2", at), down("pg3", at))
    assert "sync_degraded" not in kinds(d.events) and "sync_restored" not in kinds(d.events)


def test_strict_keeps_the_set_and_says_writes_are_blocked() -> None:
    sim = Sim(settings=STRICT)
    at = warm(sim, names="ANY 1 (pg2, pg3)") + 0.2
    d = sim.step(at, prim(at, "ANY 1 (pg2, pg3)"), down("pg2", at), down("pg3", at))
    assert not syncs(d)
    blocked = [e for e in d.events if e.kind == "sync_writes_blocked"]
    assert len(blocked) == 1 and "writes on pg1 are blocked" in blocked[0].message
    at += 0.2
    d = sim.step(at, prim(at, "ANY 1 (pg2, pg3)", stream("pg2")), replica("pg2", at),
                 down("pg3", at))
    assert [a.value for a in syncs(d)] == ["ANY 1 (pg2)"]
    assert "sync_restored" in kinds(d.events)


def test_paused_reports_but_does_not_change_the_set() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim)
    sim.state = replace(sim.state, paused=True)
    at += 0.2
    d = sim.step(at, prim(at, LOCAL), down("pg2", at), down("pg3", at))
    assert not syncs(d) and "sync_degraded" in kinds(d.events)


def test_a_failed_configure_that_changed_nothing_is_not_consulted_any_more() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    d = sim.step(at, prim(at, LOCAL, stream("pg2")), replica("pg2", at), down("pg3", at))
    (action,) = syncs(d)
    assert sim.state.sync_pending[0].members == frozenset({"pg2"})
    out = sim.report(ActionOutcome(
        action, OutcomeStatus.FAILED, "cannot connect: refused", attempted=False
    ), at)
    assert kinds(out.events) == ["sync_config_failed"]
    assert sim.state.sync_pending == () and sim.state.sync_requested is None


# --------------------------------------------------------------------------- failover


def test_failover_waits_while_too_few_members_are_reachable_then_promotes_the_most_wal() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    decisions = crash(sim, at, 8, replica("pg2", at, wal=None), down("pg3", at))
    assert not any(promotes(d) for d in decisions)
    events = [e for d in decisions for e in d.events if e.kind == "quorum_not_reachable"]
    assert len(events) == 1
    assert events[0].details["missing"] == ["pg3"]
    assert "needs 2 reachable member(s), has 1" in events[0].message
    # pg3 is back and has more WAL than pg2: it holds every acknowledged commit.
    at += 8 * 0.2
    decisions = crash(sim, at, 4, replica("pg2", at, wal=None),
                      replica("pg3", at, lsn=BASE_LSN + 100, wal=None))
    promoted = [p for d in decisions for p in promotes(d)]
    assert [p.node for p in promoted] == ["pg3"]
    assert promoted[0].sync_standbys == "ANY 1 (pg2)"
    started = [e for d in decisions for e in d.events if e.kind == "failover_started"]
    assert "enough of the synchronous set is reachable" in started[0].details["quorum"]


def test_a_member_behind_the_most_advanced_one_is_never_chosen() -> None:
    # pg3 holds the most WAL but may never be promoted (priority 0). Without the quorum
    # rule pg2 would be; it may lack acknowledged commits, so nobody is promoted.
    specs = (spec("pg1"), spec("pg2"), spec("pg3", priority=0))
    for settings, expected in ((SETTINGS, ["pg2"]), (QUORUM, [])):
        sim = Sim(specs=specs, settings=settings)
        at = warm(sim) + 0.2
        decisions = crash(sim, at, 6, replica("pg2", at, wal=None),
                          replica("pg3", at, lsn=BASE_LSN + 8, wal=None))
        assert [p.node for d in decisions for p in promotes(d)] == expected
    events = [e for d in decisions for e in d.events if e.kind == "no_candidate"]
    assert len(events) == 1
    assert "behind the most advanced reachable synchronous member" in events[0].message


def test_a_shrunk_set_still_consults_the_old_members_until_the_change_is_confirmed() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    change = BASE_LSN + 1000
    sim.step(at, prim(at, LOCAL, stream("pg2"), lsn=change), replica("pg2", at), down("pg3", at))
    at += 0.2
    # ANY 1 (pg2) is in force, but pg2 has not flushed the LSN of the change yet.
    sim.step(at, prim(at, "ANY 1 (pg2)", stream("pg2", BASE_LSN), lsn=change),
             replica("pg2", at), down("pg3", at))
    assert sim.state.sync_pending[0].until_lsn == change
    decisions = crash(sim, at + 0.2, 8, replica("pg2", at, wal=None), down("pg3", at))
    assert not any(promotes(d) for d in decisions)
    assert any(e.kind == "quorum_not_reachable" for d in decisions for e in d.events)


def test_a_shrunk_set_confirmed_by_its_member_allows_the_failover() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    change = BASE_LSN + 1000
    sim.step(at, prim(at, LOCAL, stream("pg2"), lsn=change), replica("pg2", at), down("pg3", at))
    at += 0.2
    sim.step(at, prim(at, "ANY 1 (pg2)", stream("pg2", change), lsn=change),
             replica("pg2", at, lsn=change), down("pg3", at))
    assert sim.state.sync_pending == ()
    decisions = crash(sim, at + 0.2, 8, replica("pg2", at, lsn=change, wal=None),
                      down("pg3", at))
    promoted = [p for d in decisions for p in promotes(d)]
    assert [p.node for p in promoted] == ["pg2"]
    # Nobody is left to acknowledge on pg2: non-strict starts it asynchronous.
    assert promoted[0].sync_standbys == ""


def test_an_async_primary_needs_a_majority_as_usual() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    sim.step(at, prim(at, LOCAL), down("pg2", at), down("pg3", at))
    at += 0.2
    sim.step(at, prim(at, ""), down("pg2", at), down("pg3", at))
    # pg2 returns (healthy for a few rounds), then the primary dies before it is added.
    for _ in range(4):
        at += 0.2
        sim.step(at, prim(at, "", stream("pg2")), replica("pg2", at), down("pg3", at))
        sim.state = replace(sim.state, sync_requested_at=at)  # the set is not applied yet
    decisions = crash(sim, at + 0.2, 6, replica("pg2", at, wal=None), down("pg3", at))
    # No set in force promised anything, so the quorum rule does not stand in for the
    # majority: with pg3 unreachable an automatic failover is blocked ...
    assert not any(promotes(d) for d in decisions)
    blocked = [e for d in decisions for e in d.events if e.kind == "failover_blocked"]
    assert [e.details["blocked_by"] for e in blocked] == ["no_majority"]
    # ... and an operator may force it; the request to add pg2 is consulted too.
    forced = sim.request(ManualFailover("pg2", force=True))
    assert [p.node for p in promotes(forced)] == ["pg2"]


def test_manual_failover_is_refused_without_the_quorum_unless_forced() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    crash(sim, at, 2, replica("pg2", at, wal=None), down("pg3", at))
    refused = sim.request(ManualFailover("pg2"))
    assert refused.refused is not None
    assert "synchronous quorum is not reachable" in refused.refused.message
    forced = sim.request(ManualFailover("pg2", force=True))
    (promote,) = promotes(forced)
    assert promote.node == "pg2" and promote.sync_standbys == ""
    assert forced.events[0].details["forced"] is True


def test_the_new_primary_takes_its_preset_set_without_another_change() -> None:
    sim = Sim(settings=QUORUM)
    at = warm(sim) + 0.2
    decisions = crash(sim, at, 6, replica("pg2", at, wal=None), replica("pg3", at, wal=None))
    (promote,) = [p for d in decisions for p in promotes(d)]
    assert promote.node == "pg2" and promote.sync_standbys == "ANY 1 (pg3)"
    at += 6 * 0.2
    new = replace(primary("pg2", at, tl=2), synchronous_standby_names="ANY 1 (pg3)")
    d = sim.step(at, down("pg1", at), new, replica("pg3", at, wal=None))
    assert sim.state.primary == "pg2"
    assert sim.state.sync_in_force == SyncQuorum(frozenset({"pg3"}), 1, "any")
    # pg3 is being repointed: still a member within the grace period, so no change.
    assert not syncs(d) and "sync_degraded" not in kinds(d.events)


def test_quorum_settings_default_off() -> None:
    assert DecisionSettings().synchronous == "off"
