"""The synchronous quorum rules (hacontrol.core.syncrep): the setting, membership,
degradation, set-change tracking and the N - k + 1 failover rule, plus a property
test that no acknowledged commit is ever outside what a failover may promote."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hacontrol.core.model import ClusterView, Observation, ReplicationClient, Role
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.standby_names import format_standby_names, parse_standby_names, same_set
from hacontrol.core.state import ControllerState, NodeHealth, SyncQuorum, initial_state
from hacontrol.core.sync import (
    covered,
    desired_standbys,
    failover_quorum,
    post_failover_standbys,
    requested,
    track_in_force,
)
from hacontrol.io.probe import observation_from_row
from tests.unit.test_decide_support import SPECS

NODES = ["pg1", "pg2", "pg3"]
QUORUM = DecisionSettings(synchronous="quorum", sync_quorum=1)


def q(k: int, *members: str, method: str = "any", until: int | None = None) -> SyncQuorum:
    return SyncQuorum(frozenset(members), k, method, until)


def row(name: str, flush: int | None = 100, state: str = "streaming") -> ReplicationClient:
    return ReplicationClient(name, "127.0.0.1", state, "quorum", flush, flush, flush)


def prim(
    at: float = 1.0, lsn: int = 100, rows: tuple[ReplicationClient, ...] = (), names: str = ""
) -> Observation:
    return Observation(
        "pg1", at, True, role=Role.PRIMARY, timeline=1, current_lsn=lsn, read_only=False,
        replication=rows, synchronous_standby_names=names,
    )


def rep(name: str, lsn: int = 100, at: float = 1.0) -> Observation:
    return Observation(name, at, True, role=Role.REPLICA, timeline=1, receive_lsn=lsn,
                       replay_lsn=lsn, read_only=True)


def gone(name: str, at: float = 1.0) -> Observation:
    return Observation(name, at, False, error="timeout")


def view(*obs: Observation, at: float = 1.0) -> ClusterView:
    return ClusterView(at, {o.node: o for o in obs})


# --------------------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SyncQuorum()),
        ("   ", SyncQuorum()),
        ("ANY 1 (pg2, pg3)", q(1, "pg2", "pg3")),
        ("any 2 (PG2,pg3)", q(2, "pg2", "pg3")),
        ("FIRST 1 (pg2, pg3)", q(1, "pg2", "pg3", method="first")),
        ("2 (pg2, pg3)", q(2, "pg2", "pg3", method="first")),
        ("pg2, pg3", q(1, "pg2", "pg3", method="first")),
        ("pg2", q(1, "pg2", method="first")),
        ('ANY 1 ("pg2", "pg3")', q(1, "pg2", "pg3")),
        # The primary itself is never waited for; the local cluster lists every node.
        ("ANY 1 (pg1, pg2, pg3)", q(1, "pg2", "pg3")),
        ("*", q(1, "pg2", "pg3", method="first")),
        ("ANY 1 (*)", q(1, "pg2", "pg3")),
        ("ANY 1 (pg1)", SyncQuorum()),
        ("ANY 0 (pg2)", SyncQuorum()),
        # Unknown names stay members that can never be reached.
        ("ANY 1 (pg2, other)", q(1, "pg2", "other")),
        ("ANY 1 (pg2", None),
        ("ANY 1 ()", None),
    ],
)
def test_parse_standby_names(text: str, expected: SyncQuorum | None) -> None:
    assert parse_standby_names(text, "pg1", NODES) == expected


def test_parse_unknown_setting_is_none() -> None:
    assert parse_standby_names(None, "pg1", NODES) is None


def test_quoted_names_keep_commas_and_quotes() -> None:
    parsed = parse_standby_names('ANY 1 ("a,b", "say ""hi""")', "pg1", NODES)
    assert parsed == q(1, "a,b", 'say "hi"')


def test_format_round_trips_and_quotes_when_needed() -> None:
    assert format_standby_names(1, ["pg3", "pg2"]) == "ANY 1 (pg2, pg3)"
    assert format_standby_names(0, ["pg2"]) == ""
    assert format_standby_names(2, []) == ""
    text = format_standby_names(1, ["db-2", "9x", "any", "Pg4"])
    assert text == 'ANY 1 ("9x", Pg4, "any", "db-2")'
    nodes = ["pg1", "db-2", "9x", "any", "Pg4"]
    assert parse_standby_names(text, "pg1", nodes) == q(1, "db-2", "9x", "any", "Pg4")


