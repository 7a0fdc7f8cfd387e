"""The controller's wiring of the background procedures, without a database: which
nodes it may rejoin, that a rejoin runs beside the caller and reports its outcome
to the core, one per node, and that a stop waits for it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hacontrol.config import config_from_mapping
from hacontrol.core.actions import Action, ActionOutcome, Rejoin
from hacontrol.core.model import ClusterView, NodeSpec, Observation
from hacontrol.core.results import OutcomeStatus
from hacontrol.io import steps
from hacontrol.io.steps import StepResult
from hacontrol.service.controller import Controller, procedure_key
from hacontrol.service.executors import ExecutionContext


def _controller(tmp_path: Path, **rejoin: Any) -> Controller:
    config = config_from_mapping(
        {
            "journal": str(tmp_path / "j.jsonl"),
            "rejoin": rejoin,
            "nodes": [
                {"name": "pg1", "dsn": "host=127.0.0.1 port=1",
                 "driver": {"kind": "local", "data_dir": str(tmp_path / "pg1")}},
                {"name": "pg2", "dsn": "host=127.0.0.1 port=2",
                 "driver": {"kind": "command", "stop": "true", "start": "true"}},
                {"name": "pg3", "dsn": "host=127.0.0.1 port=3"},
            ],
        }
    )
    return Controller(config)


def test_only_nodes_whose_driver_can_rejoin_are_rejoined(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    assert controller.settings.rejoin_nodes == {"pg1"}
    assert controller.settings.rejoin_automatic is True
    assert _controller(tmp_path, automatic=False).settings.rejoin_automatic is False
    assert "local driver" in controller.snapshot()["drivers"]["pg1"]
    assert controller.snapshot()["drivers"]["pg3"] == "no driver (SQL only)"


async def test_a_rejoin_runs_in_the_background_and_reports_to_the_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = _controller(tmp_path)
    controller.state = replace(
        controller.state, fenced=frozenset({"pg1"}), rejoining=frozenset({"pg1"})
    )
    release = asyncio.Event()
    calls: list[Action] = []

    async def slow_rejoin(ctx: ExecutionContext, action: Action) -> ActionOutcome:
        calls.append(action)
        await release.wait()
        return ActionOutcome(action, OutcomeStatus.SUCCEEDED, "streams")

    monkeypatch.setitem(controller.executors, Rejoin, slow_rejoin)
    action = Rejoin("pg1", "pg2", "test")
    outcomes = await asyncio.wait_for(controller._carry_out((action, action)), 1)
    assert outcomes == ()  # nothing waited for it
    await asyncio.sleep(0)
    assert controller.running(procedure_key(action)) and len(calls) == 1  # one per node
    assert controller.snapshot()["procedures"] == ["rejoin:pg1"]
    release.set()
    await asyncio.wait_for(controller.wait_procedures(), 1)
    assert controller.state.fenced == frozenset() and controller.state.rejoining == frozenset()
    kinds = [r["kind"] for r in controller.journal.read()]
    assert kinds == ["procedure_skipped", "action_started", "action_finished", "node_rejoined"]


async def test_a_rejoin_that_raises_is_reported_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = _controller(tmp_path)
    controller.state = replace(
        controller.state, fenced=frozenset({"pg1"}), rejoining=frozenset({"pg1"})
    )

    async def broken(ctx: ExecutionContext, action: Action) -> ActionOutcome:
        raise RuntimeError("bug")

    monkeypatch.setitem(controller.executors, Rejoin, broken)
    await controller._carry_out((Rejoin("pg1", "pg2", "test"),))
    await asyncio.wait_for(controller.wait_procedures(), 1)
    assert controller.state.rejoining == frozenset() and controller.state.fenced == {"pg1"}
    failed = [r for r in controller.journal.read() if r["kind"] == "rejoin_failed"]
    assert failed and "internal error: RuntimeError: bug" in failed[0]["message"]


def test_the_rejoin_bound_covers_every_step(tmp_path: Path) -> None:
    controller = _controller(tmp_path, timeout=10.0)
    # 8 local-driver steps of 60 s each plus two waits for streaming.
    assert controller.rejoin_bound("pg1") == 8 * 60.0 + 2 * 10.0
    with_backup = _controller(tmp_path, timeout=10.0, allow_basebackup=True)
    assert with_backup.rejoin_bound("pg1") == 8 * 60.0 + 2 * 10.0 + 3600.0


async def test_managed_settings_run_beside_the_round_one_pass_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that hangs on connect while its settings are applied (frozen, half-open)
    must not hold up the round: the next probes, and with them failure detection,
    go on while the settings pass waits."""
    controller = _controller(tmp_path)
    release = asyncio.Event()
    calls: list[str] = []

    async def hanging(spec: NodeSpec, wanted: dict[str, int], seen: dict[str, int], *,
                      connect_timeout: float) -> StepResult:
        calls.append(spec.name)
        if spec.name == "pg1":
            await release.wait()
        return StepResult(True, "set", 0.0)

    monkeypatch.setattr(steps, "ensure_settings", hanging)
    for prober in controller.probers.values():
        prober.settings_ms = {"wal_receiver_timeout": 1}
    view = ClusterView(at=0.0, observations={
        name: Observation(name, 0.0, True) for name in ("pg1", "pg2", "pg3")
    })
    controller._start_settings(view)  # returns at once
    await asyncio.sleep(0.05)
    assert sorted(calls) == ["pg1", "pg2", "pg3"]  # every node at once, pg1 still waiting
    controller._start_settings(view)  # the pass in flight is not doubled
    await asyncio.sleep(0.05)
    assert sorted(calls) == ["pg1", "pg2", "pg3"]
    release.set()
    await asyncio.wait_for(controller.wait_procedures(), 1)
    managed = [r["node"] for r in controller.journal.read() if r["kind"] == "settings_managed"]
    assert sorted(managed) == ["pg1", "pg2", "pg3"]
