"""How the controller classifies a step cut off by its policy: a promote that timed
out after it was sent may have landed, so it must never read as 'not attempted'."""

import asyncio
from pathlib import Path

import pytest

from hacontrol.config import config_from_mapping
from hacontrol.core.actions import Fence, Promote
from hacontrol.core.model import ClusterView, Observation, Role
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.state import Operation
from hacontrol.io import steps as act
from hacontrol.io.journal import Journal
from hacontrol.service.controller import Controller
from hacontrol.service.recovery import ForeignJournalError


def _controller(tmp_path: Path) -> Controller:
    config = config_from_mapping(
        {
            "journal": str(tmp_path / "j.jsonl"),
            "timing": {"probe_timeout": 0.05, "promote_timeout": 0.1},
            "nodes": [
                {"name": "pg1", "dsn": "host=127.0.0.1 port=1"},
                {"name": "pg2", "dsn": "host=127.0.0.1 port=2"},
            ],
        }
    )
    return Controller(config)


async def test_promote_cut_off_by_the_policy_is_uncertain(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    sent = asyncio.Event()

    async def hanging_promote(spec: object, **kw: object) -> act.StepResult:
        sent.set()  # pg_promote went out; then the link stalls
        await asyncio.sleep(30)
        return act.StepResult(True, "never")

    result = await controller.context().guarded("pg2", hanging_promote, None, promote=True)
    assert sent.is_set()
    assert not result.ok
    assert result.detail.startswith("timed out")
    assert not result.detail.startswith(("not attempted", "cannot connect"))


async def test_promote_outcome_after_timeout_is_uncertain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = _controller(tmp_path)

    async def hanging_promote(spec: object, **kw: object) -> act.StepResult:
        await asyncio.sleep(30)
        return act.StepResult(True, "never")

    monkeypatch.setattr(act, "promote", hanging_promote)
    promote = controller.executors[Promote]
    outcome = await promote(controller.context(), Promote("pg2", "test", "pg1"))
    assert outcome.status is OutcomeStatus.UNCERTAIN


async def test_step_rejected_by_a_full_bulkhead_is_not_attempted(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    release = asyncio.Event()

    async def slow(spec: object, **kw: object) -> act.StepResult:
        await release.wait()
        return act.StepResult(True, "done")

    # One slot per node plus a bounded queue: fill both, the next one is rejected.
    running = [
        asyncio.create_task(controller.context().guarded("pg2", slow, None)) for _ in range(9)
    ]
    await asyncio.sleep(0.01)
    rejected = await controller.context().guarded("pg2", slow, None)
    release.set()
    await asyncio.gather(*running)
    assert rejected.detail.startswith("not attempted")


def test_restart_during_a_failover_keeps_the_cooldown(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append("primary_adopted", node="pg1")
    journal.append("failover_started", node="pg2", details={"old_primary": "pg1"})
    controller = _controller(tmp_path)
    assert controller.state.last_failover_at is not None
    elapsed = controller._clock() - controller.state.last_failover_at
    assert 0 <= elapsed < 5
    recovered = [r for r in journal.read() if r["kind"] == "controller_recovered"]
    assert recovered[-1]["unresolved_failover"]["node"] == "pg2"


def _journal_with_failover_started(path: Path, age_s: float) -> None:
    import json
    import time

    records = [
        {"seq": 1, "ts": time.time() - age_s - 1, "kind": "primary_adopted", "node": "pg1"},
        {"seq": 2, "ts": time.time() - age_s, "kind": "failover_started", "node": "pg2",
         "details": {"old_primary": "pg1"}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_failover_left_unfinished_is_resumed_in_flight(tmp_path: Path) -> None:
    _journal_with_failover_started(tmp_path / "j.jsonl", age_s=60)
    controller = _controller(tmp_path)
    flight = controller.state.in_flight
    assert flight is not None and flight.resumed and flight.candidate == "pg2"
    assert flight.old_primary == "pg1" and flight.kind is Operation.FAILOVER
    # Its start is carried over: only choosing another candidate waits for it.
    assert 59 <= controller._clock() - flight.started_at < 65
    assert controller.state.last_failover_at is not None  # the cool-down holds


def _identified(controller: Controller, identifier: int) -> ClusterView:
    now = controller._clock()
    return ClusterView(at=now, observations={
        name: Observation(name, now, True, role=Role.REPLICA, timeline=1,
                          system_identifier=identifier)
        for name in ("pg1", "pg2")
    })


def test_a_journal_of_another_cluster_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append("cluster_identified", node=None, details={"system_identifier": 11})
    journal.append("node_fenced", node="pg1")
    controller = _controller(tmp_path)
    assert controller.state.system_identifier == 11
    controller._check_journal_identity(_identified(controller, 11))  # the same cluster
    controller = _controller(tmp_path)
    with pytest.raises(ForeignJournalError, match="give this cluster its own journal path"):
        controller._check_journal_identity(_identified(controller, 12))
    assert [r for r in journal.read() if r["kind"] == "foreign_journal"]


def test_a_journal_that_disagrees_with_the_pinned_identity_is_refused_at_once(
    tmp_path: Path,
) -> None:
    Journal(tmp_path / "j.jsonl").append(
        "cluster_identified", node=None, details={"system_identifier": 11}
    )
    config = config_from_mapping({
        "journal": str(tmp_path / "j.jsonl"),
        "system_identifier": 12,
        "nodes": [
            {"name": "pg1", "dsn": "host=127.0.0.1 port=1"},
            {"name": "pg2", "dsn": "host=127.0.0.1 port=2"},
        ],
    })
    with pytest.raises(ForeignJournalError, match="pinned"):
        Controller(config)


def _controller_with_fence_hook(tmp_path: Path, hook: str) -> Controller:
    config = config_from_mapping(
        {
            "journal": str(tmp_path / "j.jsonl"),
            "timing": {"probe_timeout": 0.2},
            "hooks": {"fence": hook, "timeout": 5},
            "nodes": [
                {"name": "pg1", "dsn": "host=127.0.0.1 port=1"},
                {"name": "pg2", "dsn": "host=127.0.0.1 port=2"},
            ],
        }
    )
    return Controller(config)


async def test_fence_before_a_promote_runs_the_hook_beside_one_sql_attempt(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "fenced"
    controller = _controller_with_fence_hook(tmp_path, f"touch {marker}")
    fence = Fence("pg1", "unreachable old primary", then=Promote("pg2", "test", "pg1"))
    outcome = await controller.executors[Fence](controller.context(), fence)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    assert marker.exists()
    assert "cannot connect" in outcome.detail and "fence hook ok" in outcome.detail


async def test_fence_before_a_promote_fails_when_neither_sql_nor_hook_fenced(
    tmp_path: Path,
) -> None:
    controller = _controller_with_fence_hook(tmp_path, "exit 3")
    fence = Fence("pg1", "unreachable old primary", then=Promote("pg2", "test", "pg1"))
    outcome = await controller.executors[Fence](controller.context(), fence)
    assert outcome.status is OutcomeStatus.FAILED
    assert "fence hook failed (3)" in outcome.detail


async def test_a_promote_that_cannot_connect_failed_and_was_not_attempted(
    tmp_path: Path,
) -> None:
    controller = _controller(tmp_path)  # nothing listens on pg2's port
    promote = controller.executors[Promote]
    outcome = await promote(controller.context(), Promote("pg2", "test", "pg1"))
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.attempted is False


def test_a_broken_invariant_is_journaled_once_per_change(tmp_path: Path) -> None:
    from hacontrol.service.reporting import report_broken_invariants

    journal = Journal(tmp_path / "j.jsonl")
    broken = report_broken_invariants(journal, ["primary pg1 is fenced"], ())
    broken = report_broken_invariants(journal, ["primary pg1 is fenced"], broken)
    broken = report_broken_invariants(journal, [], broken)
    assert broken == ()
    report_broken_invariants(journal, ["primary pg1 is fenced"], broken)
    records = [r for r in journal.read() if r["kind"] == "invariant_broken"]
    assert len(records) == 2 and records[0]["severity"] == "critical"
    assert records[0]["broken"] == ["primary pg1 is fenced"]


async def test_a_failing_round_listener_does_not_stop_the_loop(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    stop = asyncio.Event()
    rounds: list[int] = []

    def listener(result: object) -> None:
        rounds.append(controller.rounds)
        if len(rounds) >= 3:
            stop.set()
        raise RuntimeError("a metrics bug")

    await asyncio.wait_for(controller.run(stop, on_round=listener), 10)
    assert len(rounds) == 3 and controller.rounds == 3
