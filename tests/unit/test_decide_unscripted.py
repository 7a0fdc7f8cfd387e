"""The rules behind faults nobody scripted: a stray promotion, a replay held back by a
reporting query, a controller restarted mid-operation, a node of another cluster."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.core.actions import ActionOutcome, CancelPromote, Promote, Unfence
from hacontrol.core.candidates import rank_candidates
from hacontrol.core.identity import learn_identity
from hacontrol.core.model import Observation, TimelineSwitch
from hacontrol.core.requests import ManualFailover, Pause, SetMaintenance
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.state import FailoverInFlight, Operation, initial_state
from tests.unit.test_decide_support import (
    BASE_LSN,
    MB,
    SETTINGS,
    SPECS,
    Sim,
    actions_of,
    down,
    fences,
    kinds,
    primary,
    promotes,
    replica,
    view,
)

LOST = None
QUORUM = replace(SETTINGS, synchronous="quorum", sync_quorum=1)


def lagging(name: str, at: float, *, receive: int, replay: int) -> Observation:
    """A replica that has received ``receive`` but replayed only ``replay``."""
    return replace(replica(name, at, lsn=receive, wal=LOST), replay_lsn=replay)


# --------------------------------------------------------------------------- stray promotion


def test_a_stray_promotion_that_lacks_the_primarys_writes_is_fenced_not_adopted() -> None:
    sim = Sim()
    at = sim.warm()
    ahead = BASE_LSN + 4 * MB
    sim.step(at + 0.2, primary("pg1", at + 0.2, lsn=ahead), replica("pg2", at + 0.2, lsn=ahead),
             replica("pg3", at + 0.2))
    # pg3 forked from timeline 1 at BASE_LSN: the 4 MB pg1 wrote since are not on it.
    stray = primary("pg3", at + 0.4, tl=2, history=(TimelineSwitch(1, BASE_LSN),))
    d = sim.step(at + 0.4, primary("pg1", at + 0.4, lsn=ahead), replica("pg2", at + 0.4,
                 lsn=ahead), stray)
    assert sim.state.primary == "pg1"
    assert [f.node for f in fences(d)] == ["pg3"] and sim.state.fenced == {"pg3"}
    (event,) = [e for e in d.events if e.kind == "stray_primary"]
    assert event.severity == "critical" and "0/3400000" in event.message
    assert not any(a for a in d.actions if getattr(a, "node", None) == "pg1")


def test_a_newcomer_holding_all_of_the_primarys_wal_replaces_it() -> None:
    sim = Sim()
    at = sim.warm()
    newcomer = primary("pg2", at + 0.2, tl=2, history=(TimelineSwitch(1, BASE_LSN),))
    d = sim.step(at + 0.2, primary("pg1", at + 0.2), newcomer, replica("pg3", at + 0.2))
    assert sim.state.primary == "pg2"
    assert [f.node for f in fences(d)] == ["pg1"]


def test_a_newcomer_in_maintenance_or_with_an_unreadable_history_is_not_adopted() -> None:
    for newcomer, why in (
        (primary("pg3", 1.0, tl=2, history=()), "does not include"),
        (replace(primary("pg3", 1.0, tl=2), history=None), "cannot be read"),
        (primary("pg3", 1.0, tl=2), "in maintenance"),
    ):
        sim = Sim()
        sim.warm()
        if why == "in maintenance":
            sim.request(SetMaintenance("pg3", True))
        d = sim.step(1.0, primary("pg1", 1.0), replica("pg2", 1.0), newcomer)
        assert sim.state.primary == "pg1", why
        assert [f.node for f in fences(d)] == ["pg3"], why
        assert any(why in e.message for e in d.events if e.kind == "stray_primary"), why


def test_with_the_primary_down_an_async_newcomer_is_adopted_but_quorum_mode_checks_it() -> None:
    # Asynchronous: adopting the newcomer is what a failover would have done.
    sim = Sim()
    at = sim.warm()
    stray = primary("pg3", at + 0.2, tl=2, history=(TimelineSwitch(1, BASE_LSN - MB),))
    sim.step(at + 0.2, down("pg1", at + 0.2), replica("pg2", at + 0.2), stray)
    sim.step(at + 0.4, down("pg1", at + 0.4), replica("pg2", at + 0.4), stray)
    assert sim.state.primary == "pg3"
    # Quorum mode: pg2, a synchronous member, holds more WAL than the newcomer.
    sim = Sim(settings=QUORUM)
    at = 0.0
    for i in range(4):
        at = i * 0.2
        sim.step(at, replace(primary("pg1", at), synchronous_standby_names="ANY 1 (pg2, pg3)"),
                 replica("pg2", at), replica("pg3", at))
    d = sim.step(at + 0.2, down("pg1", at + 0.2), replica("pg2", at + 0.2), stray)
    assert sim.state.primary == "pg1" and "pg3" in sim.state.fenced
    assert "stray_primary" in kinds(d.events)


# --------------------------------------------------------------------------- replay held back


def test_among_equally_advanced_candidates_the_least_held_back_replay_wins() -> None:
    sim = Sim()
    sim.warm()
    top = BASE_LSN + MB
    ranking = rank_candidates(
        sim.state,
        view(1.0, down("pg1", 1.0), lagging("pg2", 1.0, receive=top, replay=BASE_LSN),
             lagging("pg3", 1.0, receive=top, replay=top)),
        SPECS,
        SETTINGS,
    )
    assert [c.node for c in ranking] == ["pg3", "pg2"]
    assert ranking[1].unreplayed_bytes == MB and "unreplayed" in ranking[1].describe()
    paused = replace(lagging("pg3", 1.0, receive=top, replay=top), replay_paused=True)
    ranking = rank_candidates(
        sim.state,
        view(1.0, down("pg1", 1.0), lagging("pg2", 1.0, receive=top, replay=BASE_LSN), paused),
        SPECS,
        SETTINGS,
    )
    assert [c.node for c in ranking] == ["pg2", "pg3"]
    # More WAL still wins: replay can be unblocked, missing WAL cannot be made up.
    ranking = rank_candidates(
        sim.state,
        view(1.0, down("pg1", 1.0), lagging("pg2", 1.0, receive=top + 1, replay=BASE_LSN),
             lagging("pg3", 1.0, receive=top, replay=top)),
        SPECS,
        SETTINGS,
    )
    assert ranking[0].node == "pg2"


def crashed(sim: Sim, at: float, pg2: Observation | None = None) -> list[Promote]:
    d = sim.step(at, down("pg1", at), pg2 or replica("pg2", at, wal=LOST),
                 replica("pg3", at, wal=LOST))
    return promotes(d)


def test_an_abandoned_promote_in_sight_is_withdrawn_by_its_driver_before_another() -> None:
    settings = replace(SETTINGS, cooldown_s=0.0, rejoin_nodes=frozenset({"pg2", "pg3"}))
    sim = Sim(settings=settings)
    at = sim.warm()
    sent: list[Promote] = []
    for i in range(5):
        sent += crashed(sim, at + 0.2 * (i + 1))
    assert [p.node for p in sent] == ["pg2"]
    started = sim.state.in_flight.started_at  # type: ignore[union-attr]
    t = started + settings.promote_timeout_s + 0.1
    assert [p.node for p in crashed(sim, t)] == ["pg2"]  # re-driven once
    t += settings.promote_timeout_s + 0.1
    d = sim.step(t, down("pg1", t), replica("pg2", t, wal=LOST), replica("pg3", t, wal=LOST))
    (cancel,) = actions_of(d, CancelPromote)
    assert cancel.node == "pg2" and promotes(d) == []
    assert sim.state.health("pg2").maybe_promoted
    # While it is withdrawn, nothing else is promoted, whatever the cool-down.
    assert crashed(sim, t + 0.2) == []
    sim.report(ActionOutcome(cancel, OutcomeStatus.SUCCEEDED, "restarted"), t + 0.3)
    assert not sim.state.health("pg2").maybe_promoted
    later: list[Promote] = []
    for i in range(5):
        later += crashed(sim, t + 0.4 + 0.2 * i)
    assert [p.node for p in later] == ["pg3"]


def test_a_failed_withdrawal_keeps_the_next_failover_blocked() -> None:
    sim = Sim()
    sim.warm()
    cancel = CancelPromote("pg2", "test")
    sim.state = replace(sim.state, nodes={**sim.state.nodes, "pg2": replace(
        sim.state.health("pg2"), maybe_promoted=True)})
    d = sim.report(ActionOutcome(cancel, OutcomeStatus.FAILED, "pg_ctl: timed out"), 1.0)
    assert kinds(d.events) == ["promote_cancel_failed"] and sim.state.health("pg2").maybe_promoted


# --------------------------------------------------------------------------- restarts


def resumed(kind: Operation, candidate: str = "pg2") -> Sim:
    flight = FailoverInFlight(candidate, "pg1", -5.0, 1, None, kind=kind, resumed=True)
    return Sim(state=initial_state(SPECS, known_primary="pg1", in_flight=flight))


def test_a_failover_left_unfinished_is_redriven_to_its_candidate_at_once() -> None:
    sim = resumed(Operation.FAILOVER)
    d = sim.step(0.0, down("pg1", 0.0), replica("pg2", 0.0, wal=LOST), replica("pg3", 0.0))
    assert [p.node for p in promotes(d)] == ["pg2"]
    assert "failover_redriven" in kinds(d.events)
    # Completed as usual once seen.
    d = sim.step(0.2, down("pg1", 0.2), primary("pg2", 0.2, tl=2), replica("pg3", 0.2))
    assert sim.state.primary == "pg2" and "failover_completed" in kinds(d.events)


def test_a_redrive_that_fails_outright_keeps_the_earlier_promote_in_flight() -> None:
    sim = resumed(Operation.FAILOVER)
    d = sim.step(0.0, down("pg1", 0.0), replica("pg2", 0.0), replica("pg3", 0.0))
    (redrive,) = promotes(d)
    d = sim.report(ActionOutcome(redrive, OutcomeStatus.FAILED, "connection refused"), 0.1)
    assert kinds(d.events) == ["promote_redrive_failed"]
    flight = sim.state.in_flight
    assert flight is not None and flight.candidate == "pg2"
    # The earlier promote may still land: no other candidate while it is in flight.
    d = sim.step(0.3, down("pg1", 0.3), replica("pg2", 0.3), replica("pg3", 0.3))
    assert promotes(d) == []


def test_an_unfinished_failover_waits_while_its_candidate_is_unseen_or_unfit() -> None:
    sim = resumed(Operation.FAILOVER)
    assert crashed(sim, 0.0, down("pg2", 0.0)) == []
    sim = resumed(Operation.FAILOVER)
    d = sim.step(0.0, primary("pg1", 0.0), replica("pg2", 0.0), replica("pg3", 0.0))
    assert promotes(d) == []  # pg1 takes writes again: fenced first, never two primaries


def test_a_switchover_left_unfinished_with_the_target_a_replica_lifts_the_fence() -> None:
    sim = resumed(Operation.SWITCHOVER)
    d = sim.step(0.0, primary("pg1", 0.0, read_only=True), replica("pg2", 0.0),
                 replica("pg3", 0.0))
    (unfence,) = actions_of(d, Unfence)
    assert unfence.node == "pg1" and sim.state.in_flight is None
    (settled,) = [e for e in d.events if e.kind == "switchover_settled"]
    assert settled.details["outcome"] == "not_promoted"
    assert sim.state.primary == "pg1" and promotes(d) == []


def test_a_switchover_left_unfinished_with_the_target_promoted_stands() -> None:
    sim = resumed(Operation.SWITCHOVER)
    d = sim.step(0.0, primary("pg1", 0.0, read_only=True), primary("pg2", 0.0, tl=2),
                 replica("pg3", 0.0))
    assert sim.state.primary == "pg2" and "pg1" in sim.state.fenced
    assert [e.details["outcome"] for e in d.events if e.kind == "switchover_settled"] == [
        "promoted"
    ]


def test_a_read_only_primary_with_nothing_in_flight_is_reported_with_the_way_out() -> None:
    sim = Sim()
    at = sim.warm()
    d = sim.step(at + 0.2, primary("pg1", at + 0.2, read_only=True), replica("pg2", at + 0.2),
                 replica("pg3", at + 0.2))
    (event,) = [e for e in d.events if e.kind == "primary_read_only"]
    assert event.severity == "critical" and "RESET default_transaction_read_only" in event.message


# --------------------------------------------------------------------------- identity


def identified(name: str, obs: Observation, identifier: int) -> Observation:
    assert obs.node == name
    return replace(obs, system_identifier=identifier)


def test_the_identity_is_learnt_from_a_majority_and_a_foreign_node_is_never_touched() -> None:
    assert learn_identity(view(0.0, identified("pg1", primary("pg1", 0.0), 7),
                               identified("pg2", replica("pg2", 0.0), 9)), ["pg1", "pg2", "pg3"]
                          ) is None
    sim = Sim()
    for i in range(4):
        at = i * 0.2
        d = sim.step(
            at,
            identified("pg1", primary("pg1", at), 7),
            identified("pg2", replica("pg2", at), 7),
            identified("pg3", replica("pg3", at), 7),
        )
        if i == 0:
            assert "cluster_identified" in kinds(d.events)
    assert sim.state.system_identifier == 7
    # pg2's DSN now reaches another cluster's writable primary on a higher timeline.
    foreign = identified("pg2", primary("pg2", 1.0, tl=2), 8)
    for i in range(10):
        at = 1.0 + 0.2 * i
        d = sim.step(at, identified("pg1", primary("pg1", at), 7), replace(foreign, at=at),
                     identified("pg3", replica("pg3", at), 7))
        assert d.actions == () or all(getattr(a, "node", "") != "pg2" for a in d.actions)
        assert fences(d) == []
    assert sim.state.primary == "pg1" and sim.state.fenced == frozenset()
    (event,) = [e for e in sim.all_events() if e.kind == "foreign_node"]
    assert event.node == "pg2" and event.severity == "critical"
    assert sim.request(ManualFailover("pg2", force=True)).refused is not None


def test_a_pinned_identity_makes_every_other_cluster_foreign() -> None:
    sim = Sim(settings=replace(SETTINGS, system_identifier=5))
    for i in range(6):
        at = i * 0.2
        d = sim.step(
            at,
            identified("pg1", primary("pg1", at), 7),
            identified("pg2", primary("pg2", at, tl=2), 7),
            identified("pg3", replica("pg3", at), 7),
        )
        assert d.actions == ()
    assert sim.state.primary is None
    assert len([e for e in sim.all_events() if e.kind == "foreign_node"]) == 3


# --------------------------------------------------------------------------- visibility


def test_a_failover_held_back_says_why_and_the_way_out_and_clears_when_it_runs() -> None:
    sim = Sim(settings=replace(SETTINGS, cooldown_s=300.0))
    sim.state = replace(sim.state, last_failover_at=0.0)
    at = sim.warm()
    assert sim.state.failover_blocked is None
    for i in range(5):
        crashed(sim, at + 0.2 * (i + 1))
    blocked = sim.state.failover_blocked
    assert blocked is not None and blocked.reason == "cooldown"
    assert "cool-down" in blocked.message and "hacontrol failover --to" in blocked.way_out
    sim.request(ManualFailover("pg2"))
    crashed(sim, at + 2.0)
    assert sim.state.failover_blocked is None  # a failover runs: nothing held back
    paused = Sim()
    paused.warm()
    paused.request(Pause())
    for i in range(5):
        crashed(paused, 1.0 + 0.2 * i)
    assert paused.state.failover_blocked is not None
    assert paused.state.failover_blocked.way_out == "hacontrol resume"
