"""Which controller may act: the leader of an etcd lease, until its own deadline.

Pure: the shell reports what etcd answered (a :class:`DcsAnswer`) and when the
request was sent; these functions say what this controller now is. The rules:

* only a failed compare (another term owns the leader key) or a lease etcd no
  longer knows means "not the leader any more" (:attr:`DcsAnswer.LOST`);
* an unreachable etcd, a timeout or "no leader" in etcd is :attr:`DcsAnswer.UNKNOWN`:
  the leader keeps its term but acts only until its deadline, the send time of its
  last successful keepalive plus the ttl minus a margin, and then steps down
  quietly. The server counts the lease from when it received the keepalive, which
  is later than its send time, so the deadline is never after the lease's expiry
  (clock rates aside, which the margin covers);
* a term is named by its epoch, the leader key's create revision: every fenced
  write compares it, so a controller woken after its term ended cannot write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

__all__ = [
    "ControllerRole",
    "DcsAnswer",
    "Leadership",
    "after_campaign",
    "after_keepalive",
    "after_resign",
    "expire",
    "may_act",
    "standby",
]


class DcsAnswer(Enum):
    """What one etcd request came to, as far as leadership goes."""

    OK = "ok"
    # A compare failed or the lease is gone: another term may run. Stop at once.
    LOST = "lost"
    # etcd did not answer (unreachable, timeout, no quorum): nothing is known.
    UNKNOWN = "unknown"


class ControllerRole(Enum):
    """This controller's part among the controllers of one scope."""

    LEADER = "leader"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class Leadership:
    """This controller's view of the leadership."""

    role: ControllerRole = ControllerRole.STANDBY
    # The leader key's create revision of this controller's term (LEADER only).
    epoch: int | None = None
    # The leader's name as last read (this controller's own while LEADER).
    leader: str | None = None
    # Monotonic time after which this controller takes no side effect (LEADER only).
    deadline: float | None = None
    # Whether the last etcd request was answered.
    dcs_up: bool = False


def standby(leader: str | None, *, dcs_up: bool) -> Leadership:
    """Not the leader; ``leader`` is who is (None: nobody, or not known)."""
    return Leadership(ControllerRole.STANDBY, None, leader, None, dcs_up)


def may_act(state: Leadership, now: float) -> bool:
    """True while this controller leads and its deadline has not passed."""
    return (
        state.role is ControllerRole.LEADER
        and state.deadline is not None
        and now < state.deadline
    )


def after_campaign(
    state: Leadership,
    answer: DcsAnswer,
    *,
    me: str,
    epoch: int | None,
    leader: str | None,
    sent_at: float,
    ttl_s: float,
    margin_s: float,
) -> Leadership:
    """The campaign sent at ``sent_at`` came back: won (``epoch`` set, the lease was
    just granted or kept alive by that send), lost to ``leader``, or unanswered."""
    if answer is DcsAnswer.OK and epoch is not None and leader == me:
        return Leadership(ControllerRole.LEADER, epoch, me, sent_at + ttl_s - margin_s, True)
    if answer is DcsAnswer.UNKNOWN:
        return _unanswered(state)
    return standby(leader, dcs_up=True)


def after_keepalive(
    state: Leadership,
    answer: DcsAnswer,
    *,
    sent_at: float,
    ttl_s: float,
    margin_s: float,
) -> Leadership:
    """A keepalive of the leader's lease, sent at ``sent_at``, came back."""
    if state.role is not ControllerRole.LEADER:
        return replace(state, dcs_up=answer is not DcsAnswer.UNKNOWN)
    if answer is DcsAnswer.OK:
        deadline = sent_at + ttl_s - margin_s
        # A late answer to an earlier send never moves the deadline back.
        if state.deadline is not None:
            deadline = max(deadline, state.deadline)
        return replace(state, deadline=deadline, dcs_up=True)
    if answer is DcsAnswer.LOST:
        return standby(None, dcs_up=True)
    return _unanswered(state)


def after_resign(state: Leadership) -> Leadership:
    """This controller gave its term up (a clean stop, or a failed fenced write)."""
    return standby(None, dcs_up=state.dcs_up)


def expire(state: Leadership, now: float) -> Leadership:
    """A leader past its deadline is a standby that does not know the leader."""
    if state.role is ControllerRole.LEADER and not may_act(state, now):
        return standby(None, dcs_up=state.dcs_up)
    return state


def _unanswered(state: Leadership) -> Leadership:
    # The term stands until its deadline: etcd may be down for everyone, and a
    # step down here would leave no leader when it is back.
    return replace(state, dcs_up=False)
