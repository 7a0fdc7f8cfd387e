"""The other controllers as a second vantage point (pure): a primary whose replicas
still hear it but that a majority of the controllers cannot query, and whose WAL
does not advance, is failed over; one only this controller cannot reach is not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hacontrol.core.actions import Promote
from hacontrol.core.confirm import WAL_SLACK_BYTES
from hacontrol.core.model import Witnesses
from hacontrol.core.round import decide
from tests.unit.test_decide_support import BASE_LSN, Sim, down, promotes, replica, view


def _hung_primary(
    witnesses: Callable[[float], Witnesses | None],
    lsn: Callable[[int], int] = lambda i: BASE_LSN,
    rounds: int = 20,
) -> tuple[Sim, list[Promote]]:
    """pg1 fails every probe while pg2 and pg3 still stream from it."""
    sim = Sim()
    sim.warm()
    promoted: list[Promote] = []
    for i in range(rounds):
        at = 1.0 + i * 0.2
        v = replace(
            view(at, down("pg1", at), replica("pg2", at, lsn=lsn(i)),
                 replica("pg3", at, lsn=lsn(i))),
            witnesses=witnesses(at),
        )
        d = decide(sim.state, v, sim.specs, sim.settings)
        sim.state = d.state
        sim.decisions.append(d)
        promoted += promotes(d)
    return sim, promoted


def _others_fail(count: int, controllers: int) -> Callable[[float], Witnesses]:
    # Each other controller has failed to reach pg1 since t = 1.0.
    return lambda at: Witnesses(controllers, {"pg1": tuple(at - 1.0 for _ in range(count))})


def test_alone_the_streaming_replicas_veto_for_ever() -> None:
    sim, promoted = _hung_primary(lambda at: None)
    assert promoted == []
    assert "failure_not_confirmed" in [e.kind for e in sim.all_events()]


def test_a_majority_of_the_controllers_confirms_and_exactly_one_promote_follows() -> None:
    sim, promoted = _hung_primary(_others_fail(1, 2))
    assert len(promoted) == 1
    confirmed = [e for e in sim.all_events() if e.kind == "failure_confirmed"]
    assert confirmed and confirmed[0].details["confirmed_by"] == "controllers"
    assert "2 of the 2 controllers cannot query pg1" in confirmed[0].message
    _, three = _hung_primary(_others_fail(1, 3))
    assert len(three) == 1


def test_a_primary_only_this_controller_cannot_reach_is_not_failed_over() -> None:
    _, promoted = _hung_primary(lambda at: Witnesses(2, {}))
    assert promoted == []
    _, minority = _hung_primary(lambda at: Witnesses(5, {"pg1": (9.0,)}))
    assert minority == []  # 2 of 5 is no majority


def test_reports_shorter_than_the_detection_window_do_not_count() -> None:
    _, promoted = _hung_primary(lambda at: Witnesses(2, {"pg1": (0.1,)}))
    assert promoted == []


def test_wal_still_arriving_at_the_replicas_means_cut_off_not_hung() -> None:
    # The replicas keep receiving WAL: the primary takes writes from someone.
    _, promoted = _hung_primary(_others_fail(1, 2),
                                lsn=lambda i: BASE_LSN + (i + 1) * 4 * WAL_SLACK_BYTES)
    assert promoted == []
    # A checkpoint record's worth is not writes.
    _, small = _hung_primary(_others_fail(1, 2), lsn=lambda i: BASE_LSN + 200)
    assert len(small) == 1
