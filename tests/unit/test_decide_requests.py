"""Unit tests of operator requests, planned switchover outcomes, failback and rejoin."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hacontrol.core.actions import ActionOutcome, Decision, Promote, RunHook, Switchover
from hacontrol.core.candidates import preferred_node
from hacontrol.core.model import Observation
from hacontrol.core.requests import (
    ManualFailover,
    NodeRejoined,
    Pause,
    Resume,
    SetMaintenance,
    SwitchoverRequest,
)
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings, FailoverMode
from hacontrol.core.state import Operation
from hacontrol.io.journal import Journal
from tests.unit.test_decide_support import (
    BASE_LSN,
    MB,
    SETTINGS,
    SPECS,
    Sim,
    down,
    fences,
    kinds,
    primary,
    promotes,
    receiver,
    replica,
    repoints,
    spec,
)

MANUAL = replace(SETTINGS, mode=FailoverMode.MANUAL)


def switchovers(decision: Decision) -> list[Switchover]:
    return [a for a in decision.actions if isinstance(a, Switchover)]


def hooks(decision: Decision) -> list[RunHook]:
    return [a for a in decision.actions if isinstance(a, RunHook)]


def refused_code(decision: Decision) -> str | None:
    return decision.refused.code if decision.refused else None


def primary_lost(sim: Sim, start: float, rounds: int = 5, **lsns: int) -> float:
    """Rounds with pg1 down and the replicas without a WAL receiver."""
    at = start
    for i in range(rounds):
        at = start + i * 0.2
        sim.step(
            at,
            down("pg1", at),
            replica("pg2", at, lsn=lsns.get("pg2", BASE_LSN), wal=None),
            replica("pg3", at, lsn=lsns.get("pg3", BASE_LSN), wal=None),
        )
    return at


def manual_sim() -> Sim:
    """Manual mode, warmed up, then pg1 lost (detected, nothing promoted)."""
    sim = Sim(settings=MANUAL)
    sim.warm()
    primary_lost(sim, 1.0)
    assert not any(isinstance(a, Promote) for a in sim.all_actions())
    return sim


# --------------------------------------------------------------------------- pause, maintenance


def test_pause_and_resume_are_idempotent_and_reported() -> None:
    sim = Sim()
    sim.warm()
    first = sim.request(Pause())
    assert sim.state.paused and kinds(first.events) == ["paused"]
    assert first.events[0].details["changed"] is True
    again = sim.request(Pause())
    assert again.refused is None and kinds(again.events) == ["paused"]
    assert again.events[0].details["changed"] is False
    resumed = sim.request(Resume())
    assert not sim.state.paused and kinds(resumed.events) == ["resumed"]
    assert kinds(sim.request(Resume()).events) == ["resumed"]


def test_maintenance_on_and_off_name_the_node() -> None:
    sim = Sim()
    sim.warm()
    on = sim.request(SetMaintenance("pg2", True))
    assert sim.state.maintenance == {"pg2"}
    assert [(e.kind, e.node) for e in on.events] == [("maintenance_on", "pg2")]
    assert sim.request(SetMaintenance("pg2", True)).events[0].details["changed"] is False
    off = sim.request(SetMaintenance("pg2", False))
    assert sim.state.maintenance == frozenset()
    assert [(e.kind, e.node) for e in off.events] == [("maintenance_off", "pg2")]


def test_maintenance_of_an_unknown_node_is_a_bad_request() -> None:
    sim = Sim()
    sim.warm()
    before = sim.state
    d = sim.request(SetMaintenance("pg9", True))
    assert d.refused is not None and d.refused.bad_request
    assert "pg9 is not a configured node" in d.refused.message
    assert kinds(d.events) == ["request_refused"] and d.actions == ()
    assert sim.state == before


def test_pause_blocks_a_failover_that_would_otherwise_happen() -> None:
    sim = Sim()
    sim.warm()
    sim.request(Pause())
    primary_lost(sim, 1.0, rounds=8)
    assert sim.all_actions() == []
    assert "failover_blocked" in kinds(sim.all_events())
    sim.request(Resume())
    d = sim.step(
        3.0, down("pg1", 3.0), replica("pg2", 3.0, wal=None), replica("pg3", 3.0, wal=None)
    )
    assert [p.node for p in promotes(d)] == ["pg2"]


def test_the_journal_replays_flags_set_by_requests(tmp_path: Path) -> None:
    sim = Sim()
    sim.warm()
    sim.state = replace(sim.state, fenced=frozenset({"pg3"}))
    for request in (
        Pause(),
        SetMaintenance("pg2", True),
        SetMaintenance("pg3", True),
        SetMaintenance("pg3", False),
        NodeRejoined("pg3"),
    ):
        sim.request(request)
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("node_fenced", node="pg3")
    for event in sim.all_events():
        journal.append(event.kind, node=event.node, message=event.message)
    recovered = journal.recover()
    assert recovered.paused == sim.state.paused is True
    assert recovered.maintenance == sim.state.maintenance == {"pg2"}
    assert recovered.fenced == sim.state.fenced == frozenset()
    assert recovered.primary == "pg1"


# --------------------------------------------------------------------------- manual failover


def test_manual_failover_in_manual_mode_promotes_and_completes() -> None:
    sim = manual_sim()
    d = sim.request(ManualFailover("pg3"))
    assert d.refused is None
    (p,) = promotes(d)
    assert p.node == "pg3" and p.old_primary == "pg1"
    assert "operator requested a manual failover to pg3" in p.reason
    assert {c.node for c in p.candidates} == {"pg2", "pg3"}
    assert kinds(d.events) == ["failover_started"]
    assert d.events[0].details["requested_by"] == "operator"
    assert d.events[0].details["forced"] is False
    flight = sim.state.in_flight
    assert flight is not None and flight.kind is Operation.MANUAL_FAILOVER
    # while in flight: no other failover, no second request
    assert refused_code(sim.request(ManualFailover("pg2", force=True))) == "in_flight"
    done = sim.step(2.2, down("pg1", 2.2), replica("pg2", 2.2, wal=None), primary("pg3", 2.2, tl=2))
    assert "failover_completed" in kinds(done.events)
    assert sim.state.primary == "pg3" and sim.state.in_flight is None
    assert "pg1" in sim.state.fenced
    assert [r.node for r in repoints(done)] == ["pg2"]
    assert [h.env["HACONTROL_REASON"] for h in hooks(done)] == ["manual_failover"]


def test_manual_failover_is_refused_while_a_writable_primary_is_seen_even_forced() -> None:
    sim = Sim()
    sim.warm()
    for force in (False, True):
        d = sim.request(ManualFailover("pg2", force=force))
        assert refused_code(d) == "writable_primary"
        assert "use a switchover" in d.events[0].message
        assert d.actions == () and kinds(d.events) == ["request_refused"]
    # a fenced node that still accepts writes counts too
    sim.state = replace(sim.state, primary=None, fenced=frozenset({"pg1"}))
    assert refused_code(sim.request(ManualFailover("pg2", force=True))) == "writable_primary"


def test_manual_failover_to_an_unknown_node_is_a_bad_request() -> None:
    sim = manual_sim()
    d = sim.request(ManualFailover("pg7", force=True))
    assert d.refused is not None and d.refused.bad_request and d.refused.code == "unknown_node"


def test_manual_failover_to_the_primary_or_a_read_only_primary_is_refused_even_forced() -> None:
    sim = manual_sim()
    assert refused_code(sim.request(ManualFailover("pg1", force=True))) == "not_eligible"
    sim.step(
        3.0, down("pg1", 3.0), replica("pg2", 3.0, wal=None), primary("pg3", 3.0, read_only=True)
    )
    d = sim.request(ManualFailover("pg3", force=True))
    assert refused_code(d) == "not_eligible" and "read-only primary" in d.events[0].message


def _lagging(sim: Sim) -> None:
    primary_lost(sim, 2.0, pg3=BASE_LSN - 40 * MB)


def _priority_zero(sim: Sim) -> None:
    sim.specs = (spec("pg1"), spec("pg2"), spec("pg3", priority=0))


def _maintenance(sim: Sim) -> None:
    sim.request(SetMaintenance("pg3", True))


def _fenced(sim: Sim) -> None:
    sim.state = replace(sim.state, fenced=sim.state.fenced | {"pg3"})


def _unhealthy(sim: Sim) -> None:
    sim.step(2.0, down("pg1", 2.0), replica("pg2", 2.0, wal=None), down("pg3", 2.0))
    sim.step(2.2, down("pg1", 2.2), replica("pg2", 2.2, wal=None), replica("pg3", 2.2, wal=None))


def _unreachable(sim: Sim) -> None:
    sim.step(2.0, down("pg1", 2.0), replica("pg2", 2.0, wal=None), down("pg3", 2.0))


def _backed_off(sim: Sim) -> None:
    health = sim.state.health("pg3")
    nodes = {**sim.state.nodes, "pg3": replace(health, backoff_until=100.0)}
    sim.state = replace(sim.state, nodes=nodes)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (_lagging, "pg3 is 40 MiB behind (max 16 MiB); use --force to promote pg3 anyway"),
        (_priority_zero, "pg3 has priority 0 (never promoted)"),
        (_maintenance, "pg3 is in maintenance"),
        (_fenced, "pg3 is fenced (needs rejoin)"),
        (_unhealthy, "pg3 is not healthy yet (1/3 healthy probes)"),
        (_unreachable, "pg3 is unreachable"),
        (_backed_off, "pg3 is backed off after a failed promote"),
    ],
)
def test_manual_failover_refusals_can_be_forced(setup: object, message: str) -> None:
    sim = manual_sim()
    assert callable(setup)
    setup(sim)
    before = sim.state
    d = sim.request(ManualFailover("pg3"))
    assert refused_code(d) == "not_eligible" and d.actions == ()
    assert d.refused is not None and message in d.refused.message
    assert d.events[0].message == d.refused.message
    assert sim.state == before
    forced = sim.request(ManualFailover("pg3", force=True))
    assert forced.refused is None
    (p,) = promotes(forced)
    assert p.node == "pg3" and "forced over" in p.reason and message.split(";")[0] in p.reason
    event = forced.events[0]
    assert event.kind == "failover_started" and event.details["forced"] is True
    assert any(message.split(";")[0] in o for o in event.details["overrides"])
    assert sim.state.in_flight is not None and sim.state.in_flight.forced


def test_manual_failover_works_while_paused_and_in_cooldown_and_finishes_its_steps() -> None:
    sim = manual_sim()
    sim.state = replace(sim.state, last_failover_at=2.0)  # in cool-down
    sim.request(Pause())
    d = sim.request(ManualFailover("pg2"))
    assert [p.node for p in promotes(d)] == ["pg2"]
    # the old primary comes back writable before the promote lands: fenced, paused or not
    back = sim.step(2.2, primary("pg1", 2.2), replica("pg2", 2.2, wal=None), replica("pg3", 2.2))
    assert [f.node for f in fences(back)] == ["pg1"]
    done = sim.step(
        2.4, primary("pg1", 2.4, read_only=True), primary("pg2", 2.4, tl=2), replica("pg3", 2.4)
    )
    assert "failover_completed" in kinds(done.events)
    assert [r.node for r in repoints(done)] == ["pg3"] and len(hooks(done)) == 1
    # afterwards, paused again means no actions, except fencing a writable old primary
    later = sim.step(
        2.6, primary("pg1", 2.6), primary("pg2", 2.6, tl=2), replica("pg3", 2.6, wal=None)
    )
    assert [f.node for f in fences(later)] == ["pg1"] and len(later.actions) == 1
    assert "pg1" in sim.state.fenced


def test_manual_failover_with_no_known_primary() -> None:
    sim = Sim(settings=MANUAL)
    for i in range(4):
        at = i * 0.2
        sim.step(at, down("pg1", at), replica("pg2", at, wal=None), replica("pg3", at, wal=None))
    assert sim.state.primary is None and "no_primary" in kinds(sim.all_events())
    d = sim.request(ManualFailover("pg2"))
    (p,) = promotes(d)
    assert p.old_primary == ""
    done = sim.step(1.0, down("pg1", 1.0), primary("pg2", 1.0, tl=2), replica("pg3", 1.0))
    assert sim.state.primary == "pg2" and sim.state.fenced == frozenset()
    assert "failover_completed" in kinds(done.events)


def test_forced_failover_to_a_fenced_node_unfences_it_on_completion() -> None:
    sim = manual_sim()
    _fenced(sim)
    sim.request(ManualFailover("pg3", force=True))
    sim.step(2.2, down("pg1", 2.2), replica("pg2", 2.2, wal=None), primary("pg3", 2.2, tl=2))
    assert sim.state.primary == "pg3"
    assert sim.state.fenced == {"pg1"}


def test_a_failed_manual_promote_is_backed_off_like_an_automatic_one() -> None:
    sim = manual_sim()
    (p,) = promotes(sim.request(ManualFailover("pg2")))
    d = sim.report(ActionOutcome(p, OutcomeStatus.FAILED, "cannot connect"), 2.1)
    assert kinds(d.events) == ["failover_failed"] and sim.state.in_flight is None
    again = sim.request(ManualFailover("pg2"))
    assert refused_code(again) == "not_eligible" and "backed off" in again.events[0].message


# --------------------------------------------------------------------------- switchover


def test_switchover_to_the_best_candidate() -> None:
    sim = Sim()
    sim.warm()
    sim.step(1.0, primary("pg1", 1.0), replica("pg2", 1.0), replica("pg3", 1.0, lsn=BASE_LSN + 10))
    d = sim.request(SwitchoverRequest())
    (s,) = switchovers(d)
    assert (s.old_primary, s.target, s.node) == ("pg1", "pg3", "pg3")
    assert "operator requested a switchover from pg1 to pg3 (best candidate" in s.reason
    assert kinds(d.events) == ["switchover_started"] and d.events[0].node == "pg3"
    flight = sim.state.in_flight
    assert flight is not None and flight.kind is Operation.SWITCHOVER and flight.old_timeline == 1


def _lagging_replica(sim: Sim) -> None:
    sim.step(
        1.0, primary("pg1", 1.0, lsn=BASE_LSN + 40 * MB), replica("pg2", 1.0), replica("pg3", 1.0)
    )


def _not_streaming(sim: Sim) -> None:
    sim.step(
        1.0, primary("pg1", 1.0), replica("pg2", 1.0, wal=receiver("pg3")), replica("pg3", 1.0)
    )


def _silent(sim: Sim) -> None:
    sim.step(
        1.0, primary("pg1", 1.0), replica("pg2", 1.0, wal=receiver(age=9.0)), replica("pg3", 1.0)
    )


def _primary_read_only(sim: Sim) -> None:
    sim.step(1.0, primary("pg1", 1.0, read_only=True), replica("pg2", 1.0), replica("pg3", 1.0))


def _primary_failing(sim: Sim) -> None:
    sim.step(1.0, down("pg1", 1.0), replica("pg2", 1.0), replica("pg3", 1.0))


def _paused(sim: Sim) -> None:
    sim.request(Pause())


def _in_flight(sim: Sim) -> None:
    sim.request(SwitchoverRequest("pg3"))


@pytest.mark.parametrize(
    ("setup", "to", "code", "message"),
    [
        (_lagging_replica, "pg2", "not_eligible", "pg2 is 40 MiB behind (max 16 MiB)"),
        (_not_streaming, "pg2", "not_eligible", "pg2 streams from 127.0.0.1:5434, not from pg1"),
        (_silent, "pg2", "not_eligible", "pg2 has heard nothing from pg1 for 9.0 s"),
        (_primary_read_only, "pg2", "no_primary", "primary pg1 is read-only"),
        (_primary_failing, "pg2", "no_primary", "primary pg1 is unreachable"),
        (_maintenance, "pg3", "not_eligible", "pg3 cannot take over: in maintenance"),
        (_fenced, "pg3", "not_eligible", "pg3 cannot take over: fenced"),
        (_priority_zero, "pg3", "not_eligible", "pg3 cannot take over: priority 0"),
        (_paused, "pg2", "paused", "the controller is paused; resume it first"),
        (_in_flight, "pg2", "in_flight", "a switchover to pg3 is in flight"),
        (_in_flight, "pg9", "unknown_node", "pg9 is not a configured node"),
        (lambda sim: None, "pg1", "not_eligible", "pg1 is already the primary"),
    ],
)
def test_switchover_refusals(setup: object, to: str, code: str, message: str) -> None:
    sim = Sim()
    sim.warm()
    assert callable(setup)
    setup(sim)
    before = sim.state
    d = sim.request(SwitchoverRequest(to))
    assert d.refused is not None and d.refused.code == code, d.refused
    assert message in d.refused.message
    assert d.actions == () and kinds(d.events) == ["request_refused"]
    assert sim.state == before


def test_switchover_with_no_candidate_lists_every_node() -> None:
    sim = Sim()
    sim.warm()
    sim.step(1.0, primary("pg1", 1.0), replica("pg2", 1.0, wal=None), down("pg3", 1.0))
    d = sim.request(SwitchoverRequest())
    assert refused_code(d) == "no_candidate"
    assert d.refused is not None and "pg2" in d.refused.message and "pg3" in d.refused.message


def switchover_sim() -> tuple[Sim, Switchover]:
    sim = Sim()
    sim.warm()
    (s,) = switchovers(sim.request(SwitchoverRequest("pg2")))
    return sim, s


def test_a_switchover_procedure_seen_round_by_round_never_fails_over_or_fences() -> None:
    sim, s = switchover_sim()
    at = 1.0
    seen = []
    # 1: the old primary is fenced by the procedure (read-only)
    for _ in range(5):
        at += 0.2
        seen.append(
            sim.step(at, primary("pg1", at, read_only=True), replica("pg2", at), replica("pg3", at))
        )
    # 2: the old primary is stopped; the target catches up, not yet promoted
    for _ in range(10):
        at += 0.2
        seen.append(
            sim.step(
                at, down("pg1", at), replica("pg2", at, wal=None), replica("pg3", at, wal=None)
            )
        )
    assert all(d.actions == () for d in seen)
    assert sim.state.primary == "pg1" and sim.state.fenced == frozenset()
    assert not {"failover_started", "node_fenced"} & set(kinds(sim.all_events()))
    # 3: the target is promoted on a higher timeline: it is the primary, the hook runs
    at += 0.2
    promoted = sim.step(at, down("pg1", at), primary("pg2", at, tl=2), replica("pg3", at, wal=None))
    assert sim.state.primary == "pg2" and sim.state.in_flight is not None
    assert kinds(promoted.events) == ["switchover_promoted"]
    assert [h.env["HACONTROL_NEW_PRIMARY"] for h in hooks(promoted)] == ["pg2"]
    assert fences(promoted) == [] and repoints(promoted) == []
    # 4: the old primary restarts as a replica of the target
    at += 0.2
    rejoining = sim.step(
        at,
        replica("pg1", at, tl=2, wal=receiver("pg2")),
        primary("pg2", at, tl=2),
        replica("pg3", at, tl=2, wal=receiver("pg2")),
    )
    assert rejoining.actions == ()
    # 5: the shell reports success and that pg1 rejoined
    done = sim.report(
        ActionOutcome(s, OutcomeStatus.SUCCEEDED, "done", rejoined=frozenset({"pg1"})), at
    )
    assert kinds(done.events) == ["switchover_completed"] and done.events[0].node == "pg2"
    assert done.actions == ()  # the hook already ran
    assert sim.state.in_flight is None and sim.state.fenced == frozenset()
    assert sim.state.primary == "pg2"
    quiet = sim.step(
        at + 0.2,
        replica("pg1", at + 0.2, tl=2, wal=receiver("pg2")),
        primary("pg2", at + 0.2, tl=2),
        replica("pg3", at + 0.2, tl=2, wal=receiver("pg2")),
    )
    assert quiet.actions == ()


def test_switchover_success_reported_before_it_is_seen() -> None:
    sim, s = switchover_sim()
    d = sim.report(ActionOutcome(s, OutcomeStatus.SUCCEEDED, "done"), 1.0)
    assert kinds(d.events) == ["switchover_completed", "node_fenced"]
    assert d.events[1].node == "pg1"
    assert sim.state.primary == "pg2" and sim.state.fenced == {"pg1"}
    assert [h.env["HACONTROL_OLD_PRIMARY"] for h in hooks(d)] == ["pg1"]
    after = sim.step(
        1.2, primary("pg1", 1.2, read_only=True), primary("pg2", 1.2, tl=2), replica("pg3", 1.2)
    )
    assert sim.state.primary == "pg2" and sim.state.primary_timeline == 2
    assert fences(after) == []


def test_switchover_rolled_back_keeps_the_old_primary() -> None:
    sim, s = switchover_sim()
    sim.step(1.0, primary("pg1", 1.0, read_only=True), replica("pg2", 1.0), replica("pg3", 1.0))
    d = sim.report(ActionOutcome(s, OutcomeStatus.FAILED, "pg2 did not catch up in 5 s"), 1.1)
    assert kinds(d.events) == ["switchover_aborted"] and d.events[0].node == "pg1"
    assert sim.state.primary == "pg1" and sim.state.in_flight is None
    assert sim.state.fenced == frozenset()
    sim.step(1.2, primary("pg1", 1.2), replica("pg2", 1.2), replica("pg3", 1.2))
    retry = sim.request(SwitchoverRequest("pg2"))
    assert refused_code(retry) == "not_eligible" and "backed off" in retry.events[0].message


def test_switchover_failing_after_the_promote_was_seen_still_completes() -> None:
    sim, s = switchover_sim()
    sim.step(1.0, down("pg1", 1.0), primary("pg2", 1.0, tl=2), replica("pg3", 1.0))
    d = sim.report(ActionOutcome(s, OutcomeStatus.FAILED, "rejoin failed"), 1.1)
    assert kinds(d.events) == ["switchover_completed", "node_fenced"]
    assert sim.state.primary == "pg2" and sim.state.fenced == {"pg1"}


def test_switchover_uncertain_stays_in_flight_and_ignored_outcomes() -> None:
    sim, s = switchover_sim()
    d = sim.report(ActionOutcome(s, OutcomeStatus.UNCERTAIN, "lost track"), 1.0)
    assert kinds(d.events) == ["switchover_uncertain"] and sim.state.in_flight is not None
    stray = replace(s, target="pg3")
    ignored = sim.report(ActionOutcome(stray, OutcomeStatus.SUCCEEDED), 1.0)
    assert kinds(ignored.events) == ["switchover_outcome_ignored"]
    assert sim.state.primary == "pg1"


def test_a_writable_old_primary_after_the_target_is_promoted_is_fenced() -> None:
    sim, _ = switchover_sim()
    d = sim.step(1.0, primary("pg1", 1.0), primary("pg2", 1.0, tl=2), replica("pg3", 1.0))
    assert [f.node for f in fences(d)] == ["pg1"] and "pg1" in sim.state.fenced
    assert sim.state.primary == "pg2"


def test_a_switchover_in_flight_too_long_is_reported_then_abandoned() -> None:
    sim, _ = switchover_sim()
    limit = SETTINGS.switchover_timeout_s
    events = []
    for t in (10.0, limit + 1, limit + 2, 2 * limit + 1):
        events += kinds(
            sim.step(
                t, primary("pg1", t, read_only=True), replica("pg2", t), replica("pg3", t)
            ).events
        )
    # The old primary left read-only by the abandoned switchover is a visible outage.
    assert events == ["switchover_overdue", "switchover_abandoned", "primary_read_only"]
    assert sim.state.in_flight is None and sim.state.primary == "pg1"


def test_no_automatic_failover_while_a_switchover_runs() -> None:
    sim, _ = switchover_sim()
    primary_lost(sim, 1.0, rounds=20)
    assert not any(isinstance(a, Promote) for a in sim.all_actions())


# --------------------------------------------------------------------------- failback

FAILBACK = replace(SETTINGS, failback=True, failback_delay_s=10.0, cooldown_s=0.0)
PREFERRED = (spec("pg1", priority=200), spec("pg2"), spec("pg3"))


def failback_round(sim: Sim, at: float, pg1: Observation | None = None) -> Decision:
    """pg2 is primary on timeline 2; pg1 (preferred) and pg3 replicate from it."""
    return sim.step(
        at,
        pg1 or replica("pg1", at, tl=2, wal=receiver("pg2")),
        primary("pg2", at, tl=2),
        replica("pg3", at, tl=2, wal=receiver("pg2")),
    )


def failback_sim(settings: DecisionSettings = FAILBACK) -> Sim:
    sim = Sim(specs=PREFERRED, settings=settings)
    for i in range(4):
        failback_round(sim, i * 0.2)
    assert sim.state.primary == "pg2"
    return sim


def test_failback_after_the_delay() -> None:
    sim = failback_sim()
    assert "failback_pending" in kinds(sim.all_events())
    assert failback_round(sim, 9.0).actions == ()
    d = failback_round(sim, 10.5)
    (s,) = switchovers(d)
    assert (s.old_primary, s.target) == ("pg2", "pg1") and s.reason.startswith("failback:")
    assert sim.state.in_flight is not None and sim.state.in_flight.kind is Operation.FAILBACK
    assert kinds(d.events) == ["switchover_started"]
    assert failback_round(sim, 11.0).actions == ()  # one in flight


def test_failback_clock_restarts_when_the_preferred_node_stops_being_ready() -> None:
    sim = failback_sim()
    failback_round(sim, 5.0, pg1=replica("pg1", 5.0, tl=2, wal=None))
    for t in (5.2, 5.4, 5.6, 12.0):
        assert failback_round(sim, t).actions == ()
    assert switchovers(failback_round(sim, 15.7))


@pytest.mark.parametrize(
    "settings",
    [
        replace(FAILBACK, mode=FailoverMode.SEMI_AUTOMATIC),
        replace(FAILBACK, mode=FailoverMode.MANUAL),
        replace(FAILBACK, failback=False),
    ],
)
def test_no_failback_outside_automatic_mode_or_when_off(settings: DecisionSettings) -> None:
    sim = failback_sim(settings)
    for t in range(1, 30, 3):
        assert failback_round(sim, float(t)).actions == ()


def test_no_failback_while_paused_in_cooldown_or_in_maintenance() -> None:
    sim = failback_sim()
    sim.request(Pause())
    assert failback_round(sim, 20.0).actions == ()
    sim.request(Resume())
    sim.state = replace(sim.state, last_failover_at=15.0)
    sim.settings = replace(FAILBACK, cooldown_s=100.0)
    assert failback_round(sim, 30.0).actions == ()
    sim.request(SetMaintenance("pg1", True))
    assert failback_round(sim, 200.0).actions == ()
    sim.request(SetMaintenance("pg1", False))
    assert failback_round(sim, 201.0).actions == ()  # the delay starts again
    assert switchovers(failback_round(sim, 212.0))


def test_failback_aborted_backs_the_preferred_node_off() -> None:
    sim = failback_sim()
    (s,) = switchovers(failback_round(sim, 11.0))
    sim.report(ActionOutcome(s, OutcomeStatus.FAILED, "did not catch up"), 11.5)
    assert failback_round(sim, 30.0).actions == ()
    assert failback_round(sim, 75.0).actions == ()  # backoff over: the delay starts
    assert switchovers(failback_round(sim, 85.0))


def test_preferred_node_is_the_unique_highest_priority() -> None:
    assert preferred_node(PREFERRED) == "pg1"
    assert preferred_node(SPECS) is None  # a tie
    assert preferred_node((spec("pg1", priority=0),)) is None
    assert preferred_node(()) is None


# --------------------------------------------------------------------------- rejoin


def test_a_fenced_node_stays_fenced_until_rejoined() -> None:
    sim = manual_sim()
    sim.request(ManualFailover("pg2"))
    sim.step(2.2, down("pg1", 2.2), primary("pg2", 2.2, tl=2), replica("pg3", 2.2))
    assert "pg1" in sim.state.fenced
    for i in range(10):  # back as a healthy replica of the new primary: still fenced
        at = 3.0 + i * 0.2
        sim.step(
            at,
            replica("pg1", at, tl=2, wal=receiver("pg2")),
            primary("pg2", at, tl=2),
            replica("pg3", at, tl=2, wal=receiver("pg2")),
        )
    assert "pg1" in sim.state.fenced
    d = sim.request(NodeRejoined("pg1"))
    assert [(e.kind, e.node) for e in d.events] == [("node_rejoined", "pg1")]
    assert sim.state.fenced == frozenset()
    assert kinds(sim.request(NodeRejoined("pg1")).events) == ["node_rejoined"]


def test_rejoin_is_refused_for_a_writable_primary_or_an_unknown_node() -> None:
    sim = manual_sim()
    sim.request(ManualFailover("pg2"))
    sim.step(2.2, primary("pg1", 2.2), primary("pg2", 2.2, tl=2), replica("pg3", 2.2))
    d = sim.request(NodeRejoined("pg1"))
    assert refused_code(d) == "not_fenced_writable" and "pg1" in sim.state.fenced
    bad = sim.request(NodeRejoined("nope"))
    assert bad.refused is not None and bad.refused.bad_request


def test_switchover_reporting_rejoined_unfences_a_node_fenced_meanwhile() -> None:
    sim, s = switchover_sim()
    sim.step(1.0, primary("pg1", 1.0), primary("pg2", 1.0, tl=2), replica("pg3", 1.0))
    assert "pg1" in sim.state.fenced
    d = sim.report(
        ActionOutcome(s, OutcomeStatus.SUCCEEDED, "ok", rejoined=frozenset({"pg1"})), 1.1
    )
    assert kinds(d.events) == ["switchover_completed", "node_rejoined"]
    assert sim.state.fenced == frozenset()


def test_requests_are_pure() -> None:
    sim = manual_sim()
    view = sim.last_view
    assert view is not None
    from hacontrol.core.handle import handle_request

    state = sim.state
    first = handle_request(state, view, sim.specs, sim.settings, ManualFailover("pg2"))
    second = handle_request(state, view, sim.specs, sim.settings, ManualFailover("pg2"))
    assert first == second and sim.state is state
    assert [type(a) for a in first.actions] == [Promote]
