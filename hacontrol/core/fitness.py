"""What keeps a node from being promoted: one ordered table of rules.

Candidate ranking takes the first rule that matches (a candidate's ``excluded``),
a manual failover's refusal lists every rule that matches, and the synchronous
set uses the rules that also keep a node from acknowledging commits
(:func:`sync_exclusion`). Each rule has a short ``reason`` (``in maintenance``)
and a ``problem`` sentence that names the node (``pg2 is in maintenance``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hacontrol.core.model import ClusterView, NodeSpec, Observation, Role
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import ControllerState, NodeHealth
from hacontrol.core.topology import is_primary, is_replica, reachable

__all__ = [
    "RULES",
    "NodeFacts",
    "Rule",
    "all_problems",
    "first_exclusion",
    "size",
    "sync_exclusion",
]

_MIB = 1024 * 1024


def size(n: int) -> str:
    """Bytes for people: ``40 MiB``, ``512 KiB``, ``100 B``."""
    if abs(n) >= _MIB:
        return f"{round(n / _MIB, 1):g} MiB"
    if abs(n) >= 1024:
        return f"{round(n / 1024, 1):g} KiB"
    return f"{n} B"


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """Everything the rules look at for one node."""

    name: str
    # None where only the synchronous rules are asked (they need no configuration).
    spec: NodeSpec | None
    obs: Observation | None
    health: NodeHealth
    state: ControllerState
    view: ClusterView
    specs: Mapping[str, NodeSpec]
    settings: DecisionSettings
    # Bytes behind the reference position (None: unknown).
    lag: int | None = None

    @property
    def role(self) -> Role:
        """The role the node answered with (UNKNOWN when it did not answer)."""
        return self.obs.role if self.obs is not None else Role.UNKNOWN

    @property
    def backoff_left(self) -> float:
        """Seconds left of its back-off after a failed promote (0: none)."""
        until = self.health.backoff_until
        return until - self.view.at if until is not None and self.view.at < until else 0.0


@dataclass(frozen=True, slots=True)
class Rule:
    """One reason a node is not a normal promotion candidate."""

    code: str
    test: Callable[[NodeFacts], bool]
    reason: Callable[[NodeFacts], str]
    problem: Callable[[NodeFacts], str]
    # Consulted for a candidate's ranking (else only for a manual failover's refusal).
    ranks: bool = True
    # Also keeps the node out of the synchronous set.
    sync: bool = False


def _unseen_promotes(f: NodeFacts) -> list[str]:
    return sorted(
        n for n in f.specs if n != f.name and f.state.health(n).maybe_promoted
    )


def _other_primaries(f: NodeFacts) -> list[str]:
    return [
        n for n in f.specs
        if n not in (f.name, f.state.primary) and is_primary(f.view.get(n))
    ]


def _unhealthy(f: NodeFacts) -> str:
    return (
        f"not healthy yet ({f.health.consecutive_successes}/"
        f"{f.settings.recovery_threshold} healthy probes)"
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "unreachable",
        lambda f: not reachable(f.obs),
        lambda f: "unreachable",
        lambda f: f"{f.name} is unreachable",
        sync=True,
    ),
    Rule(
        "role",
        lambda f: reachable(f.obs) and f.role is not Role.REPLICA,
        lambda f: f"role {f.role}",
        lambda f: f"{f.name}'s role is {f.role}",
        sync=True,
    ),
    Rule(
        "priority_zero",
        lambda f: f.spec is not None and f.spec.priority <= 0,
        lambda f: "priority 0 (never promoted)",
        lambda f: f"{f.name} has priority 0 (never promoted)",
    ),
    Rule(
        "maintenance",
        lambda f: f.name in f.state.maintenance,
        lambda f: "in maintenance",
        lambda f: f"{f.name} is in maintenance",
        sync=True,
    ),
    Rule(
        "fenced",
        lambda f: f.name in f.state.fenced,
        lambda f: "fenced (needs rejoin)",
        lambda f: f"{f.name} is fenced (needs rejoin)",
        sync=True,
    ),
    Rule(
        "backed_off",
        lambda f: f.backoff_left > 0,
        lambda f: f"backed off after a failed promote for {f.backoff_left:.1f} s",
        lambda f: f"{f.name} is backed off after a failed promote for {f.backoff_left:.1f} s",
    ),
    Rule(
        "abandoned_promote",
        lambda f: bool(_unseen_promotes(f)),
        lambda f: "an abandoned promote may have landed",
        lambda f: (
            f"the abandoned failover to {', '.join(_unseen_promotes(f))} may have promoted it"
            " out of sight"
        ),
        ranks=False,
    ),
    Rule(
        "other_primary",
        lambda f: bool(_other_primaries(f)),
        lambda f: "another node runs as a primary",
        lambda f: (
            f"{', '.join(_other_primaries(f))} still run as a (read-only) primary, which a"
            " session can turn read-write: rejoin or stop it first"
        ),
        ranks=False,
    ),
    Rule(
        "unhealthy",
        lambda f: reachable(f.obs)
        and f.health.consecutive_successes < f.settings.recovery_threshold,
        _unhealthy,
        lambda f: f"{f.name} is {_unhealthy(f)}",
    ),
    Rule(
        "position_unknown",
        lambda f: is_replica(f.obs) and f.obs is not None and f.obs.wal_position is None,
        lambda f: "WAL position unknown",
        lambda f: f"{f.name}'s WAL position is unknown",
    ),
    Rule(
        "lag",
        lambda f: f.lag is not None and f.lag > f.settings.max_lag_bytes,
        lambda f: f"lag {f.lag} B > max_lag_bytes {f.settings.max_lag_bytes}",
        lambda f: (
            f"{f.name} is {size(f.lag or 0)} behind (max {size(f.settings.max_lag_bytes)})"
        ),
    ),
)


def first_exclusion(facts: NodeFacts) -> str | None:
    """Why ranking excludes the node: the first ranking rule that matches (None: fit)."""
    for rule in RULES:
        if rule.ranks and rule.test(facts):
            return rule.reason(facts)
    return None


def all_problems(facts: NodeFacts) -> list[str]:
    """Every rule that keeps the node from being a normal candidate, as sentences."""
    return [rule.problem(facts) for rule in RULES if rule.test(facts)]


def sync_exclusion(
    name: str, view: ClusterView, state: ControllerState, settings: DecisionSettings
) -> str | None:
    """Why ``name`` cannot acknowledge commits, by the shared rules (None: it can)."""
    facts = NodeFacts(name, None, view.get(name), state.health(name), state, view, {}, settings)
    for rule in RULES:
        if rule.sync and rule.test(facts):
            return rule.reason(facts)
    return None
