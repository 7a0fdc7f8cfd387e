"""Unit tests of rejoin in the decision core: the automatic rejoin after a failover
(once per fence, only for nodes whose driver can, never while paused, in
maintenance or with a change of primary in flight), the operator's rejoin request,
the outcome folded back, and what a running rejoin holds back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hacontrol.core.actions import ActionOutcome, Decision, Rejoin, Switchover
from hacontrol.core.model import Observation
from hacontrol.core.requests import Pause, RejoinRequest, Resume, SetMaintenance, SwitchoverRequest
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import REJOIN_ATTEMPTS
from tests.unit.test_decide_support import (
    SETTINGS,
    Sim,
    down,
    kinds,
    primary,
    promotes,
    receiver,
    replica,
)

AUTO = replace(SETTINGS, rejoin_automatic=True, rejoin_nodes=frozenset({"pg1", "pg2", "pg3"}))


def rejoins(decision: Decision) -> list[Rejoin]:
    return [a for a in decision.actions if isinstance(a, Rejoin)]


def after_failover(sim: Sim, at: float, pg1: Observation | None = None) -> Decision:
    """A round after pg1 failed over to pg2 (pg1 down unless given)."""
    return sim.step(
        at,
        pg1 or down("pg1", at),
        primary("pg2", at, tl=2),
        replica("pg3", at, tl=2, wal=receiver("pg2")),
    )


def failed_over(settings: DecisionSettings = AUTO) -> Sim:
    """pg1 lost, pg2 promoted and seen as primary: pg1 is fenced."""
    sim = Sim(settings=settings)
    sim.warm()
    at = 1.0
    for i in range(5):
        at = 1.0 + i * 0.2
        d = sim.step(at, down("pg1", at), replica("pg2", at, wal=None),
                     replica("pg3", at, wal=None))
        if promotes(d):
            break
    assert sim.state.in_flight is not None
    d = after_failover(sim, at + 0.2)
    assert "failover_completed" in kinds(d.events) and "pg1" in sim.state.fenced
    # The round the primary changed never starts a rejoin.
    assert rejoins(d) == []
    return sim


def test_one_automatic_rejoin_at_a_time() -> None:
    sim = failed_over()
    d = after_failover(sim, 3.0)
    (r,) = rejoins(d)
    assert (r.node, r.primary, r.automatic) == ("pg1", "pg2", True)
    assert "driver can rejoin it" in r.reason
    assert kinds(d.events) == ["rejoin_scheduled"]
    assert sim.state.rejoining == {"pg1"} and sim.state.rejoin_tried == frozenset()
    # Running: never a second one.
    assert rejoins(after_failover(sim, 3.2)) == []
    done = sim.report(ActionOutcome(r, OutcomeStatus.SUCCEEDED, "streams after rewind"), 4.0)
    assert [(e.kind, e.node) for e in done.events] == [("node_rejoined", "pg1")]
    assert sim.state.fenced == frozenset() and sim.state.rejoining == frozenset()
    assert sim.state.rejoin_tried == frozenset()
    streaming = replica("pg1", 4.2, tl=2, wal=receiver("pg2"))
    assert rejoins(after_failover(sim, 4.2, streaming)) == []


def test_a_failed_automatic_rejoin_is_retried_with_back_off_then_left_to_an_operator() -> None:
    sim = failed_over()
    t = 3.0
    (r,) = rejoins(after_failover(sim, t))
    waits = []
    for attempt in range(1, REJOIN_ATTEMPTS + 1):
        t += 1.0
        d = sim.report(ActionOutcome(r, OutcomeStatus.FAILED, "not rewinding: running"), t)
        (event,) = d.events
        assert event.kind == "rejoin_failed" and event.details["attempt"] == attempt
        assert sim.state.fenced == {"pg1"} and sim.state.rejoining == frozenset()
        if attempt == REJOIN_ATTEMPTS:
            assert event.severity == "critical" and "hacontrol rejoin pg1" in event.message
            break
        assert event.severity == "warning" and "trying again in" in event.message
        wait = event.details["retry_in_s"]
        waits.append(wait)
        # Not before the back-off has passed ...
        assert rejoins(after_failover(sim, t + wait - 0.1)) == []
        # ... then once more, saying which attempt it is.
        t += wait
        (r,) = rejoins(after_failover(sim, t))
        assert f"attempt {attempt + 1} of {REJOIN_ATTEMPTS}" in r.reason
    assert waits == [5.0, 10.0, 20.0, 40.0]
    assert sim.state.rejoin_tried == {"pg1"}
    for i in range(10):
        assert rejoins(after_failover(sim, t + 200.0 + i)) == []
    # An operator may ask again at any time.
    again = sim.request(RejoinRequest("pg1"))
    assert [a.node for a in rejoins(again)] == ["pg1"] and not rejoins(again)[0].automatic


@pytest.mark.parametrize(
    "settings",
    [
        replace(AUTO, rejoin_automatic=False),
        replace(AUTO, rejoin_nodes=frozenset({"pg2", "pg3"})),
    ],
)
def test_no_automatic_rejoin_when_off_or_without_a_capable_driver(
    settings: DecisionSettings,
) -> None:
    sim = failed_over(settings)
    for i in range(5):
        assert rejoins(after_failover(sim, 3.0 + i)) == []
    assert sim.state.fenced == {"pg1"}


def test_no_automatic_rejoin_while_paused_or_in_maintenance() -> None:
    sim = failed_over()
    sim.request(Pause())
    assert rejoins(after_failover(sim, 3.0)) == []
    sim.request(Resume())
    sim.request(SetMaintenance("pg1", True))
    assert rejoins(after_failover(sim, 3.2)) == []
    sim.request(SetMaintenance("pg1", False))
    assert [r.node for r in rejoins(after_failover(sim, 3.4))] == ["pg1"]


def test_no_automatic_rejoin_without_a_reachable_primary() -> None:
    sim = failed_over()
    d = sim.step(3.0, down("pg1", 3.0), down("pg2", 3.0),
                 replica("pg3", 3.0, tl=2, wal=receiver("pg2")))
    assert rejoins(d) == []


def test_rejoin_request_refusals() -> None:
    sim = failed_over(replace(AUTO, rejoin_automatic=False))
    after_failover(sim, 3.0)
    bad = sim.request(RejoinRequest("pg9"))
    assert bad.refused is not None and bad.refused.bad_request
    own = sim.request(RejoinRequest("pg2"))
    assert own.refused is not None and own.refused.code == "is_primary"
    started = sim.request(RejoinRequest("pg1"))
    assert [r.node for r in rejoins(started)] == ["pg1"]
    twice = sim.request(RejoinRequest("pg1"))
    assert twice.refused is not None and twice.refused.code == "rejoining"
    # A switchover waits for the rejoin.
    sw = sim.request(SwitchoverRequest("pg3"))
    assert sw.refused is not None and sw.refused.code == "rejoining"


def test_rejoin_request_needs_a_reachable_primary() -> None:
    sim = failed_over(replace(AUTO, rejoin_automatic=False))
    sim.step(3.0, down("pg1", 3.0), down("pg2", 3.0),
             replica("pg3", 3.0, tl=2, wal=receiver("pg2")))
    d = sim.request(RejoinRequest("pg1"))
    assert d.refused is not None and d.refused.code == "no_primary"
    assert "fail over first" in d.refused.message


def test_rejoin_request_works_while_paused() -> None:
    sim = failed_over(replace(AUTO, rejoin_automatic=False))
    after_failover(sim, 3.0)
    sim.request(Pause())
    d = sim.request(RejoinRequest("pg1"))
    assert [r.node for r in rejoins(d)] == ["pg1"] and d.refused is None


def test_rejoin_request_without_a_driver_reports_a_manual_rejoin() -> None:
    sim = failed_over(replace(AUTO, rejoin_nodes=frozenset()))
    after_failover(sim, 3.0, replica("pg1", 3.0, tl=2, wal=receiver("pg2")))
    d = sim.request(RejoinRequest("pg1"))
    assert d.actions == () and sim.state.fenced == frozenset()
    (event,) = d.events
    assert event.kind == "node_rejoined" and "taken as rejoined by hand" in event.message


def test_rejoin_request_without_a_driver_refused_for_a_writable_node() -> None:
    sim = failed_over(replace(AUTO, rejoin_nodes=frozenset()))
    after_failover(sim, 3.0, primary("pg1", 3.0))
    d = sim.request(RejoinRequest("pg1"))
    assert d.refused is not None and d.refused.code == "not_fenced_writable"


def test_rejoin_of_a_healthy_replica_is_not_needed() -> None:
    sim = Sim(settings=AUTO)
    sim.warm()
    d = sim.request(RejoinRequest("pg3"))
    assert d.actions == () and kinds(d.events) == ["rejoin_not_needed"]


def test_rejoin_refused_while_a_switchover_is_in_flight() -> None:
    sim = Sim(settings=AUTO)
    sim.warm()
    sw = sim.request(SwitchoverRequest("pg2"))
    assert any(isinstance(a, Switchover) for a in sw.actions)
    d = sim.request(RejoinRequest("pg3"))
    assert d.refused is not None and d.refused.code == "in_flight"


def test_no_failback_while_a_rejoin_runs() -> None:
    from tests.unit.test_decide_requests import FAILBACK, PREFERRED, failback_round

    sim = Sim(specs=PREFERRED, settings=replace(FAILBACK, rejoin_nodes=frozenset({"pg3"})))
    for i in range(4):
        failback_round(sim, i * 0.2)
    sim.state = replace(sim.state, fenced=frozenset({"pg3"}), rejoining=frozenset({"pg3"}))
    assert failback_round(sim, 20.0).actions == ()
    outcome = ActionOutcome(Rejoin("pg3", "pg2", "test"), OutcomeStatus.SUCCEEDED, "ok")
    sim.report(outcome, 20.1)
    assert sim.state.rejoining == frozenset()
    assert any(isinstance(a, Switchover) for a in failback_round(sim, 20.2).actions)