def test_same_set_ignores_until_and_treats_every_async_set_alike() -> None:
    assert same_set(q(1, "pg2", until=5), q(1, "pg2"))
    assert not same_set(q(1, "pg2"), q(1, "pg2", method="first"))
    assert not same_set(q(1, "pg2"), q(2, "pg2"))
    assert same_set(SyncQuorum(), q(0, "pg2"))
    assert same_set(None, None) and not same_set(None, SyncQuorum())


def test_probe_row_carries_the_setting() -> None:
    row_data = {
        "in_recovery": False, "read_only": False, "current_lsn": "0/10", "primary_tli": 1,
        "receive_lsn": None, "replay_lsn": None, "replay_lag_s": None, "checkpoint_tli": 1,
        "system_identifier": 1, "wal_receiver": None, "replication": "[]",
        "synchronous_standby_names": "ANY 1 (pg2, pg3)",
    }
    obs = observation_from_row("pg1", 1.0, 0.001, row_data)
    assert obs.synchronous_standby_names == "ANY 1 (pg2, pg3)"
    del row_data["synchronous_standby_names"]
    assert observation_from_row("pg1", 1.0, 0.001, row_data).synchronous_standby_names is None


# --------------------------------------------------------------------------- membership


def healthy_state() -> ControllerState:
    state = initial_state(SPECS, known_primary="pg1")
    nodes = {n: NodeHealth(consecutive_successes=5) for n in NODES}
    return replace(state, nodes=nodes)


def test_every_streaming_replica_is_a_member() -> None:
    v = view(prim(rows=(row("pg2"), row("pg3"))), rep("pg2"), rep("pg3"))
    target = desired_standbys("pg1", v, healthy_state(), NODES, QUORUM)
    assert target.value == "ANY 1 (pg2, pg3)"
    assert not target.degraded and not target.blocked


def test_a_dead_replica_is_dropped_without_degrading_when_k_still_holds() -> None:
    v = view(prim(rows=(row("pg2"),)), rep("pg2"), gone("pg3"))
    target = desired_standbys("pg1", v, healthy_state(), NODES, QUORUM)
    assert target.value == "ANY 1 (pg2)"
    assert not target.degraded


def test_a_replica_cut_off_from_the_controller_but_streaming_stays() -> None:
    v = view(prim(rows=(row("pg2"), row("PG3"))), rep("pg2"), gone("pg3"))
    assert desired_standbys("pg1", v, healthy_state(), NODES, QUORUM).value == "ANY 1 (pg2, pg3)"


def test_catchup_row_does_not_count_as_streaming() -> None:
    state = healthy_state()
    nodes = dict(state.nodes)
    nodes["pg3"] = NodeHealth(consecutive_successes=5, misrouted_since=0.0)
    state = replace(state, nodes=nodes)
    v = view(prim(rows=(row("pg2"), row("pg3", state="catchup"))), rep("pg2"), rep("pg3"),
             at=10.0)
    assert desired_standbys("pg1", v, state, NODES, QUORUM).value == "ANY 1 (pg2)"


def test_non_strict_degrades_to_fewer_names_then_to_async() -> None:
    two = replace(QUORUM, sync_quorum=2)
    v = view(prim(rows=(row("pg2"),)), rep("pg2"), gone("pg3"))
    target = desired_standbys("pg1", v, healthy_state(), NODES, two)
    assert (target.value, target.degraded) == ("ANY 1 (pg2)", True)
    assert "pg3: unreachable" in target.reason
    v = view(prim(), gone("pg2"), gone("pg3"))
    target = desired_standbys("pg1", v, healthy_state(), NODES, two)
    assert (target.value, target.degraded, target.quorum) == ("", True, SyncQuorum())
    assert "asynchronous" in target.reason


