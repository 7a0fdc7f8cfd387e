"""Whether the replicas agree that the primary is gone, and whether they are a majority."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hacontrol.core.model import ClusterView, NodeSpec, Observation
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import NodeHealth
from hacontrol.core.topology import (
    is_replica,
    node_endpoints,
    reachable,
    receiver_positively_at,
)

__all__ = [
    "ConfirmStatus",
    "Confirmation",
    "agreement",
    "confirm_failure",
    "controllers_confirm",
    "majority",
    "majority_of",
    "was_streaming",
]


class ConfirmStatus(StrEnum):
    """What the reachable replicas say about the primary."""

    CONFIRMED = "confirmed"  # at least one confirms and none still hears it
    NOT_CONFIRMED = "not_confirmed"  # a replica still hears it
    NO_REPLICA = "no_replica"  # no reachable replica can tell


def agreement(confirming: int, vetoes: int) -> ConfirmStatus:
    """The replicas' verdict: one veto outweighs any number of confirmations."""
    if vetoes:
        return ConfirmStatus.NOT_CONFIRMED
    if confirming:
        return ConfirmStatus.CONFIRMED
    return ConfirmStatus.NO_REPLICA


def majority_of(configured: int) -> int:
    """Confirmations a strict majority of ``configured`` nodes needs: floor(N/2) + 1."""
    return configured // 2 + 1


