"""Replication slot rules (pure): member slots on the primary, their expiry, slots
hacontrol does not own, stale slots on replicas, slot settings on replicas, logical
slots and what a failover means for them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hacontrol.core.actions import ActionOutcome, ManageSlots, Promote, Repoint, SlotSync
from hacontrol.core.model import LogicalSlotSpec, Observation, ReplicationSlot, SlotKind
from hacontrol.core.requests import ManualFailover
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.slot_names import member_slot_name, slot_name_problem
from hacontrol.core.slots import SLOTS_RETRY_S
from hacontrol.core.state import BlockReason
from tests.unit.test_decide_support import (
    SETTINGS,
    Sim,
    actions_of,
    down,
    primary,
    replica,
    spec,
)

PG18 = 180001


def physical(name: str, active: bool = True, restart: int = 0) -> ReplicationSlot:
    return ReplicationSlot(name, SlotKind.PHYSICAL, active, restart_lsn=restart)


def logical(name: str, *, synced: bool = False, temporary: bool = False,
            invalidated: str | None = None) -> ReplicationSlot:
    return ReplicationSlot(name, SlotKind.LOGICAL, False, database="app", plugin="pgoutput",
                           failover=True, synced=synced, temporary=temporary,
                           invalidated=invalidated)


def with_slots(obs: Observation, *slots: ReplicationSlot, **fields: object) -> Observation:
    return replace(obs, slots=tuple(slots), **fields)  # type: ignore[arg-type]


def member(name: str, at: float, slot_name: str | None = None, **fields: object) -> Observation:
    """A replica streaming from pg1 through its member slot."""
    chosen = member_slot_name(name) if slot_name is None else slot_name
    return with_slots(replica(name, at), primary_slot_name=chosen, **fields)


MEMBERS = (physical("hacontrol_pg2"), physical("hacontrol_pg3"))
CDC = LogicalSlotSpec("cdc", "app", "pgoutput")


def manage(sim: Sim) -> list[ManageSlots]:
    return [a for a in sim.all_actions() if isinstance(a, ManageSlots)]


def run(sim: Sim, rounds: int, *obs_at: object, start: float = 1.0, step: float = 0.2) -> float:
    at = start
    for i in range(rounds):
        at = start + i * step
        sim.step(at, *(f(at) for f in obs_at))  # type: ignore[operator]
    return at


def test_member_slot_names_are_prefixed_valid_and_bounded() -> None:
    assert member_slot_name("pg-East.1") == "hacontrol_pg_east_1"
    assert len(member_slot_name("n" * 100)) == 63
    assert slot_name_problem("cdc") is None
    assert slot_name_problem("CDC") is not None
    assert "member slots" in (slot_name_problem("hacontrol_x") or "")


def test_the_primary_gets_the_missing_member_slots_once_until_the_outcome() -> None:
    sim = Sim()
    run(sim, 6, lambda at: with_slots(primary("pg1", at), physical("hacontrol_pg2")),
        lambda at: member("pg2", at), lambda at: member("pg3", at))
    asked = manage(sim)
    assert len(asked) == 1, asked  # pending until its outcome is in
    assert asked[0].node == "pg1" and asked[0].create == ("hacontrol_pg3",)
    assert asked[0].drop == ()
    sim.report(ActionOutcome(asked[0], OutcomeStatus.SUCCEEDED, "created hacontrol_pg3"), 3.0)
    assert "pg1" not in sim.state.slots_pending
    run(sim, 2, lambda at: with_slots(primary("pg1", at), *MEMBERS),
        lambda at: member("pg2", at), lambda at: member("pg3", at), start=3.2)
    assert len(manage(sim)) == 1  # nothing more to do


def test_slots_are_not_read_means_nothing_is_done() -> None:
    sim = Sim()
    sim.warm(6)
    assert manage(sim) == []


def test_only_prefixed_inactive_physical_slots_of_unknown_nodes_are_dropped() -> None:
    sim = Sim()
    slots = (*MEMBERS, physical("hacontrol_old_node", active=False),
             physical("hacontrol_busy", active=True), physical("backup_tool", active=False),
             logical("not_configured"))
    run(sim, 4, lambda at: with_slots(primary("pg1", at), *slots),
        lambda at: member("pg2", at), lambda at: member("pg3", at))
    asked = manage(sim)
    assert len(asked) == 1 and asked[0].drop == ("hacontrol_old_node",) and not asked[0].create
    dropped = [e for e in sim.all_events() if e.kind == "slot_expired"]
    assert dropped and "not configured" in dropped[0].message


def test_a_member_away_past_retention_loses_its_slot_then_gets_one_back() -> None:
    settings = replace(SETTINGS, slot_retention_s=2.0)
    sim = Sim(settings=settings)
    at = run(sim, 5, lambda at: with_slots(primary("pg1", at), *MEMBERS),
             lambda at: member("pg2", at), lambda at: member("pg3", at))
    gone = (physical("hacontrol_pg2"), physical("hacontrol_pg3", active=False))
    at = run(sim, 8, lambda at: with_slots(primary("pg1", at), *gone),
             lambda at: member("pg2", at), lambda at: down("pg3", at), start=at + 0.2)
    assert manage(sim) == [], "within retention the slot stays"
    at = run(sim, 8, lambda at: with_slots(primary("pg1", at), *gone),
             lambda at: member("pg2", at), lambda at: down("pg3", at), start=at + 0.2)
    asked = manage(sim)
    assert len(asked) == 1 and asked[0].drop == ("hacontrol_pg3",)
    expired = [e for e in sim.all_events() if e.kind == "slot_expired"]
    assert expired[0].details["member"] == "pg3" and "slot_retention 2 s" in expired[0].message
    sim.report(ActionOutcome(asked[0], OutcomeStatus.SUCCEEDED, "dropped"), at)
    # Still away: no new slot. Back as a replica: a new slot at once.
    at = run(sim, 3, lambda at: with_slots(primary("pg1", at), MEMBERS[0]),
             lambda at: member("pg2", at), lambda at: down("pg3", at), start=at + 0.2)
    assert len(manage(sim)) == 1
    run(sim, 2, lambda at: with_slots(primary("pg1", at), MEMBERS[0]),
        lambda at: member("pg2", at), lambda at: member("pg3", at), start=at + 0.2)
    assert manage(sim)[-1].create == ("hacontrol_pg3",)


def test_stale_member_slots_on_a_replica_are_dropped_but_not_an_operators() -> None:
    sim = Sim()
    run(sim, 4, lambda at: with_slots(primary("pg1", at), *MEMBERS),
        lambda at: member("pg2", at), lambda at: with_slots(
            member("pg3", at), physical("hacontrol_pg1", active=False),
            physical("keep_me", active=False)))
    asked = manage(sim)
    assert [(a.node, a.drop) for a in asked] == [("pg3", ("hacontrol_pg1",))]


def test_a_replica_streaming_without_its_slot_is_repointed_through_it() -> None:
    sim = Sim()
    run(sim, 4, lambda at: with_slots(primary("pg1", at), *MEMBERS),
        lambda at: member("pg2", at), lambda at: member("pg3", at, slot_name=""))
    repoints = [a for a in sim.all_actions() if isinstance(a, Repoint)]
    assert len(repoints) == 1 and repoints[0].node == "pg3"
    assert repoints[0].slot == "hacontrol_pg3" and repoints[0].slot_sync is None
    assert "not hacontrol_pg3" in repoints[0].reason


def test_member_slots_off_a_replica_leaves_a_member_slot_and_the_primary_drops_it() -> None:
    sim = Sim(settings=replace(SETTINGS, member_slots=False))
    run(sim, 4, lambda at: with_slots(primary("pg1", at), physical("hacontrol_pg2"),
                                      physical("hacontrol_pg3", active=False)),
        lambda at: member("pg2", at), lambda at: member("pg3", at, slot_name=""))
    repoints = [a for a in sim.all_actions() if isinstance(a, Repoint)]
    assert [(r.node, r.slot) for r in repoints] == [("pg2", None)]
    assert manage(sim)[0].drop == ("hacontrol_pg3",)  # the active one waits


def test_a_failover_creates_every_other_members_slot_on_the_candidate_first() -> None:
    sim = Sim()
    sim.warm(6)
    at = 2.0
    for i in range(10):
        at = 2.0 + i * 0.2
        d = sim.step(at, down("pg1", at), replica("pg2", at, wal=None),
                     replica("pg3", at, wal=None))
        if actions_of(d, Promote):
            break
    promote = next(a for a in sim.all_actions() if isinstance(a, Promote))
    assert promote.slots == tuple(member_slot_name(n) for n in ("pg1", "pg2", "pg3")
                                  if n != promote.node)


def _logical_sim(**changes: object) -> Sim:
    return Sim(settings=replace(SETTINGS, logical_slots=(CDC,), **changes))  # type: ignore[arg-type]


def test_a_configured_logical_slot_is_created_as_a_failover_slot_on_pg17_and_later() -> None:
    sim = _logical_sim()
    run(sim, 4, lambda at: with_slots(primary("pg1", at), *MEMBERS, server_version=PG18,
                                      synchronized_standby_slots=""),
        lambda at: member("pg2", at, server_version=PG18, slot_sync=True),
        lambda at: member("pg3", at, server_version=PG18, slot_sync=False))
    asked = manage(sim)[0]
    assert asked.logical == (CDC,) and asked.failover is True and asked.lost == ()
    assert asked.standby_slots == "hacontrol_pg2, hacontrol_pg3"
    repoints = [a for a in sim.all_actions() if isinstance(a, Repoint)]
    assert [(r.node, r.slot_sync) for r in repoints] == [("pg3", SlotSync("app"))]


def test_a_slot_seen_before_and_missing_on_the_new_primary_is_reported_lost() -> None:
    sim = _logical_sim()
    run(sim, 4, lambda at: with_slots(primary("pg1", at), *MEMBERS, logical("cdc")),
        lambda at: member("pg2", at), lambda at: member("pg3", at))
    assert "cdc" in sim.state.logical_seen
    sim.state = replace(sim.state, primary="pg2", slots_pending=frozenset())
    run(sim, 2, lambda at: with_slots(primary("pg2", at), physical("hacontrol_pg3")),
        lambda at: down("pg1", at), lambda at: member("pg3", at), start=5.0)
    asked = next(a for a in manage(sim) if a.node == "pg2")
    assert asked.logical == (CDC,) and asked.lost == ("cdc",) and asked.failover is False
    done = sim.report(ActionOutcome(asked, OutcomeStatus.SUCCEEDED, "ok",
                                    slot_lsns={"cdc": 0x5000060}), 6.0)
    created = [e for e in done.events if e.kind == "logical_slot_created"]
    assert created[0].severity == "critical" and "0/5000060" in created[0].message
    assert "lost to them" in created[0].message


def _fail_over(sim: Sim, pg2: object, pg3: object) -> list[Promote]:
    sim.warm(6)
    promoted: list[Promote] = []
    for i in range(12):
        at = 2.0 + i * 0.2
        d = sim.step(at, down("pg1", at), pg2(at), pg3(at))  # type: ignore[operator]
        promoted += actions_of(d, Promote)  # type: ignore[arg-type]
    return promoted


def _standby(name: str, *slots: ReplicationSlot) -> object:
    return lambda at: with_slots(replica(name, at, wal=None), *slots, server_version=PG18)


def test_among_equal_candidates_the_one_holding_the_synced_slots_is_promoted() -> None:
    ready = _standby("pg3", logical("cdc", synced=True))
    promoted = _fail_over(_logical_sim(), _standby("pg2"), ready)
    assert [p.node for p in promoted] == ["pg3"]
    # A temporary (not yet caught up) or invalidated synced slot does not count.
    for bad in (logical("cdc", synced=True, temporary=True),
                logical("cdc", synced=True, invalidated="rows_removed")):
        again = _fail_over(_logical_sim(), _standby("pg2"), _standby("pg3", bad))
        assert [p.node for p in again] == ["pg2"]


def test_no_candidate_with_the_slots_fails_over_anyway_and_says_what_is_lost() -> None:
    sim = _logical_sim()
    promoted = _fail_over(sim, _standby("pg2"), _standby("pg3"))
    assert len(promoted) == 1
    lost = [e for e in sim.all_events() if e.kind == "logical_slots_lost"]
    assert lost and lost[0].severity == "critical" and lost[0].details["missing"] == ["cdc"]


@pytest.mark.parametrize("pg3_slot", [None, logical("cdc", synced=True)])
def test_require_logical_slots_waits_for_a_candidate_that_has_them(
    pg3_slot: ReplicationSlot | None,
) -> None:
    sim = _logical_sim(require_logical_slots=True)
    pg3 = _standby("pg3", pg3_slot) if pg3_slot else _standby("pg3")
    promoted = _fail_over(sim, _standby("pg2"), pg3)
    if pg3_slot is None:
        assert promoted == []
        assert sim.state.failover_blocked is not None
        assert sim.state.failover_blocked.reason is BlockReason.LOGICAL_SLOTS
        assert "require_logical_slots" in sim.state.failover_blocked.message
    else:
        assert [p.node for p in promoted] == ["pg3"]


def test_an_invalidated_member_slot_is_replaced_in_one_action() -> None:
    sim = Sim()
    lost = ReplicationSlot("hacontrol_pg3", SlotKind.PHYSICAL, False, wal_status="lost")
    run(sim, 3, lambda at: with_slots(primary("pg1", at), MEMBERS[0], lost),
        lambda at: member("pg2", at), lambda at: member("pg3", at))
    asked = manage(sim)[0]
    assert asked.drop == ("hacontrol_pg3",) and asked.create == ("hacontrol_pg3",)
    assert "invalidated" in next(e for e in sim.all_events() if e.kind == "slot_expired").message


def test_a_failed_manage_slots_is_retried_after_a_pause_not_every_round() -> None:
    sim = Sim()
    pg1 = lambda at: with_slots(primary("pg1", at), MEMBERS[0])  # noqa: E731
    run(sim, 2, pg1, lambda at: member("pg2", at), lambda at: member("pg3", at))
    asked = manage(sim)
    assert len(asked) == 1
    failed = sim.report(ActionOutcome(asked[0], OutcomeStatus.FAILED, "no free slot"), 1.3)
    assert [e.kind for e in failed.events] == ["slots_failed"]
    run(sim, 20, pg1, lambda at: member("pg2", at), lambda at: member("pg3", at), start=1.4)
    assert len(manage(sim)) == 1, "within the pause"
    run(sim, 2, pg1, lambda at: member("pg2", at), lambda at: member("pg3", at),
        start=1.3 + SLOTS_RETRY_S)
    assert len(manage(sim)) == 2


def test_a_node_in_maintenance_keeps_its_slot_and_its_stale_ones() -> None:
    sim = Sim(settings=replace(SETTINGS, slot_retention_s=1.0))
    sim.state = replace(sim.state, maintenance=frozenset({"pg3"}))
    run(sim, 20, lambda at: with_slots(primary("pg1", at), MEMBERS[0],
                                       physical("hacontrol_pg3", active=False)),
        lambda at: with_slots(member("pg2", at), physical("hacontrol_pg1", active=False)),
        lambda at: down("pg3", at))
    asked = manage(sim)
    assert all("hacontrol_pg3" not in a.drop for a in asked), asked
    run(sim, 3, lambda at: with_slots(primary("pg1", at), *MEMBERS),
        lambda at: member("pg2", at),
        lambda at: with_slots(member("pg3", at), physical("hacontrol_pg1", active=False)),
        start=6.0)
    assert all(a.node != "pg3" for a in manage(sim))


def test_synchronized_standby_slots_left_over_is_reset_and_priority_zero_never_listed() -> None:
    sim = Sim()
    run(sim, 2, lambda at: with_slots(primary("pg1", at), *MEMBERS, server_version=PG18,
                                      synchronized_standby_slots="hacontrol_pg2"),
        lambda at: member("pg2", at), lambda at: member("pg3", at))
    assert manage(sim)[0].standby_slots == ""
    foreign = Sim()
    run(foreign, 2, lambda at: with_slots(primary("pg1", at), *MEMBERS, server_version=PG18,
                                          synchronized_standby_slots="their_slot"),
        lambda at: member("pg2", at), lambda at: member("pg3", at))
    assert manage(foreign) == []
    specs = (spec("pg1"), spec("pg2"), spec("pg3", priority=0))
    zero = Sim(specs=specs, settings=replace(SETTINGS, logical_slots=(CDC,)))
    run(zero, 2, lambda at: with_slots(primary("pg1", at), *MEMBERS, logical("cdc"),
                                       server_version=PG18, synchronized_standby_slots=""),
        lambda at: member("pg2", at, server_version=PG18, slot_sync=True),
        lambda at: member("pg3", at, server_version=PG18, slot_sync=True))
    assert manage(zero)[0].standby_slots == "hacontrol_pg2"


def test_a_manual_failover_to_a_node_without_the_slots_says_what_is_lost() -> None:
    sim = _logical_sim()
    sim.warm(6)
    sim.step(2.0, down("pg1", 2.0), _standby("pg2")(2.0), _standby("pg3")(2.0))  # type: ignore[operator]
    d = sim.request(ManualFailover("pg2", force=True))
    lost = [e for e in d.events if e.kind == "logical_slots_lost"]
    assert lost and lost[0].severity == "critical" and "manual failover to pg2" in lost[0].message