def test_strict_keeps_k_names_and_blocks() -> None:
    strict = replace(QUORUM, sync_strict=True)
    v = view(prim(), gone("pg2"), gone("pg3"))
    target = desired_standbys("pg1", v, healthy_state(), NODES, strict)
    assert (target.value, target.blocked, target.degraded) == ("ANY 1 (pg2, pg3)", True, False)
    assert "writes wait" in target.reason


def test_grace_keeps_a_repointed_replica_then_drops_it() -> None:
    state = healthy_state()
    nodes = dict(state.nodes)
    nodes["pg3"] = NodeHealth(consecutive_successes=5, misrouted_since=10.0)
    state = replace(state, nodes=nodes)
    for at, expected in ((12.0, "ANY 1 (pg2, pg3)"), (15.5, "ANY 1 (pg2)")):
        v = view(prim(rows=(row("pg2"),)), rep("pg2"), rep("pg3"), at=at)
        assert desired_standbys("pg1", v, state, NODES, QUORUM).value == expected


@pytest.mark.parametrize("flag", ["fenced", "down", "maintenance"])
def test_unfit_replicas_that_do_not_stream_are_not_members(flag: str) -> None:
    state = healthy_state()
    if flag == "fenced":
        state = replace(state, fenced=frozenset({"pg3"}))
    elif flag == "maintenance":
        state = replace(state, maintenance=frozenset({"pg3"}))
    else:
        nodes = dict(state.nodes)
        nodes["pg3"] = NodeHealth(down=True)
        state = replace(state, nodes=nodes)
    v = view(prim(rows=(row("pg2"),)), rep("pg2"), rep("pg3"))
    assert desired_standbys("pg1", v, state, NODES, QUORUM).value == "ANY 1 (pg2)"


def test_post_failover_set_is_the_replicas_to_be_repointed() -> None:
    v = view(gone("pg1"), rep("pg2"), rep("pg3"))
    target = post_failover_standbys("pg2", "pg1", v, healthy_state(), NODES, QUORUM)
    assert target.value == "ANY 1 (pg3)"
    v = view(gone("pg1"), rep("pg2"), gone("pg3"))
    target = post_failover_standbys("pg2", "pg1", v, healthy_state(), NODES, QUORUM)
    assert (target.value, target.degraded) == ("", True)
    strict = replace(QUORUM, sync_strict=True)
    target = post_failover_standbys("pg2", "pg1", v, healthy_state(), NODES, strict)
    # Strict: the old primary counts too; writes wait until it rejoins or pg3 returns.
    assert (target.value, target.blocked) == ("ANY 1 (pg1, pg3)", True)


# --------------------------------------------------------------------------- tracking


def test_first_sight_sets_the_set_in_force() -> None:
    seen = q(1, "pg2", "pg3")
    in_force, pending = track_in_force(None, (), seen, prim(lsn=50))
    assert in_force == seen and pending == ()


def test_a_change_keeps_the_old_set_until_the_new_one_has_flushed_the_change_lsn() -> None:
    old, new = q(1, "pg2", "pg3"), q(1, "pg2")
    in_force, pending = track_in_force(old, (), new, prim(lsn=500, rows=(row("pg2", 400),)))
    assert in_force == new
    assert pending == (q(1, "pg2", "pg3", until=500),)
    # pg2 confirms the LSN of the change: every commit of the old set is covered.
    in_force, pending = track_in_force(in_force, pending, new, prim(rows=(row("pg2", 500),)))
    assert pending == ()


def test_coverage_needs_k_members_of_the_new_set() -> None:
    old = q(1, "pg2", "pg3", until=100)
    two = q(2, "pg3", "pg4")
    assert not covered(old, two, [row("pg3", 100), row("pg4", 99)])
    assert covered(old, two, [row("pg3", 100), row("pg4", 100)])
    # A row of a non-member does not count.
    assert not covered(old, two, [row("pg3", 100), row("pg2", 100)])
    assert covered(q(0), two, [])  # an async set promised nothing
    assert covered(old, q(0), [])  # an async set in force gives the guarantee up
    assert not covered(q(1, "pg2"), two, [row("pg3", 10**9), row("pg4", 10**9)])  # no LSN


