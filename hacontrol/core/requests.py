"""Operator requests to the decision core (see docs/operations.md). Plain data."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ManualFailover",
    "NodeRejoined",
    "Pause",
    "RejoinRequest",
    "Request",
    "Resume",
    "SetMaintenance",
    "SwitchoverRequest",
]


@dataclass(frozen=True, slots=True)
class Pause:
    """Observe and report only: no actions until :class:`Resume`."""


@dataclass(frozen=True, slots=True)
class Resume:
    """End a pause."""


@dataclass(frozen=True, slots=True)
class SetMaintenance:
    """Put ``node`` in maintenance (never a candidate; its failure starts no failover)."""

    node: str
    on: bool


@dataclass(frozen=True, slots=True)
class ManualFailover:
    """Promote ``to`` now (primary down, manual mode, or a specific node wanted).

    ``force`` overrides the candidate checks (lag, health, priority 0, maintenance,
    fenced, unreachable) but never the two-primaries and one-in-flight rules.
    """

    to: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class SwitchoverRequest:
    """Planned switchover to ``to`` (None: the best candidate by the usual ranking)."""

    to: str | None = None


@dataclass(frozen=True, slots=True)
class NodeRejoined:
    """``node`` was rejoined as a replica (by an operator or the shell): un-fence it."""

    node: str


@dataclass(frozen=True, slots=True)
class RejoinRequest:
    """Rejoin ``node`` as a replica of the primary: with a driver that can, the shell
    runs the procedure (:class:`Rejoin`); without one, the operator did it by hand
    and this reports it like :class:`NodeRejoined`."""

    node: str


Request = (
    Pause
    | Resume
    | SetMaintenance
    | ManualFailover
    | SwitchoverRequest
    | NodeRejoined
    | RejoinRequest
)
