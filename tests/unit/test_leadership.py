"""The leadership rules (pure): a leader acts only before its own deadline, which
only a successful keepalive moves, and only etcd's "no" ends a term early."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hacontrol.core.leadership import (
    ControllerRole,
    DcsAnswer,
    Leadership,
    after_campaign,
    after_keepalive,
    after_resign,
    expire,
    may_act,
    standby,
)

TTL, MARGIN = 10.0, 2.0


def _won(at: float = 100.0, epoch: int = 7) -> Leadership:
    return after_campaign(
        standby(None, dcs_up=True), DcsAnswer.OK, me="ctl-a", epoch=epoch, leader="ctl-a",
        sent_at=at, ttl_s=TTL, margin_s=MARGIN,
    )


def test_a_won_campaign_leads_until_send_time_plus_ttl_minus_margin() -> None:
    state = _won(at=100.0)
    assert state.role is ControllerRole.LEADER and state.epoch == 7
    assert state.deadline == 108.0
    assert may_act(state, 107.99) and not may_act(state, 108.0)


def test_a_lost_campaign_names_the_leader_and_never_acts() -> None:
    state = after_campaign(
        standby(None, dcs_up=False), DcsAnswer.OK, me="ctl-a", epoch=None, leader="ctl-b",
        sent_at=1.0, ttl_s=TTL, margin_s=MARGIN,
    )
    assert state == standby("ctl-b", dcs_up=True)
    assert not may_act(state, 1.0)


def test_a_campaign_naming_another_leader_is_never_a_term_even_with_an_epoch() -> None:
    state = after_campaign(
        standby(None, dcs_up=True), DcsAnswer.OK, me="ctl-a", epoch=9, leader="ctl-b",
        sent_at=1.0, ttl_s=TTL, margin_s=MARGIN,
    )
    assert state.role is ControllerRole.STANDBY


def test_no_answer_keeps_the_term_but_not_past_its_deadline() -> None:
    state = after_keepalive(_won(at=100.0), DcsAnswer.UNKNOWN, sent_at=103.0, ttl_s=TTL,
                            margin_s=MARGIN)
    assert state.role is ControllerRole.LEADER and not state.dcs_up
    assert state.deadline == 108.0
    assert may_act(state, 107.0) and not may_act(state, 108.5)
    assert expire(state, 108.5) == standby(None, dcs_up=False)
    assert expire(state, 107.0) == state


def test_lost_ends_the_term_at_once() -> None:
    state = after_keepalive(_won(), DcsAnswer.LOST, sent_at=101.0, ttl_s=TTL, margin_s=MARGIN)
    assert state.role is ControllerRole.STANDBY and not may_act(state, 101.0)


def test_resign_ends_the_term() -> None:
    assert not may_act(after_resign(_won()), 100.0)


events = st.lists(
    st.tuples(st.sampled_from(list(DcsAnswer)), st.floats(0.0, 5.0)), min_size=1, max_size=30
)


@given(events)
def test_a_leader_never_acts_past_its_last_ok_send_plus_ttl_minus_margin(
    steps: list[tuple[DcsAnswer, float]],
) -> None:
    """Whatever etcd answers and however late, the deadline is bounded by the send
    time of the latest successful keepalive, and a LOST is never followed by acting."""
    now = 100.0
    state = _won(at=now)
    last_ok_send = now
    lost = False
    for answer, gap in steps:
        now += gap
        state = after_keepalive(state, answer, sent_at=now, ttl_s=TTL, margin_s=MARGIN)
        if answer is DcsAnswer.OK and not lost:
            last_ok_send = now
        if answer is DcsAnswer.LOST:
            lost = True
        if lost:
            assert not may_act(state, now)
        if state.deadline is not None:
            assert state.deadline <= last_ok_send + TTL - MARGIN
        assert not may_act(state, last_ok_send + TTL - MARGIN)