def test_a_requested_set_is_consulted_until_seen_and_then_supersedes_older_requests() -> None:
    a, b, c = q(1, "pg2", "pg3"), q(1, "pg2"), q(1, "pg3")
    pending = requested((), b)
    assert pending == (b,) and requested(pending, b) == pending
    pending = requested(pending, c)  # c asked before b was seen
    assert pending == (c, b)
    # b is seen in force: a is superseded at this LSN, c still awaited.
    in_force, pending = track_in_force(a, pending, b, prim(lsn=300))
    assert in_force == b
    assert pending == (replace(a, until_lsn=300), c)
    # c is seen: b superseded; nothing flushed yet, so both old sets stay consulted.
    in_force, pending = track_in_force(in_force, pending, c, prim(lsn=400))
    assert in_force == c
    assert pending == (replace(b, until_lsn=400), replace(a, until_lsn=300))
    in_force, pending = track_in_force(in_force, pending, c, prim(rows=(row("pg3", 400),)))
    assert pending == ()


def test_a_request_overtaken_before_it_was_seen_is_superseded_when_a_later_one_is_seen() -> None:
    a, b, c = q(1, "pg2", "pg3"), q(1, "pg2"), q(1, "pg3")
    pending = requested(requested((), b), c)
    in_force, pending = track_in_force(a, pending, c, prim(lsn=700, rows=(row("pg3", 600),)))
    assert in_force == c
    assert set(pending) == {replace(a, until_lsn=700), replace(b, until_lsn=700)}


# --------------------------------------------------------------------------- failover rule


def state_with(in_force: SyncQuorum | None, *pending: SyncQuorum) -> ControllerState:
    return replace(healthy_state(), sync_in_force=in_force, sync_pending=tuple(pending))


def test_any_1_of_2_needs_both_and_picks_the_most_wal() -> None:
    st_ = state_with(q(1, "pg2", "pg3"))
    verdict = failover_quorum(st_, view(gone("pg1"), rep("pg2", 90), rep("pg3", 100)), NODES,
                              "pg1")
    assert verdict.ok and verdict.required_lsn == 100
    assert verdict.allows("pg3", 100) and not verdict.allows("pg2", 90)
    verdict = failover_quorum(st_, view(gone("pg1"), rep("pg2", 100), gone("pg3")), NODES, "pg1")
    assert not verdict.ok and verdict.missing == ("pg3",)
    assert "needs 2 reachable member(s), has 1" in verdict.reason
    assert not verdict.allows("pg2", 100)


def test_any_2_of_3_needs_two_and_excludes_non_members() -> None:
    nodes = ["pg1", "pg2", "pg3", "pg4"]
    st_ = state_with(q(2, "pg2", "pg3", "pg4"))
    v = view(gone("pg1"), rep("pg2", 100), rep("pg3", 120), gone("pg4"))
    verdict = failover_quorum(st_, v, nodes, "pg1")
    assert verdict.ok and verdict.allows("pg3", 120)
    v = view(gone("pg1"), rep("pg2", 100), gone("pg3"), gone("pg4"))
    assert not failover_quorum(st_, v, nodes, "pg1").ok
    st_ = state_with(q(1, "pg2", "pg3"))
    verdict = failover_quorum(st_, view(rep("pg2"), rep("pg3"), rep("pg4", 500)), nodes, "pg1")
    # pg4 is not a member: even with more WAL it is never the candidate, nor the reference.
    assert verdict.ok and verdict.required_lsn == 100 and not verdict.allows("pg4", 500)


def test_unknown_set_means_every_replica_must_be_reachable() -> None:
    st_ = state_with(None)
    assert not failover_quorum(st_, view(rep("pg2"), gone("pg3")), NODES, "pg1").ok
    assert failover_quorum(st_, view(rep("pg2"), rep("pg3")), NODES, "pg1").ok


def test_async_in_force_is_unrestricted() -> None:
    verdict = failover_quorum(state_with(SyncQuorum()), view(rep("pg2"), gone("pg3")), NODES,
                              "pg1")
    assert verdict.ok and verdict.unrestricted and verdict.allows("pg2", 1)