def majority(confirming: int, needed: int) -> bool:
    """True when ``confirming`` replicas reach the ``needed`` strict majority."""
    return confirming >= needed


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Whether the reachable replicas agree that the primary is gone."""

    status: ConfirmStatus
    # Per reachable replica: node -> "confirms: ...", "still hears ..." or "neutral: ...".
    replicas: Mapping[str, str]
    # The replicas that confirm, the configured nodes the controller cannot reach
    # (the primary aside), and how many confirmations a strict majority of the
    # configured nodes needs (floor(N/2) + 1).
    confirming: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    needed: int = 1
    # Set when a majority of the controllers confirmed instead (controllers_confirm):
    # why, in words.
    by_controllers: str | None = None

    @property
    def majority(self) -> bool:
        """True when enough replicas confirm that the controller is on the majority
        side of any partition: the old primary's side cannot hold a majority too
        (or when a majority of the controllers stood in for them)."""
        return self.by_controllers is not None or majority(len(self.confirming), self.needed)

    def shortfall(self, primary: str, total: int) -> str:
        """Why the confirmations are not a majority, for events and refusals."""
        text = (
            f"only {len(self.confirming)} of the {total} configured nodes confirm that"
            f" {primary} is down (a strict majority needs {self.needed} confirming replicas)"
        )
        if self.unreachable:
            text += f"; unreachable: {', '.join(self.unreachable)}"
        quiet = sorted(n for n in self.replicas if n not in self.confirming)
        if quiet:
            text += f"; not confirming: {', '.join(quiet)}"
        return text


def confirm_failure(
    primary: str,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    history: Mapping[str, NodeHealth] | None = None,
) -> Confirmation:
    """Ask every reachable replica whether it lost ``primary`` too.

    A replica confirms when its WAL receiver is gone or not streaming, or when it
    has heard nothing from its upstream for longer than ``replica_silence_s``. A
    replica that streams from another configured node (cascading) neither confirms
    nor vetoes. Any other streaming, recently-heard replica vetoes.

    ``status`` says whether the reachable replicas agree; ``majority`` whether the
    confirming ones are a strict majority of the configured nodes, which an
    automatic failover needs as well (a controller cut off together with a
    minority must not promote on that minority's word).

    With ``history`` (the nodes' health), a replica confirms only if it was seen
    streaming from the primary within ``replica_silence_s`` before the primary's
    first failed probe of the current run: a replica that was already broken says
    nothing about the primary, so it neither confirms nor vetoes. A controller that
    never saw the primary healthy (it started while the primary was down) has no
    such history and judges from the current view alone.
    """
    own = history.get(primary) if history is not None else None
    failed_since = own.first_failure_at if own is not None else None
    if own is None or own.last_ok_at is None:
        history = None
    verdicts: dict[str, str] = {}
    confirming: list[str] = []
    unreachable: list[str] = []
    vetoes = 0
    for name in sorted(specs):
        obs = view.get(name)
        if name != primary and not reachable(obs):
            unreachable.append(name)
        if name == primary or not is_replica(obs) or obs is None:
            continue
        if history is not None and _lost(obs, settings) and not was_streaming(
            history.get(name), primary, failed_since, settings
        ):
            verdicts[name] = "neutral: was not streaming from the primary before it failed"
            continue
        verdict, says = _replica_verdict(obs, primary, specs, settings)
        verdicts[name] = verdict
        if says is ConfirmStatus.CONFIRMED:
            confirming.append(name)
        elif says is ConfirmStatus.NOT_CONFIRMED:
            vetoes += 1
    return Confirmation(
        agreement(len(confirming), vetoes),
        verdicts,
        tuple(confirming),
        tuple(unreachable),
        majority_of(len(specs)),
    )


def _lost(obs: Observation, settings: DecisionSettings) -> bool:
    """True when the replica's receiver is gone, not streaming or silent too long."""
    receiver = obs.wal_receiver
    return receiver is None or receiver.status != "streaming" or (
        receiver.last_msg_age_s is not None
        and receiver.last_msg_age_s > settings.replica_silence_s
    )


def _replica_verdict(
    obs: Observation, primary: str, specs: Mapping[str, NodeSpec], settings: DecisionSettings
) -> tuple[str, ConfirmStatus | None]:
    """What one reachable replica says: confirms (CONFIRMED), vetoes (NOT_CONFIRMED)
    or neither (None), with the words for the event."""
    receiver = obs.wal_receiver
    if receiver is None:
        return "confirms: no WAL receiver", ConfirmStatus.CONFIRMED
    if receiver.status != "streaming":
        return f"confirms: WAL receiver {receiver.status}", ConfirmStatus.CONFIRMED
    age = receiver.last_msg_age_s
    if age is not None and age > settings.replica_silence_s:
        return f"confirms: silent for {age:.1f} s", ConfirmStatus.CONFIRMED
    primary_spec = specs.get(primary)
    primary_eps = node_endpoints(primary_spec) if primary_spec else ()
    if not receiver_positively_at(receiver, primary_eps) and any(
        receiver_positively_at(receiver, node_endpoints(spec))
        for other, spec in specs.items()
        if other != primary
    ):
        return (
            f"neutral: streams from {receiver.sender_host}:{receiver.sender_port},"
            " not from the primary"
        ), None
    heard = "unknown" if age is None else f"{age:.1f} s ago"
    return f"still hears the primary (last message {heard})", ConfirmStatus.NOT_CONFIRMED


def was_streaming(
    health: NodeHealth | None,
    primary: str,
    failed_since: float | None,
    settings: DecisionSettings,
) -> bool:
    """True when the replica streamed from ``primary`` shortly before it failed."""
    if health is None or health.streaming_from != primary or health.last_streaming_at is None:
        return False
    if failed_since is None:
        return True
    return health.last_streaming_at >= failed_since - settings.replica_silence_s


# WAL a hung primary may still show its replicas (a checkpoint's or a standby
# snapshot's record): more means it still takes writes.
WAL_SLACK_BYTES = 64 * 1024


def controllers_confirm(
    primary: str,
    view: ClusterView,
    settings: DecisionSettings,
    confirmation: Confirmation,
    primary_lsn: int | None,
) -> str | None:
    """Why a majority of the controllers confirm that ``primary`` is down although
    its replicas still hear it (None: they do not).

    The replicas' veto stands for a primary whose WAL senders live while nothing
    else in it answers (backends hung): no client can write to it, and it would
    veto for ever. This controller's own failure is sustained already; a strict
    majority of all the scope's controllers, each failing for the detection window
    on its own, must agree, and no replica may have received WAL past what this
    controller last saw on the primary: one that did proves the primary still takes
    writes, so it is cut off from the controllers, not hung, and a promote would run
    beside it.
    """
    witnesses = view.witnesses
    if witnesses is None or confirmation.status is not ConfirmStatus.NOT_CONFIRMED:
        return None
    others = [s for s in witnesses.failing_s.get(primary, ()) if s >= settings.detection_window_s]
    agreeing = 1 + len(others)
    if witnesses.controllers < 2 or agreeing < majority_of(witnesses.controllers):
        return None
    if primary_lsn is None:
        return None
    for name in confirmation.replicas:
        obs = view.get(name)
        position = obs.wal_position if obs is not None else None
        if position is None or position > primary_lsn + WAL_SLACK_BYTES:
            return None
    return (
        f"{agreeing} of the {witnesses.controllers} controllers cannot query {primary} while"
        " its replicas still hear it, and no replica received WAL since it was last seen:"
        " its WAL senders live but it takes no writes"
    )

