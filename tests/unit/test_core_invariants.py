"""The core's typed seams and its invariants: the majority rule as a case table, the
event vocabulary, the invariant check, and recovery from the journal."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from hacontrol.core.actions import Promote
from hacontrol.core.confirm import ConfirmStatus, agreement, majority, majority_of
from hacontrol.core.events import EventKind, event_kinds
from hacontrol.core.invariants import check
from hacontrol.core.model import ClusterView, Observation, Role
from hacontrol.core.recovery import (
    FOLDED_KINDS,
    SNAPSHOT_KIND,
    fold,
    from_snapshot,
    restart_state,
    to_snapshot,
)
from hacontrol.core.state import ControllerState, FailoverInFlight
from hacontrol.io.journal import Journal
from hacontrol.service.recovery import recover_state
from tests.unit.test_decide_support import SPECS

CORE = Path(__file__).resolve().parents[2] / "hacontrol" / "core"

# configured nodes, confirming replicas, vetoing replicas -> status, majority
CASES = """
3 0 0 no_replica    no
3 1 0 confirmed     no
3 2 0 confirmed     yes
3 2 1 not_confirmed yes
3 0 1 not_confirmed no
4 2 0 confirmed     no
4 3 0 confirmed     yes
5 3 0 confirmed     yes
5 2 0 confirmed     no
1 0 0 no_replica    no
2 1 0 confirmed     no
"""


@pytest.mark.parametrize("line", [x for x in CASES.strip().splitlines()])
def test_confirmation_case_table(line: str) -> None:
    configured, confirming, vetoes, status, won = line.split()
    assert agreement(int(confirming), int(vetoes)) is ConfirmStatus(status)
    needed = majority_of(int(configured))
    assert majority(int(confirming), needed) is (won == "yes")


def _emitted_members() -> set[str]:
    """Every EventKind member the core's rules name (events.py defines them)."""
    names: set[str] = set()
    for path in CORE.glob("*.py"):
        if path.name not in ("events.py", "recovery.py", "invariants.py"):
            names |= set(re.findall(r"EventKind\.([A-Z_]+)", path.read_text()))
    return names


def test_every_event_kind_is_emitted_and_recovery_reads_only_those() -> None:
    emitted = _emitted_members()
    assert emitted == {k.name for k in EventKind}
    assert {k.name for k in FOLDED_KINDS} <= emitted
    assert event_kinds() == {k.value for k in EventKind}
    assert len(event_kinds()) == len(EventKind)


def test_the_invariant_check_sees_each_broken_rule() -> None:
    names = [s.name for s in SPECS]
    good = ControllerState(primary="pg1", fenced=frozenset({"pg2"}))
    assert check(good, SPECS) == []
    flight = FailoverInFlight("pg9", "pg1", 0.0, 1, None)
    bad = ControllerState(
        primary="pg1",
        fenced=frozenset({"pg1"}),
        in_flight=flight,
        rejoining=frozenset({"pgx"}),
        conditions=frozenset({"primary_failed:pg1", "made_up:pg1"}),
    )
    broken = check(bad, SPECS)
    assert len(broken) == 4, broken
    view = ClusterView(1.0, {
        n: Observation(n, 1.0, True, role=Role.PRIMARY if n == "pg1" else Role.REPLICA)
        for n in names
    })
    assert check(good, SPECS, view, (Promote("pg2", "why", "pg1"),)) != []


def _records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """A random journal: the kinds recovery reads, with the shell's own kinds between."""
    kinds = [*sorted(FOLDED_KINDS), "controller_started", "rejoin_finished", "paused"]
    nodes = [s.name for s in SPECS]
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        record: dict[str, Any] = {"seq": i + 1, "ts": 1000.0 + i, "kind": str(kind),
                                  "node": rng.choice([*nodes, None])}
        if rng.random() < 0.8:
            record["details"] = {
                "old_primary": rng.choice(nodes),
                "old_timeline": rng.choice([None, 1, 2]),
                "operation": rng.choice([None, "failover", "switchover", "failback"]),
                "system_identifier": rng.choice([None, 7]),
            }
        out.append(json.loads(json.dumps(record)))
    return out


def test_a_snapshot_stands_for_everything_before_it() -> None:
    rng = random.Random(5)
    for _ in range(200):
        records = _records(rng, rng.randint(0, 40))
        ours = fold(records)
        assert ours.records == sum(1 for r in records if r["kind"] != SNAPSHOT_KIND)
        snapshot = {"kind": SNAPSHOT_KIND, "snapshot": to_snapshot(ours)}
        assert fold([*records[:3], snapshot]) == ours
        assert from_snapshot(to_snapshot(ours)) == ours
        # Folding one record at a time (as the journal does on append) is the same.
        stepwise = None
        for record in records:
            stepwise = fold((record,), stepwise)
        assert (stepwise or fold(())) == ours


def test_the_journal_restarts_the_controller_from_its_fold(tmp_path: Path) -> None:
    rng = random.Random(11)
    for i in range(40):
        journal = Journal(tmp_path / f"journal{i}.jsonl")
        records = _records(rng, rng.randint(1, 30))
        for record in records:
            fields = {k: v for k, v in record.items() if k not in ("seq", "ts", "kind")}
            journal.append(record["kind"], **fields)
        written = [json.loads(line) for line in journal.path.read_text().splitlines()]
        wall_now = written[-1]["ts"] + 30.0
        theirs, _ = recover_state(
            journal, SPECS, pinned=None, clock=lambda: 500.0, wall=lambda w=wall_now: w
        )
        ours = restart_state(fold(written), SPECS, pinned=None, now=500.0, wall_now=wall_now)
        assert ours == theirs
