"""Unit tests of the decision core, one group per rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hacontrol.core.actions import ActionOutcome, Decision, Fence, Promote, Repoint, RunHook
from hacontrol.core.candidates import rank_candidates
from hacontrol.core.confirm import confirm_failure
from hacontrol.core.events import Severity
from hacontrol.core.model import Observation, Role
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.round import decide
from hacontrol.core.settings import DecisionSettings, FailoverMode
from hacontrol.core.state import initial_state
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
    view,
)

LOST = None  # a replica whose WAL receiver row is gone (primary crashed)


def crash_rounds(
    sim: Sim, start: float, rounds: int, *, lsn2: int = BASE_LSN, lsn3: int = BASE_LSN
) -> list[Promote]:
    """``rounds`` rounds with pg1 down and both replicas without a receiver."""
    found: list[Promote] = []
    for i in range(rounds):
        at = start + i * 0.2
        d = sim.step(
            at,
            down("pg1", at),
            replica("pg2", at, lsn=lsn2, wal=LOST),
            replica("pg3", at, lsn=lsn3, wal=LOST),
        )
        found += promotes(d)
    return found


# --------------------------------------------------------------------------- start-up


def test_healthy_cluster_adopts_the_primary_and_stays_quiet() -> None:
    sim = Sim()
    first = sim.healthy(0.0)
    assert sim.state.primary == "pg1"
    assert kinds(first.events) == ["primary_adopted"]
    assert first.actions == ()
    for i in range(1, 50):
        d = sim.healthy(i * 0.2)
        assert d.actions == () and d.events == ()


# --------------------------------------------------------------------------- rule 1


@pytest.mark.parametrize(
    ("failure_times", "failed"),
    [
        ([1.0, 1.2], False),  # too few
        ([1.0, 1.2, 1.4], False),  # enough probes, window not spanned (0.4 s < 0.5 s)
        ([1.0, 1.2, 1.4, 1.6], True),  # 4 probes over 0.6 s
        ([1.0, 1.5, 1.5], True),  # exactly the window, 3 probes
        ([1.0, 3.0], False),  # window spanned, too few probes
    ],
)
def test_sustained_failure_needs_count_and_window(failure_times: list[float], failed: bool) -> None:
    sim = Sim()
    sim.warm()
    for at in failure_times:
        d = sim.step(
            at, down("pg1", at), replica("pg2", at, wal=LOST), replica("pg3", at, wal=LOST)
        )
    assert ("primary_failed" in kinds(sim.all_events())) is failed
    assert bool(promotes(d)) is failed


def test_one_success_resets_the_failure_count() -> None:
    sim = Sim()
    sim.warm()
    times = [1.0, 1.2, 1.4]
    for at in times:
        sim.step(at, down("pg1", at), replica("pg2", at, wal=LOST), replica("pg3", at, wal=LOST))
    sim.healthy(1.6)
    for at in (1.8, 2.0, 2.2):
        d = sim.step(
            at, down("pg1", at), replica("pg2", at, wal=LOST), replica("pg3", at, wal=LOST)
        )
        assert promotes(d) == []
    assert sim.state.health("pg1").consecutive_failures == 3
    d = sim.step(
        2.4, down("pg1", 2.4), replica("pg2", 2.4, wal=LOST), replica("pg3", 2.4, wal=LOST)
    )
    assert len(promotes(d)) == 1


def test_primary_reporting_itself_a_replica_counts_as_failed() -> None:
    sim = Sim()
    sim.warm()
    found = []
    for i in range(5):
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            replica("pg1", at, wal=LOST),
            replica("pg2", at, wal=LOST),
            replica("pg3", at, wal=LOST),
        )
        found += promotes(d)
    assert [p.node for p in found] == ["pg2"]


# --------------------------------------------------------------------------- rule 2


def test_crash_confirmed_by_all_replicas_fails_over() -> None:
    sim = Sim()
    sim.warm()
    found = crash_rounds(sim, 1.0, 4)
    assert len(found) == 1
    assert found[0].old_primary == "pg1"
    events = kinds(sim.all_events())
    for kind in ("primary_failed", "failure_confirmed", "failover_started"):
        assert events.count(kind) == 1


def test_one_replica_still_hearing_the_primary_vetoes_with_one_warning() -> None:
    sim = Sim()
    sim.warm()
    for i in range(40):
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            down("pg1", at),
            replica("pg2", at, wal=LOST),
            replica("pg3", at, wal=receiver("pg1", age=0.3)),
        )
        assert d.actions == ()
    warnings = [e for e in sim.all_events() if e.kind == "failure_not_confirmed"]
    assert len(warnings) == 1
    assert "cut off" in warnings[0].message
    assert warnings[0].severity is Severity.WARNING
    assert "still hears" in warnings[0].details["replicas"]["pg3"]
    assert "confirms" in warnings[0].details["replicas"]["pg2"]


def test_hung_primary_is_confirmed_once_replicas_are_silent_long_enough() -> None:
    sim = Sim()
    sim.warm()
    promoted_at = None
    for i in range(30):
        at = 1.0 + i * 0.2
        age = 0.2 + i * 0.2  # replicas stay "streaming", their last message ages
        d = sim.step(
            at,
            down("pg1", at),
            replica("pg2", at, wal=receiver("pg1", age=age)),
            replica("pg3", at, wal=receiver("pg1", age=age)),
        )
        if promotes(d):
            promoted_at = (at, age)
            break
    assert promoted_at is not None
    assert promoted_at[1] > SETTINGS.replica_silence_s
    assert promoted_at[1] - 0.2 <= SETTINGS.replica_silence_s


@pytest.mark.parametrize(
    ("row", "verdict"),
    [
        (None, "confirmed"),
        (receiver("pg1", status="waiting"), "confirmed"),
        (receiver("pg1", status="stopping"), "confirmed"),
        (receiver("pg1", age=3.01), "confirmed"),
        (receiver("pg1", age=3.0), "not_confirmed"),  # strictly longer than the silence
        (receiver("pg1", age=None), "not_confirmed"),  # unknown age: assume it hears
        (receiver(None, age=0.1), "not_confirmed"),  # unknown upstream: assume the primary
    ],
)
def test_confirmation_verdicts(row: object, verdict: str) -> None:
    at = 5.0
    v = view(at, down("pg1", at), replica("pg2", at, wal=row))  # type: ignore[arg-type]
    specs = {s.name: s for s in SPECS}
    assert confirm_failure("pg1", v, specs, SETTINGS).status == verdict


def test_cascading_replica_neither_confirms_nor_vetoes() -> None:
    at = 5.0
    specs = {s.name: s for s in SPECS}
    v = view(
        at, down("pg1", at), replica("pg2", at, wal=LOST), replica("pg3", at, wal=receiver("pg2"))
    )
    result = confirm_failure("pg1", v, specs, SETTINGS)
    assert result.status == "confirmed"
    assert result.replicas["pg3"].startswith("neutral")
    only_cascade = view(
        at, down("pg1", at), down("pg2", at), replica("pg3", at, wal=receiver("pg2"))
    )
    assert confirm_failure("pg1", only_cascade, specs, SETTINGS).status == "no_replica"


def test_no_reachable_replica_means_no_failover_and_one_event() -> None:
    sim = Sim()
    sim.warm()
    for i in range(20):
        at = 1.0 + i * 0.2
        d = sim.step(at, down("pg1", at), down("pg2", at), down("pg3", at))
        assert d.actions == ()
    events = [e for e in sim.all_events() if e.kind == "failure_not_confirmed"]
    assert len(events) == 1
    assert "no reachable replica" in events[0].message


# --------------------------------------------------------------------------- rule 3


def test_manual_mode_alerts_once_and_never_promotes() -> None:
    sim = Sim(settings=replace(SETTINGS, mode=FailoverMode.MANUAL))
    sim.warm()
    crash = crash_rounds(sim, 1.0, 30)
    assert crash == []
    alerts = [e for e in sim.all_events() if e.kind == "manual_failover_needed"]
    assert len(alerts) == 1
    assert alerts[0].severity is Severity.CRITICAL
    assert alerts[0].details["best_candidate"] == "pg2"


def test_semi_automatic_fails_over_but_never_fails_back() -> None:
    specs = (spec("pg1", priority=200), spec("pg2"), spec("pg3"))
    sim = Sim(specs=specs, settings=replace(SETTINGS, mode=FailoverMode.SEMI_AUTOMATIC))
    sim.warm()
    assert len(crash_rounds(sim, 1.0, 4)) == 1
    sim.step(2.0, down("pg1", 2.0), primary("pg2", 2.0, tl=2), replica("pg3", 2.0, wal=LOST))
    assert sim.state.primary == "pg2"
    # pg1 (the preferred node) is rejoined as a replica of pg2 and is healthy for a long time;
    # then pg2 goes away only briefly. Nothing moves back to pg1 on its own.
    for i in range(100):
        at = 400.0 + i * 0.2
        d = sim.step(
            at,
            replica("pg1", at, tl=2, wal=receiver("pg2")),
            primary("pg2", at, tl=2),
            replica("pg3", at, tl=2, wal=receiver("pg2")),
        )
        assert promotes(d) == []


def test_paused_means_no_actions_but_fences_and_events_still() -> None:
    sim = Sim()
    sim.warm()
    sim.state = replace(sim.state, paused=True)
    for i in range(10):
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            down("pg1", at),
            primary("pg2", at, tl=1),  # a second writable primary: fenced all the same
            replica("pg3", at, wal=LOST),  # a misrouted replica
        )
        assert [type(a) for a in d.actions] == [Fence] and d.actions[0].node == "pg2"
    events = kinds(sim.all_events())
    assert "node_fenced" in events
    assert "primary_failed" in events


def test_paused_crash_is_reported_as_blocked() -> None:
    sim = Sim()
    sim.warm()
    sim.state = replace(sim.state, paused=True)
    assert crash_rounds(sim, 1.0, 10) == []
    blocked = [e for e in sim.all_events() if e.kind == "failover_blocked"]
    assert [e.details["blocked_by"] for e in blocked] == ["paused"]


def test_primary_in_maintenance_is_not_failed_over() -> None:
    sim = Sim()
    sim.warm()
    sim.state = replace(sim.state, maintenance=frozenset({"pg1"}))
    assert crash_rounds(sim, 1.0, 20) == []
    blocked = [e for e in sim.all_events() if e.kind == "failover_blocked"]
    assert [e.details["blocked_by"] for e in blocked] == ["maintenance"]


# --------------------------------------------------------------------------- rule 4


@pytest.mark.parametrize(
    ("lsn2", "lsn3", "prio2", "prio3", "expected"),
    [
        (BASE_LSN + 100, BASE_LSN, 100, 100, "pg2"),  # most WAL wins
        (BASE_LSN, BASE_LSN + 100, 100, 100, "pg3"),
        (BASE_LSN + 100, BASE_LSN, 10, 500, "pg2"),  # WAL before priority
        (BASE_LSN, BASE_LSN, 100, 200, "pg3"),  # equal WAL: priority
        (BASE_LSN, BASE_LSN, 100, 100, "pg2"),  # equal everything: name
        (BASE_LSN + 100, BASE_LSN, 0, 100, "pg3"),  # priority 0 never, even with most WAL
    ],
)
def test_candidate_order(lsn2: int, lsn3: int, prio2: int, prio3: int, expected: str) -> None:
    sim = Sim(specs=(spec("pg1"), spec("pg2", prio2), spec("pg3", prio3)))
    sim.warm()
    found = crash_rounds(sim, 1.0, 4, lsn2=lsn2, lsn3=lsn3)
    assert [p.node for p in found] == [expected]


def test_promote_reason_lists_every_node_and_why_excluded() -> None:
    specs = (spec("pg1"), spec("pg2"), spec("pg3", priority=0), spec("pg4"))
    sim = Sim(specs=specs)
    sim.warm()
    for i in range(4):
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            down("pg1", at),
            replica("pg2", at, wal=LOST),
            replica("pg3", at, lsn=BASE_LSN + 10, wal=LOST),
            # Reachable (a strict majority of 4 needs 3 confirmations), far behind.
            replica("pg4", at, lsn=BASE_LSN - 32 * MB, wal=LOST),
        )
    (p,) = promotes(d)
    assert p.node == "pg2"
    assert [c.node for c in p.candidates] == ["pg2", "pg3", "pg4"]
    assert p.candidates[1].excluded == "priority 0 (never promoted)"
    assert (p.candidates[2].excluded or "").startswith("lag ")
    assert "pg3" in p.reason and "priority 0" in p.reason and "pg4" in p.reason
    assert "0/3000000" in p.reason


@pytest.mark.parametrize("flag", ["maintenance", "fenced", "backoff", "recovering"])
def test_excluded_replicas_are_never_candidates(flag: str) -> None:
    sim = Sim()
    sim.warm()
    if flag == "maintenance":
        sim.state = replace(sim.state, maintenance=frozenset({"pg2"}))
    elif flag == "fenced":
        sim.state = replace(sim.state, fenced=frozenset({"pg2"}))
    elif flag == "backoff":
        nodes = dict(sim.state.nodes)
        nodes["pg2"] = replace(nodes["pg2"], backoff_until=100.0)
        sim.state = replace(sim.state, nodes=nodes)
    found: list[Promote] = []
    if flag == "recovering":
        # pg2 is down for the first two crash rounds: two healthy probes are not enough
        for at in (1.0, 1.2):
            sim.step(at, down("pg1", at), down("pg2", at), replica("pg3", at, wal=LOST))
        found = crash_rounds(sim, 1.4, 2, lsn2=BASE_LSN + 500)
    else:
        found = crash_rounds(sim, 1.0, 4, lsn2=BASE_LSN + 500)
    assert [p.node for p in found] == ["pg3"]
    reasons = {c.node: c.excluded for c in found[0].candidates}
    assert reasons["pg2"] is not None


def test_recovering_replica_becomes_candidate_after_recovery_threshold() -> None:
    # pg3 (never promoted) makes the confirmations a majority of the three nodes.
    sim = Sim(specs=(spec("pg1"), spec("pg2"), spec("pg3", priority=0)))
    sim.warm()
    sim.step(0.9, primary("pg1", 0.9), down("pg2", 0.9), replica("pg3", 0.9))
    found = []
    for i in range(6):
        at = 1.0 + i * 0.2
        found += promotes(sim.step(at, down("pg1", at), replica("pg2", at, wal=LOST),
                                   replica("pg3", at, wal=LOST)))
    # healthy at 1.0, 1.2, 1.4: candidate from the third healthy probe on
    assert len(found) == 1


def test_lagging_replica_is_excluded_against_the_last_primary_position() -> None:
    sim = Sim(specs=(spec("pg1"), spec("pg2"), spec("pg3")))
    sim.healthy(0.0, lsn=BASE_LSN + 100 * MB)
    sim.healthy(0.2, lsn=BASE_LSN + 100 * MB)
    # replicas report far behind the primary's last LSN
    for i in range(3):
        at = 0.4 + i * 0.2
        sim.step(
            at,
            primary("pg1", at, lsn=BASE_LSN + 100 * MB),
            replica("pg2", at, lsn=BASE_LSN + 90 * MB),
            replica("pg3", at, lsn=BASE_LSN + 50 * MB),
        )
    found = crash_rounds(sim, 1.0, 4, lsn2=BASE_LSN + 90 * MB, lsn3=BASE_LSN + 50 * MB)
    assert [p.node for p in found] == ["pg2"]
    pg3 = next(c for c in found[0].candidates if c.node == "pg3")
    assert pg3.lag_bytes == 50 * MB and pg3.excluded is not None and "max_lag_bytes" in pg3.excluded


def test_worked_candidate_example_from_the_docs() -> None:
    pg5 = replace(spec("pg4"), name="pg5")
    specs = (spec("pg1"), spec("pg2"), spec("pg3", 50), spec("pg4", 0), pg5)
    sim = Sim(specs=specs)
    for i in range(4):
        at = i * 0.2
        sim.step(
            at,
            primary("pg1", at, lsn=0x5000000),
            *(replica(n, at, lsn=0x4FFF000) for n in ("pg2", "pg3", "pg4")),
            replica("pg5", at, lsn=0x4FFF000),
        )
    found: list[Promote] = []
    for i in range(4):
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            down("pg1", at),
            replica("pg2", at, lsn=0x4FFF000, wal=LOST),
            replica("pg3", at, lsn=0x5000000, wal=LOST),
            replica("pg4", at, lsn=0x5000000, wal=LOST),
            down("pg5", at),
        )
        found += promotes(d)
    (p,) = found
    table = [(c.node, c.lag_bytes, c.excluded) for c in p.candidates]
    assert table == [
        ("pg3", 0, None),
        ("pg2", 4096, None),
        ("pg4", 0, "priority 0 (never promoted)"),
        ("pg5", None, "unreachable"),
    ]


def test_no_candidate_is_one_event_and_no_action() -> None:
    sim = Sim(specs=(spec("pg1"), spec("pg2", priority=0), spec("pg3", priority=0)))
    sim.warm()
    assert crash_rounds(sim, 1.0, 20) == []
    events = [e for e in sim.all_events() if e.kind == "no_candidate"]
    assert len(events) == 1
    assert "priority 0" in events[0].message


def test_rank_candidates_is_exposed_for_status() -> None:
    sim = Sim()
    sim.warm()
    at = 1.0
    v = view(at, primary("pg1", at), replica("pg2", at), down("pg3", at))
    ranking = rank_candidates(sim.state, v, SPECS, SETTINGS)
    assert [(c.node, c.eligible) for c in ranking] == [("pg2", True), ("pg3", False)]


# --------------------------------------------------------------------------- rule 5


def promoted_sim() -> tuple[Sim, Promote]:
    sim = Sim()
    sim.warm()
    (p,) = crash_rounds(sim, 1.0, 4)
    return sim, p


def test_one_failover_in_flight_until_completion() -> None:
    sim, _ = promoted_sim()
    assert sim.state.in_flight is not None and sim.state.in_flight.candidate == "pg2"
    more = crash_rounds(sim, 2.0, 20)
    assert more == []
    d = sim.step(6.0, down("pg1", 6.0), primary("pg2", 6.0, tl=2), replica("pg3", 6.0, wal=LOST))
    assert sim.state.primary == "pg2"
    assert sim.state.in_flight is None
    assert sim.state.fenced == {"pg1"}
    assert [(r.node, r.primary) for r in repoints(d)] == [("pg3", "pg2")]
    (hook,) = [a for a in d.actions if isinstance(a, RunHook)]
    assert hook.event == "on_role_change"
    assert hook.env["HACONTROL_NEW_PRIMARY"] == "pg2"
    assert hook.env["HACONTROL_OLD_PRIMARY"] == "pg1"
    assert hook.env["HACONTROL_TIMELINE"] == "2"
    assert "failover_completed" in kinds(d.events) and "node_fenced" in kinds(d.events)


def test_candidate_on_the_same_timeline_does_not_complete() -> None:
    sim, _ = promoted_sim()
    sim.step(2.0, down("pg1", 2.0), primary("pg2", 2.0, tl=1), replica("pg3", 2.0, wal=LOST))
    assert sim.state.in_flight is not None
    assert sim.state.primary == "pg1"


def test_in_flight_failover_is_redriven_once_then_abandoned_after_the_promote_timeout() -> None:
    sim, _ = promoted_sim()
    started = sim.state.in_flight.started_at  # type: ignore[union-attr]

    def round_at(t: float) -> Decision:
        return sim.step(
            t, down("pg1", t), replica("pg2", t, wal=LOST), replica("pg3", t, wal=LOST)
        )

    round_at(started + 29.0)
    assert sim.state.in_flight is not None
    # Still a fit replica at the timeout: the same candidate is promoted once more.
    d = round_at(started + 31.0)
    assert [p.node for p in promotes(d)] == ["pg2"]
    assert "failover_redriven" in kinds(d.events)
    flight = sim.state.in_flight
    assert flight is not None and flight.redriven and flight.started_at == started + 31.0
    # Not seen promoted a promote timeout later: abandoned, and never a second node.
    d = round_at(started + 62.0)
    assert sim.state.in_flight is None and promotes(d) == []
    assert "failover_abandoned" in kinds(d.events)
    assert sim.state.health("pg2").backoff_until == pytest.approx(started + 62.0 + 60.0)
    assert sim.state.health("pg2").maybe_promoted
    # pg2 in sight as a replica proves nothing (a pending promote can still land).
    assert crash_rounds(sim, started + 63.0, 10) == []
    assert "abandoned_candidate" in [e.details.get("blocked_by") for e in sim.all_events()]


def test_failed_promote_backs_off_the_candidate_and_tries_the_next_at_once() -> None:
    sim, p = promoted_sim()
    d = sim.report(ActionOutcome(p, OutcomeStatus.FAILED, "cannot connect"), 1.7)
    assert "failover_failed" in kinds(d.events)
    assert sim.state.in_flight is None
    assert sim.state.last_failover_at is None
    found = crash_rounds(sim, 1.8, 2)
    assert [x.node for x in found] == ["pg3"]


@pytest.mark.parametrize("status", [OutcomeStatus.UNCERTAIN, OutcomeStatus.SUCCEEDED])
def test_uncertain_or_succeeded_promote_stays_in_flight(status: OutcomeStatus) -> None:
    sim, p = promoted_sim()
    sim.report(ActionOutcome(p, status, "whatever"), 1.7)
    assert sim.state.in_flight is not None
    assert sim.state.in_flight.promote_reported is (status is OutcomeStatus.SUCCEEDED)
    assert crash_rounds(sim, 1.8, 10) == []


def test_outcome_of_a_promote_not_in_flight_is_ignored() -> None:
    sim, p = promoted_sim()
    stray = replace(p, node="pg3")
    before = sim.state
    d = sim.report(ActionOutcome(stray, OutcomeStatus.FAILED, "x"), 1.7)
    assert d.state == before
    assert kinds(d.events) == ["promote_outcome_ignored"]


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        (Fence("pg1", "r"), "fence_failed"),
        (Repoint("pg3", "pg2", "r"), "repoint_failed"),
        (RunHook("on_role_change", "pg2", "r"), "hook_failed"),
    ],
)
def test_other_failed_outcomes_are_events_only(
    action: Fence | Repoint | RunHook, kind: str
) -> None:
    sim, _ = promoted_sim()
    before = sim.state
    d = sim.report(ActionOutcome(action, OutcomeStatus.FAILED, "boom"), 2.0)
    assert d.state == before and d.actions == ()
    assert kinds(d.events) == [kind]
    assert sim.report(ActionOutcome(action, OutcomeStatus.SUCCEEDED), 2.0).events == ()


def test_old_primary_returning_during_the_failover_is_fenced() -> None:
    sim, _ = promoted_sim()
    d = sim.step(2.0, primary("pg1", 2.0), replica("pg2", 2.0, wal=LOST), replica("pg3", 2.0))
    assert [f.node for f in fences(d)] == ["pg1"]
    assert "pg1" in sim.state.fenced
    assert sim.state.primary is None
    d = sim.step(2.2, primary("pg1", 2.2), primary("pg2", 2.2, tl=2), replica("pg3", 2.2))
    assert sim.state.primary == "pg2"
    assert [f.node for f in fences(d)] == ["pg1"]


# --------------------------------------------------------------------------- rule 6


def test_cool_down_blocks_a_second_automatic_failover() -> None:
    sim, _ = promoted_sim()
    sim.step(
        2.0,
        down("pg1", 2.0),
        primary("pg2", 2.0, tl=2),
        replica("pg3", 2.0, tl=2, wal=receiver("pg2")),
    )
    for i in range(4):
        at = 2.2 + i * 0.2
        sim.step(
            at,
            down("pg1", at),
            primary("pg2", at, tl=2),
            replica("pg3", at, tl=2, wal=receiver("pg2")),
        )
    found = []
    for i in range(10):
        at = 3.0 + i * 0.2
        found += promotes(
            sim.step(at, down("pg1", at), down("pg2", at), replica("pg3", at, tl=2, wal=LOST))
        )
    assert found == []
    blocked = [e for e in sim.all_events() if e.details.get("blocked_by") == "cooldown"]
    assert len(blocked) == 1
    # After the cool-down, with pg2 back and then down again while both other nodes
    # (pg1 rejoined as its replica) saw it go: a failover.
    for i in range(4):
        at = 301.0 + i * 0.2
        sim.step(at, replica("pg1", at, tl=2, wal=receiver("pg2")), primary("pg2", at, tl=2),
                 replica("pg3", at, tl=2, wal=receiver("pg2")))
    later = []
    for i in range(5):
        at = 302.0 + i * 0.2
        later += promotes(
            sim.step(at, replica("pg1", at, tl=2, wal=LOST), down("pg2", at),
                     replica("pg3", at, tl=2, wal=LOST))
        )
    assert [p.node for p in later] == ["pg3"]


# --------------------------------------------------------------------------- rule 7


def test_returning_old_primary_is_fenced_every_round_it_is_writable() -> None:
    sim, _ = promoted_sim()
    sim.step(2.0, down("pg1", 2.0), primary("pg2", 2.0, tl=2), replica("pg3", 2.0, tl=2))
    for i in range(3):
        at = 3.0 + i * 0.2
        d = sim.step(
            at,
            primary("pg1", at, tl=1),
            primary("pg2", at, tl=2),
            replica("pg3", at, tl=2, wal=receiver("pg2")),
        )
        assert [f.node for f in fences(d)] == ["pg1"]
        assert "accepts writes" in fences(d)[0].reason
    d = sim.step(
        4.0,
        primary("pg1", 4.0, tl=1, read_only=True),
        primary("pg2", 4.0, tl=2),
        replica("pg3", 4.0, tl=2, wal=receiver("pg2")),
    )
    assert fences(d) == []
    assert kinds(sim.all_events()).count("node_fenced") == 1
    assert sim.state.primary == "pg2"


def test_startup_adopts_the_only_writable_primary() -> None:
    sim = Sim()
    d = sim.step(0.0, down("pg1", 0.0), primary("pg2", 0.0, tl=3), replica("pg3", 0.0))
    assert sim.state.primary == "pg2" and sim.state.primary_timeline == 3
    assert d.actions == ()


def test_startup_with_two_primaries_keeps_the_higher_timeline() -> None:
    sim = Sim()
    d = sim.step(0.0, primary("pg1", 0.0, tl=1), primary("pg2", 0.0, tl=2), replica("pg3", 0.0))
    assert sim.state.primary == "pg2"
    assert sim.state.fenced == {"pg1"}
    assert [f.node for f in fences(d)] == ["pg1"]


def test_startup_with_two_primaries_on_one_timeline_fences_both_and_alerts() -> None:
    sim = Sim()
    for i in range(3):
        at = i * 0.2
        d = sim.step(at, primary("pg1", at, tl=2), primary("pg2", at, tl=2), replica("pg3", at))
        assert sorted(f.node for f in fences(d)) == ["pg1", "pg2"]
        assert promotes(d) == []
    assert sim.state.primary is None
    assert sim.state.fenced == {"pg1", "pg2"}
    events = kinds(sim.all_events())
    assert events.count("split_brain") == 1
    # fenced (read-only now), nobody writable: still no adoption, no promotion
    for i in range(20):
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            primary("pg1", at, tl=2, read_only=True),
            primary("pg2", at, tl=2, read_only=True),
            replica("pg3", at),
        )
        assert d.actions == ()
    assert sim.state.primary is None
    assert kinds(sim.all_events()).count("no_primary") == 1


def test_no_known_primary_and_none_seen_never_promotes() -> None:
    sim = Sim()
    for i in range(30):
        at = i * 0.2
        d = sim.step(
            at, down("pg1", at), replica("pg2", at, wal=LOST), replica("pg3", at, wal=LOST)
        )
        assert d.actions == ()
    alerts = [e for e in sim.all_events() if e.kind == "no_primary"]
    assert len(alerts) == 1 and "manual failover" in alerts[0].message


def test_higher_timeline_primary_replaces_a_known_primary() -> None:
    sim = Sim()
    sim.warm()
    d = sim.step(1.0, primary("pg1", 1.0, tl=1), primary("pg2", 1.0, tl=2), replica("pg3", 1.0))
    assert sim.state.primary == "pg2"
    assert [f.node for f in fences(d)] == ["pg1"]
    assert any(isinstance(a, RunHook) for a in d.actions)
    assert "primary_adopted" in kinds(d.events)


@pytest.mark.parametrize("tl", [1, None])
def test_second_primary_on_same_or_unknown_timeline_is_fenced(tl: int | None) -> None:
    sim = Sim()
    sim.warm()
    other = Observation("pg2", 1.0, True, role=Role.PRIMARY, timeline=tl, read_only=False)
    d = sim.step(1.0, primary("pg1", 1.0, tl=1), other, replica("pg3", 1.0))
    assert sim.state.primary == "pg1"
    assert [f.node for f in fences(d)] == ["pg2"]


def test_restart_after_promotion_adopts_the_new_primary_without_promoting() -> None:
    sim = Sim(state=initial_state(SPECS, known_primary="pg1"))
    found = []
    for i in range(20):
        at = i * 0.2
        d = sim.step(
            at, down("pg1", at), primary("pg2", at, tl=2), replica("pg3", at, tl=2, wal=LOST)
        )
        found += promotes(d)
    assert found == []
    assert sim.state.primary == "pg2"
    assert "pg1" in sim.state.fenced


def test_no_promote_while_a_fenced_node_is_still_writable() -> None:
    sim = Sim(specs=(spec("pg1"), spec("pg2"), spec("pg3"), spec("pg4")))
    sim.state = replace(sim.state, fenced=frozenset({"pg4"}))
    found = []
    for i in range(10):
        at = i * 0.2
        pg1 = primary("pg1", at) if i < 4 else down("pg1", at)
        d = sim.step(
            at,
            pg1,
            replica("pg2", at, wal=LOST if i >= 4 else receiver()),
            replica("pg3", at, wal=LOST if i >= 4 else receiver()),
            primary("pg4", at, tl=5),
        )
        found += promotes(d)
        assert [f.node for f in fences(d)] == ["pg4"]
    assert found == []
    assert "writable" in [e.details.get("blocked_by") for e in sim.all_events()]


# --------------------------------------------------------------------------- rule 8


def test_replica_not_streaming_is_repointed_after_the_window_and_rate_limited() -> None:
    sim = Sim()
    sim.warm()
    sent = []
    for i in range(60):  # 12 s
        at = 1.0 + i * 0.2
        d = sim.step(
            at,
            primary("pg1", at),
            replica("pg2", at),
            replica("pg3", at, wal=receiver("pg1", status="waiting")),
        )
        sent += [(at, r.node) for r in repoints(d)]
    assert [n for _, n in sent] == ["pg3", "pg3", "pg3"]
    assert sent[0][0] == pytest.approx(1.6)  # first seen at 1.0, window 0.5 s
    assert sent[1][0] - sent[0][0] == pytest.approx(5.0)


def test_replica_streaming_from_another_node_is_repointed() -> None:
    sim = Sim()
    sim.warm()
    sent = []
    for i in range(5):
        at = 1.0 + i * 0.2
        sent += repoints(
            sim.step(
                at, primary("pg1", at), replica("pg2", at), replica("pg3", at, wal=receiver("pg2"))
            )
        )
    assert [(r.node, r.primary) for r in sent] == [("pg3", "pg1")]
    assert "127.0.0.1:5433" in sent[0].reason


def test_replication_dsn_is_what_replicas_stream_from() -> None:
    specs = (spec("pg1", replication_dsn="host=10.9.9.9 port=6432 user=repl"), spec("pg2"))
    sim = Sim(specs=specs)
    from hacontrol.core.model import WalReceiver

    good = WalReceiver("streaming", "10.9.9.9", 6432, 0.1)
    for i in range(10):
        at = i * 0.2
        d = sim.step(at, primary("pg1", at), replica("pg2", at, wal=good))
        assert repoints(d) == []
    bad = receiver("pg1")  # the admin DSN's endpoint, not the replication one
    sent = []
    for i in range(5):
        at = 3.0 + i * 0.2
        sent += repoints(sim.step(at, primary("pg1", at), replica("pg2", at, wal=bad)))
    assert len(sent) == 1


@pytest.mark.parametrize("case", ["fenced", "maintenance", "primary_down"])
def test_no_repoint_of_fenced_or_maintenance_replicas_or_towards_a_dead_primary(case: str) -> None:
    sim = Sim()
    sim.warm()
    if case == "fenced":
        sim.state = replace(sim.state, fenced=frozenset({"pg3"}))
    if case == "maintenance":
        sim.state = replace(sim.state, maintenance=frozenset({"pg3"}))
    for i in range(10):
        at = 1.0 + i * 0.2
        pg1 = down("pg1", at) if case == "primary_down" else primary("pg1", at)
        d = sim.step(
            at, pg1, replica("pg2", at, wal=receiver("pg1", age=0.1)), replica("pg3", at, wal=LOST)
        )
        assert repoints(d) == []


def test_brief_receiver_restart_is_not_repointed() -> None:
    sim = Sim()
    sim.warm()
    for i in range(20):
        at = 1.0 + i * 0.2
        wal = LOST if i % 2 else receiver()  # never misrouted for a whole window
        d = sim.step(at, primary("pg1", at), replica("pg2", at), replica("pg3", at, wal=wal))
        assert repoints(d) == []


# --------------------------------------------------------------------------- rule 9


def test_node_unreachable_and_recovered_are_reported_once_each() -> None:
    sim = Sim()
    sim.warm()
    for i in range(20):
        at = 1.0 + i * 0.2
        sim.step(at, primary("pg1", at), replica("pg2", at), down("pg3", at))
    for i in range(20):
        at = 5.0 + i * 0.2
        sim.step(at, primary("pg1", at), replica("pg2", at), replica("pg3", at))
    events = kinds(sim.all_events())
    assert events.count("node_unreachable") == 1
    assert events.count("node_recovered") == 1


def test_primary_blip_reports_failure_and_recovery_once() -> None:
    sim = Sim()
    sim.warm()
    for i in range(10):
        at = 1.0 + i * 0.2
        sim.step(at, down("pg1", at), replica("pg2", at, wal=receiver(age=0.5)), replica("pg3", at))
    sim.healthy(3.0)
    sim.healthy(3.2)
    events = kinds(sim.all_events())
    assert events.count("primary_failed") == 1
    assert events.count("failure_not_confirmed") == 1
    assert events.count("primary_recovered") == 1


def test_decide_does_not_mutate_its_inputs() -> None:
    sim = Sim()
    sim.warm()
    state = sim.state
    nodes = dict(state.nodes)
    v = view(1.0, down("pg1", 1.0), replica("pg2", 1.0), replica("pg3", 1.0))
    first = decide(state, v, SPECS, SETTINGS)
    assert dict(state.nodes) == nodes
    assert decide(state, v, SPECS, SETTINGS) == first


def test_settings_defaults_are_usable() -> None:
    sim = Sim(settings=DecisionSettings())
    sim.warm()
    found = crash_rounds(sim, 1.0, 6)
    assert len(found) == 1