def test_pending_sets_are_consulted_too() -> None:
    # The set shrank to pg2 but pg2 has not confirmed the change LSN yet: pg3 may hold
    # commits acknowledged under the old set, so both must be reachable.
    st_ = state_with(q(1, "pg2"), q(1, "pg2", "pg3", until=500))
    v = view(gone("pg1"), rep("pg2", 400), gone("pg3"))
    assert not failover_quorum(st_, v, NODES, "pg1").ok
    v = view(gone("pg1"), rep("pg2", 400), rep("pg3", 500))
    verdict = failover_quorum(st_, v, NODES, "pg1")
    assert verdict.ok and verdict.allows("pg3", 500) and not verdict.allows("pg2", 400)


# --------------------------------------------------------------------------- property

REPLICAS = ["pg2", "pg3", "pg4", "pg5"]
ALL = ["pg1", *REPLICAS]

member_sets = st.sets(st.sampled_from(REPLICAS), min_size=1).map(sorted)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 50)),
        st.tuples(st.just("flush"), st.sampled_from(REPLICAS), st.integers(0, 80)),
        st.tuples(st.just("request"), member_sets, st.integers(1, 4)),
        st.tuples(st.just("reload")),
        st.tuples(st.just("observe")),
    ),
    max_size=40,
)


def _kth_highest(values: list[int], k: int) -> int:
    ordered = sorted(values, reverse=True)
    return ordered[k - 1] if len(ordered) >= k else 0


@settings(max_examples=1000, deadline=None)
@example(  # a request before any observation is not a sequence the controller produces
    ops=[("write", 1), ("flush", "pg3", 1), ("request", ["pg2"], 1), ("reload",), ("observe",)],
    initial=["pg3"],
    reachable={"pg2"},
)
@example(  # the set shrinks to a member that has not flushed what the other acknowledged
    ops=[("write", 50), ("flush", "pg3", 50), ("observe",), ("request", ["pg2"], 1),
         ("reload",), ("observe",)],
    initial=["pg2", "pg3"],
    reachable={"pg2"},
)
@given(
    ops=operations,
    initial=member_sets,
    reachable=st.sets(st.sampled_from(REPLICAS)),
)
def test_a_promotable_member_always_holds_every_acknowledged_commit(
    ops: list[tuple[object, ...]], initial: list[str], reachable: set[str]
) -> None:
    """A server whose synchronous set the controller changes at random (requests that
    take effect on a later reload, observations in between), replicas that flush at
    random: whenever the rule allows a failover, every node it allows to be promoted
    holds every commit acknowledged under any set the server ever used."""
    lsn = 0
    pos = dict.fromkeys(REPLICAS, 0)
    server = q(1, *initial)
    file = server
    acked = 0
    in_force: SyncQuorum | None = None
    pending: tuple[SyncQuorum, ...] = ()

    def ack() -> int:
        values = [min(pos[m], lsn) for m in server.members]
        return _kth_highest(values, server.k)

    for op in ops:
        kind = op[0]
        if kind == "write":
            lsn += int(op[1])  # type: ignore[call-overload]
        elif kind == "flush":
            name = str(op[1])
            pos[name] = min(lsn, pos[name] + int(op[2]))  # type: ignore[call-overload]
        elif kind == "request":
            if in_force is None:
                # The controller decides on a set only in a round whose probe of the
                # primary already recorded the set in force (track, then manage), so
                # it never requests a change before it has seen what it replaces.
                continue
            members = list(op[1])  # type: ignore[call-overload]
            wanted = q(min(int(op[2]), len(members)), *members)  # type: ignore[call-overload]
            pending = requested(pending, wanted)
            file = wanted
        elif kind == "reload":
            server = file
        else:
            rows = tuple(row(n, pos[n]) for n in REPLICAS)
            in_force, pending = track_in_force(in_force, pending, server, prim(lsn=lsn, rows=rows))
        acked = max(acked, ack())
    state = state_with(in_force, *pending)
    v = view(gone("pg1"), *(rep(n, pos[n]) if n in reachable else gone(n) for n in REPLICAS))
    verdict = failover_quorum(state, v, ALL, "pg1")
    for name in REPLICAS:
        if name in reachable and verdict.allows(name, pos[name]):
            assert pos[name] >= acked, (name, pos, acked, in_force, pending)
