"""Builders for decision-core tests, plus tests of the small pure helpers they rely on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from hacontrol.core.actions import Action, ActionOutcome, Decision, Fence, Promote, Repoint
from hacontrol.core.apply import apply_outcome
from hacontrol.core.events import Event
from hacontrol.core.handle import handle_request
from hacontrol.core.model import (
    ClusterView,
    Endpoint,
    NodeSpec,
    Observation,
    Role,
    TimelineSwitch,
    WalReceiver,
)
from hacontrol.core.requests import Request
from hacontrol.core.round import decide
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.state import ControllerState, initial_state
from hacontrol.io.dsn import dsn_endpoints as endpoints
from hacontrol.io.dsn import node_spec

PORTS = {"pg1": 5432, "pg2": 5433, "pg3": 5434, "pg4": 5435}
MB = 1024 * 1024
BASE_LSN = 0x3000000


def spec(name: str, priority: int = 100, replication_dsn: str | None = None) -> NodeSpec:
    """A node on loopback at its own port."""
    return node_spec(
        name,
        f"host=127.0.0.1 port={PORTS[name]} user=hacontrol dbname=postgres",
        priority,
        replication_dsn,
    )


SPECS = (spec("pg1"), spec("pg2"), spec("pg3"))
SETTINGS = DecisionSettings(
    failure_threshold=3,
    detection_window_s=0.5,
    recovery_threshold=3,
    replica_silence_s=3.0,
    max_lag_bytes=16 * MB,
    cooldown_s=300.0,
    promote_timeout_s=30.0,
    repoint_retry_s=5.0,
    candidate_backoff_s=60.0,
)


def primary(
    name: str,
    at: float,
    *,
    lsn: int = BASE_LSN,
    tl: int = 1,
    read_only: bool = False,
    history: tuple[TimelineSwitch, ...] | None = None,
    system_identifier: int | None = None,
) -> Observation:
    """A reachable primary (``history``: its timeline history; by default one that
    left every lower timeline at ``lsn``, i.e. it holds all of their WAL)."""
    if history is None:
        history = tuple(TimelineSwitch(t, lsn) for t in range(1, tl))
    return Observation(
        name,
        at,
        True,
        role=Role.PRIMARY,
        timeline=tl,
        current_lsn=lsn,
        read_only=read_only,
        history=history,
        system_identifier=system_identifier,
    )


def receiver(
    upstream: str | None = "pg1", status: str = "streaming", age: float | None = 0.1
) -> WalReceiver:
    """A WAL receiver row streaming from ``upstream`` (a node name) on loopback."""
    port = PORTS[upstream] if upstream else None
    return WalReceiver(status, "127.0.0.1" if upstream else None, port, age)


def replica(
    name: str,
    at: float,
    *,
    lsn: int = BASE_LSN,
    tl: int = 1,
    wal: WalReceiver | str | None = "default",
) -> Observation:
    """A reachable replica; by default streaming from pg1 and up to date."""
    row = receiver() if wal == "default" else wal
    assert not isinstance(row, str)
    return Observation(
        name,
        at,
        True,
        role=Role.REPLICA,
        timeline=tl,
        receive_lsn=lsn,
        replay_lsn=lsn,
        read_only=True,
        wal_receiver=row,
    )


def down(name: str, at: float, error: str = "timeout") -> Observation:
    """A failed probe."""
    return Observation(name, at, False, error=error)


def view(at: float, *observations: Observation) -> ClusterView:
    return ClusterView(at, {o.node: o for o in observations})


@dataclass
class Sim:
    """Feeds views through decide, keeping the state and everything emitted."""

    specs: tuple[NodeSpec, ...] = SPECS
    settings: DecisionSettings = SETTINGS
    state: ControllerState = field(default_factory=ControllerState)
    decisions: list[Decision] = field(default_factory=list)
    last_view: ClusterView | None = None

    def __post_init__(self) -> None:
        if not self.state.nodes:
            self.state = initial_state(self.specs)

    def step(self, at: float, *observations: Observation) -> Decision:
        self.last_view = view(at, *observations)
        decision = decide(self.state, self.last_view, self.specs, self.settings)
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def report(self, outcome: ActionOutcome, at: float) -> Decision:
        decision = apply_outcome(self.state, outcome, at, self.settings)
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def request(self, request: Request) -> Decision:
        """An operator request against the latest view."""
        assert self.last_view is not None, "step at least once first"
        decision = handle_request(self.state, self.last_view, self.specs, self.settings, request)
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def healthy(self, at: float, *, lsn: int = BASE_LSN) -> Decision:
        """A round where pg1 is primary and every other node streams from it."""
        return self.step(
            at,
            primary("pg1", at, lsn=lsn),
            *(replica(s.name, at, lsn=lsn) for s in self.specs if s.name != "pg1"),
        )

    def warm(self, rounds: int = 4, start: float = 0.0, step: float = 0.2) -> float:
        """Healthy rounds so pg1 is adopted and replicas pass the recovery threshold."""
        at = start
        for i in range(rounds):
            at = start + i * step
            self.healthy(at)
        return at

    def all_actions(self) -> list[Action]:
        return [a for d in self.decisions for a in d.actions]

    def all_events(self) -> list[Event]:
        return [e for d in self.decisions for e in d.events]


def actions_of(decision: Decision, kind: type) -> list[Action]:
    return [a for a in decision.actions if isinstance(a, kind)]


def kinds(events: Iterable[Event]) -> list[str]:
    return [e.kind for e in events]


def promotes(decision: Decision) -> list[Promote]:
    return [a for a in decision.actions if isinstance(a, Promote)]


def fences(decision: Decision) -> list[Fence]:
    return [a for a in decision.actions if isinstance(a, Fence)]


def repoints(decision: Decision) -> list[Repoint]:
    return [a for a in decision.actions if isinstance(a, Repoint)]


# --------------------------------------------------------------------------- helper tests


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("host=10.0.0.1 port=5433 user=x", (Endpoint("10.0.0.1", 5433),)),
        ("host=db1.example.com user=x", (Endpoint("db1.example.com", 5432),)),
        ("host=localhost port=6000", (Endpoint("loopback", 6000),)),
        ("host=a,b port=1,2", (Endpoint("a", 1), Endpoint("b", 2))),
        ("host=a,b port=7", (Endpoint("a", 7), Endpoint("b", 7))),
        ("host=h hostaddr=10.1.1.1 port=9", (Endpoint("h", 9), Endpoint("10.1.1.1", 9))),
        ("postgresql://u@10.0.0.2:6543/postgres", (Endpoint("10.0.0.2", 6543),)),
        ("user=x", (Endpoint(None, 5432),)),
        ("host=/var/run/postgresql port=5999", (Endpoint("/var/run/postgresql", 5999),)),
        ("this is = not a dsn '", ()),
    ],
)
def test_endpoints_parse_key_value_and_uri(dsn: str, expected: tuple[Endpoint, ...]) -> None:
    assert endpoints(dsn) == expected


def test_initial_state_seeds_flags_and_drops_unknown_or_fenced_primary() -> None:
    state = initial_state(
        SPECS,
        known_primary="pg2",
        paused=True,
        maintenance={"pg3", "nope"},
        fenced={"pg1"},
        last_failover_at=12.0,
    )
    assert state.primary == "pg2"
    assert state.paused
    assert state.maintenance == {"pg3"}
    assert state.fenced == {"pg1"}
    assert state.last_failover_at == 12.0
    assert set(state.nodes) == {"pg1", "pg2", "pg3"}
    assert initial_state(SPECS, known_primary="pg9").primary is None
    assert initial_state(SPECS, known_primary="pg1", fenced={"pg1"}).primary is None
