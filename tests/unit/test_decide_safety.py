"""Safety rules of the decision core found wanting in review: each test states the
scenario that used to go wrong."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.core.actions import Action, ActionOutcome, Decision, Fence, Promote
from hacontrol.core.model import Observation
from hacontrol.core.requests import ManualFailover, NodeRejoined, Pause, RejoinRequest
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.state import initial_state
from hacontrol.io.dsn import node_spec
from tests.unit.test_decide_support import (
    SETTINGS,
    SPECS,
    Sim,
    down,
    kinds,
    primary,
    promotes,
    receiver,
    replica,
    spec,
)


def warm_then(sim: Sim, rounds: int = 4) -> float:
    """Healthy rounds (pg1 primary, the others streaming from it); the last time."""
    return sim.warm(rounds) + 0.2


# --------------------------------------------------------------------------- 1: majority


def test_a_minority_partition_never_promotes() -> None:
    # {controller, pg3} cut off from {pg1, pg2, clients}: pg1 keeps serving, pg2 keeps
    # streaming from it, pg3's receiver drops. pg3 alone must not fail pg1 over.
    sim = Sim()
    at = warm_then(sim)
    found = []
    for i in range(20):
        t = at + i * 0.2
        d = sim.step(t, down("pg1", t), down("pg2", t),
                     replica("pg3", t, wal=receiver(status="waiting")))
        found += promotes(d)
    assert found == []
    blocked = [e for e in sim.all_events() if e.kind == "failover_blocked"]
    assert len(blocked) == 1
    event = blocked[0]
    assert event.details["blocked_by"] == "no_majority"
    assert event.details["unreachable"] == ["pg2"]
    assert "pg2" in event.message and "failover --to NODE --force" in event.message


def test_a_majority_of_confirmations_fails_over() -> None:
    sim = Sim()
    at = warm_then(sim)
    found = []
    for i in range(6):
        t = at + i * 0.2
        found += promotes(sim.step(t, down("pg1", t), replica("pg2", t, wal=None),
                                   replica("pg3", t, wal=receiver(status="waiting"))))
    assert [p.node for p in found] == ["pg2"]


def test_a_manual_failover_from_a_minority_needs_force_and_says_so() -> None:
    sim = Sim()
    at = warm_then(sim)
    for i in range(6):
        t = at + i * 0.2
        sim.step(t, down("pg1", t), down("pg2", t),
                 replica("pg3", t, wal=receiver(status="waiting")))
    refused = sim.request(ManualFailover("pg3"))
    assert refused.refused is not None and refused.actions == ()
    assert "minority side of a partition" in refused.refused.message
    assert "unreachable: pg2" in refused.refused.message
    forced = sim.request(ManualFailover("pg3", force=True))
    assert [p.node for p in promotes(forced)] == ["pg3"]
    (started,) = forced.events
    assert started.details["forced"] is True
    assert any("minority side" in o for o in started.details["overrides"])


# --------------------------------------------------------------------------- 2: soft fence


def fenced_old_primary_sim() -> tuple[Sim, float]:
    """pg1 failed over to pg2; pg1 is back as a read-only (fenced) primary."""
    sim = Sim()
    at = warm_then(sim)
    for i in range(5):
        t = at + i * 0.2
        sim.step(t, down("pg1", t), replica("pg2", t, wal=None), replica("pg3", t, wal=None))
    assert sim.state.in_flight is not None and sim.state.in_flight.candidate == "pg2"
    at += 1.2
    for i in range(5):
        t = at + i * 0.2
        sim.step(t, primary("pg1", t, read_only=True), primary("pg2", t, tl=2),
                 replica("pg3", t, tl=2, wal=receiver("pg2")))
    assert sim.state.primary == "pg2" and "pg1" in sim.state.fenced
    return sim, at + 1.0


def test_a_fenced_node_seen_as_primary_is_never_taken_back_as_rejoined() -> None:
    sim, _ = fenced_old_primary_sim()
    refused = sim.request(NodeRejoined("pg1"))
    assert refused.refused is not None and refused.refused.code == "not_a_replica"
    assert "pg1" in sim.state.fenced
    # Through the rejoin request too (no driver: "rejoined by hand").
    refused = sim.request(RejoinRequest("pg1"))
    assert refused.refused is not None and "pg1" in sim.state.fenced


def test_a_fenced_node_that_runs_as_a_replica_is_taken_back() -> None:
    sim, at = fenced_old_primary_sim()
    sim.step(at, replica("pg1", at, tl=2, wal=receiver("pg2")), primary("pg2", at, tl=2),
             replica("pg3", at, tl=2, wal=receiver("pg2")))
    accepted = sim.request(NodeRejoined("pg1"))
    assert accepted.refused is None and "pg1" not in sim.state.fenced


def test_a_read_only_primary_still_blocks_a_promotion() -> None:
    sim, at = fenced_old_primary_sim()
    for i in range(4):
        t = at + 400 + i * 0.2  # past the cool-down
        sim.step(t, primary("pg1", t, read_only=True), primary("pg2", t, tl=2),
                 replica("pg3", t, tl=2, wal=receiver("pg2")))
    found = []
    for i in range(10):
        t = at + 401 + i * 0.2
        found += promotes(sim.step(t, primary("pg1", t, read_only=True), down("pg2", t),
                                   replica("pg3", t, tl=2, wal=None)))
    assert found == []
    blocked = [e for e in sim.all_events() if e.kind == "failover_blocked"]
    assert [e.details["blocked_by"] for e in blocked] == ["writable"]
    assert "pg1 still run as a primary" in blocked[0].message
    refused = sim.request(ManualFailover("pg3"))
    assert refused.refused is not None and "pg1 still run as a" in refused.refused.message


# --------------------------------------------------------------------------- 3: fence first

FENCE_HOOK = replace(SETTINGS, fence_before_promote=True)


def crash_until_action(sim: Sim, at: float) -> tuple[Action, float]:
    for i in range(10):
        t = at + i * 0.2
        d = sim.step(t, down("pg1", t), replica("pg2", t, wal=None), replica("pg3", t, wal=None))
        if d.actions:
            (first,) = d.actions
            return first, t
    raise AssertionError("no action")


def test_with_a_fence_hook_the_unreachable_old_primary_is_fenced_before_the_promote() -> None:
    sim = Sim(settings=FENCE_HOOK)
    first, t = crash_until_action(sim, warm_then(sim))
    assert isinstance(first, Fence) and first.node == "pg1"
    assert first.then is not None and first.then.node == "pg2"
    assert sim.state.in_flight is not None and sim.state.in_flight.candidate == "pg2"
    follow = sim.report(ActionOutcome(first, OutcomeStatus.SUCCEEDED, "fence hook ok"), t)
    assert follow.actions == (first.then,)
    assert kinds(follow.events) == ["old_primary_fenced"]


def test_a_failed_fence_aborts_the_promote_and_is_retried_after_the_backoff() -> None:
    sim = Sim(settings=FENCE_HOOK)
    first, t = crash_until_action(sim, warm_then(sim))
    assert isinstance(first, Fence)
    failed = sim.report(ActionOutcome(first, OutcomeStatus.FAILED, "cannot connect"), t)
    assert failed.actions == ()
    assert kinds(failed.events) == ["failover_failed"]
    assert sim.state.in_flight is None and sim.state.last_failover_at is None
    # Not at once (every round would run the hook again) ...
    found: list[Action] = []
    for i in range(20):
        at = t + 0.2 + i * 0.2
        found += sim.step(at, down("pg1", at), replica("pg2", at, wal=None),
                          replica("pg3", at, wal=None)).actions
    assert found == []
    blocked = [e for e in sim.all_events() if e.details.get("blocked_by") == "fence_failed"]
    assert len(blocked) == 1
    # ... but after the backoff, again fence first.
    again, _ = crash_until_action(sim, t + SETTINGS.candidate_backoff_s + 1)
    assert isinstance(again, Fence) and again.then is not None


def test_without_a_fence_hook_or_with_the_old_primary_reachable_no_fence_first() -> None:
    sim = Sim()
    first, _ = crash_until_action(sim, warm_then(sim))
    assert isinstance(first, Promote)


def test_a_manual_failover_fences_the_unreachable_old_primary_first() -> None:
    sim = Sim(settings=FENCE_HOOK)
    at = warm_then(sim)
    sim.step(at, down("pg1", at), replica("pg2", at, wal=None), replica("pg3", at, wal=None))
    d = sim.request(ManualFailover("pg3"))
    (first,) = d.actions
    assert isinstance(first, Fence) and first.node == "pg1"
    assert first.then is not None and first.then.node == "pg3"


# --------------------------------------------------------------------------- 4: history


def test_a_replica_that_was_already_broken_neither_confirms_nor_vetoes() -> None:
    # pg3 lost its upstream long before pg1 failed: its silence says nothing about pg1,
    # and with it out the confirmations are no majority of the three nodes.
    sim = Sim()
    at = 0.0
    for i in range(40):
        at = i * 0.2
        sim.step(at, primary("pg1", at), replica("pg2", at),
                 replica("pg3", at, wal=receiver(status="waiting")))
    found = []
    for i in range(10):
        t = at + 0.2 + i * 0.2
        found += promotes(sim.step(t, down("pg1", t), replica("pg2", t, wal=None),
                                   replica("pg3", t, wal=receiver(status="waiting"))))
    assert found == []
    (blocked,) = [e for e in sim.all_events() if e.kind == "failover_blocked"]
    assert blocked.details["confirming"] == ["pg2"]
    assert blocked.details["replicas"]["pg3"].startswith("neutral: was not streaming")


def test_a_replica_streaming_until_shortly_before_the_failure_confirms() -> None:
    sim = Sim()
    at = warm_then(sim)
    found = []
    for i in range(8):
        t = at + 2.0 + i * 0.2  # within replica_silence of the last streaming round
        found += promotes(sim.step(t, down("pg1", t), replica("pg2", t, wal=None),
                                   replica("pg3", t, wal=None)))
    assert [p.node for p in found] == ["pg2"]


# --------------------------------------------------------------------------- 5: paused


def test_a_paused_controller_still_fences_a_returning_old_primary() -> None:
    sim, at = fenced_old_primary_sim()
    sim.request(Pause())
    d = sim.step(at, primary("pg1", at), primary("pg2", at, tl=2),
                 replica("pg3", at, tl=2, wal=receiver("pg2")))
    assert [(type(a), a.node) for a in d.actions] == [(Fence, "pg1")]


# --------------------------------------------------------------------------- 6: abandoned

FIVE = (*SPECS, spec("pg4"),
        node_spec("pg5", "host=127.0.0.1 port=5436 user=hacontrol dbname=postgres"))


def test_an_abandoned_candidate_out_of_sight_blocks_the_next_failover() -> None:
    # cool-down shorter than the promote timeout: the abandonment used to re-enable
    # an immediate second promotion while the first candidate might be a primary.
    settings = replace(SETTINGS, cooldown_s=5.0, promote_timeout_s=30.0)
    sim = Sim(specs=FIVE, settings=settings)
    at = 0.0
    for i in range(4):
        at = i * 0.2
        sim.step(at, primary("pg1", at), *(replica(n, at) for n in ("pg2", "pg3", "pg4", "pg5")))

    def crashed(t: float, pg2: Observation) -> Decision:
        return sim.step(t, down("pg1", t), pg2,
                        *(replica(n, t, wal=None) for n in ("pg3", "pg4", "pg5")))

    first: list[Promote] = []
    t = at
    for i in range(8):
        t = at + 0.2 + i * 0.2
        first += promotes(crashed(t, replica("pg2", t, wal=None)))
    assert [p.node for p in first] == ["pg2"]
    sim.report(ActionOutcome(first[0], OutcomeStatus.UNCERTAIN, "timed out"), t)
    later: list[Promote] = []
    for _ in range(300):  # 60 s: past the promote timeout and the cool-down
        t += 0.2
        later += promotes(crashed(t, down("pg2", t)))
    assert later == []
    assert "abandoned_candidate" in [e.details.get("blocked_by") for e in sim.all_events()]
    assert sim.request(ManualFailover("pg3")).refused is not None
    # pg2 is seen again, as a replica: that proves nothing, a pending promote survives
    # even a restart and lands once replay catches up. Still no second promote ...
    for _ in range(300):
        t += 0.2
        later += promotes(crashed(t, replica("pg2", t, wal=None)))
    assert later == []
    # ... until the operator says so.
    assert sim.request(ManualFailover("pg3")).refused is not None
    forced = sim.request(ManualFailover("pg3", force=True))
    assert forced.refused is None and [p.node for p in promotes(forced)] == ["pg3"]


def test_a_controller_started_with_the_primary_down_judges_from_the_view() -> None:
    # No history: the controller never saw pg1 healthy (it started after the crash).
    sim = Sim(state=initial_state(SPECS, known_primary="pg1"))
    found = []
    for i in range(12):
        t = i * 0.2
        found += promotes(sim.step(t, down("pg1", t), replica("pg2", t, wal=None),
                                   replica("pg3", t, wal=receiver(status="waiting"))))
    assert [p.node for p in found] == ["pg2"]


def test_replicas_streaming_in_the_round_the_primary_is_adopted_count() -> None:
    sim = Sim()
    sim.healthy(0.0)  # pg1 adopted in this very round
    found = []
    for i in range(8):
        t = 0.2 + i * 0.2
        found += promotes(sim.step(t, down("pg1", t), replica("pg2", t, wal=None),
                                   replica("pg3", t, wal=None)))
    assert [p.node for p in found] == ["pg2"]
