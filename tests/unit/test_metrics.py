"""Prometheus metrics: names, labels, values, own registry, exposition."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from hacontrol import __version__
from hacontrol.service.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_probe_latency_histogram_and_errors_per_node() -> None:
    m = Metrics()
    m.probe("pg1", 0.0015, ok=True)
    m.probe("pg1", 0.030, ok=True)
    m.probe("pg2", 1.0, ok=False, error_kind="timeout")
    m.probe("pg2", None, ok=False, error_kind="Connection refused!")
    m.probe("pg2", None, ok=False)
    assert value(m, "hacontrol_probe_duration_seconds_count", node="pg1") == 2
    assert value(m, "hacontrol_probe_duration_seconds_bucket", node="pg1", le="0.002") == 1
    assert value(m, "hacontrol_probe_duration_seconds_bucket", node="pg1", le="0.05") == 2
    assert value(m, "hacontrol_probe_duration_seconds_sum", node="pg1") == pytest.approx(0.0315)
    assert value(m, "hacontrol_probe_duration_seconds_count", node="pg2") == 1
    assert value(m, "hacontrol_probe_errors_total", node="pg2", kind="timeout") == 1
    assert value(m, "hacontrol_probe_errors_total", node="pg2", kind="connection_refused") == 1
    assert value(m, "hacontrol_probe_errors_total", node="pg2", kind="error") == 1
    assert value(m, "hacontrol_probe_errors_total", node="pg1", kind="timeout") is None


def test_node_role_is_one_hot_and_lag_series_follow_the_role() -> None:
    m = Metrics()
    m.node("pg2", "replica", 1, 4096, 0.25, reachable=True, fenced=False)
    assert value(m, "hacontrol_node_role", node="pg2", role="replica") == 1
    assert value(m, "hacontrol_node_role", node="pg2", role="primary") == 0
    assert value(m, "hacontrol_node_role", node="pg2", role="unknown") == 0
    assert value(m, "hacontrol_node_timeline", node="pg2") == 1
    assert value(m, "hacontrol_node_lag_bytes", node="pg2") == 4096
    assert value(m, "hacontrol_node_replay_lag_seconds", node="pg2") == 0.25
    assert value(m, "hacontrol_node_reachable", node="pg2") == 1
    assert value(m, "hacontrol_node_fenced", node="pg2") == 0
    # Promoted: a primary has no lag, so the lag series go away instead of reading 0.
    m.node("pg2", "primary", 2, None, None, reachable=True, fenced=False)
    assert value(m, "hacontrol_node_role", node="pg2", role="primary") == 1
    assert value(m, "hacontrol_node_role", node="pg2", role="replica") == 0
    assert value(m, "hacontrol_node_timeline", node="pg2") == 2
    assert value(m, "hacontrol_node_lag_bytes", node="pg2") is None
    assert value(m, "hacontrol_node_replay_lag_seconds", node="pg2") is None
    m.node("pg1", "something-odd", None, None, None, reachable=False, fenced=True)
    assert value(m, "hacontrol_node_role", node="pg1", role="unknown") == 1
    assert value(m, "hacontrol_node_reachable", node="pg1") == 0
    assert value(m, "hacontrol_node_fenced", node="pg1") == 1


def test_breaker_state_is_one_hot() -> None:
    m = Metrics()
    m.breaker("pg1", "closed")
    assert value(m, "hacontrol_breaker_state", node="pg1", state="closed") == 1
    assert value(m, "hacontrol_breaker_state", node="pg1", state="open") == 0
    m.breaker("pg1", "half-open")
    assert value(m, "hacontrol_breaker_state", node="pg1", state="half_open") == 1
    assert value(m, "hacontrol_breaker_state", node="pg1", state="closed") == 0
    m.breaker("pg1", "OPEN")
    assert value(m, "hacontrol_breaker_state", node="pg1", state="open") == 1
    assert value(m, "hacontrol_breaker_state", node="pg1", state="half_open") == 0


def test_failovers_switchovers_and_loop() -> None:
    m = Metrics()
    assert value(m, "hacontrol_failovers_total") == 0
    m.failover(0.62)
    m.failover(0.48)
    m.switchover(1.5)
    m.loop(0.004)
    m.loop(2.0)
    assert value(m, "hacontrol_failovers_total") == 2
    assert value(m, "hacontrol_last_failover_duration_seconds") == 0.48
    assert value(m, "hacontrol_switchovers_total") == 1
    assert value(m, "hacontrol_last_switchover_duration_seconds") == 1.5
    assert value(m, "hacontrol_loop_duration_seconds_count") == 2
    assert value(m, "hacontrol_loop_duration_seconds_bucket", le="0.005") == 1


def test_forget_drops_every_series_of_a_node() -> None:
    m = Metrics()
    for node in ("pg1", "pg2"):
        m.probe(node, 0.001, ok=False, error_kind="timeout")
        m.node(node, "replica", 1, 0, 0.0, reachable=True, fenced=False)
        m.breaker(node, "open")
    m.forget("pg1")
    m.forget("pg1")  # twice is harmless
    labelled = [labels for _, labels in samples(m) if labels]
    assert labelled and all(("node", "pg1") not in labels for labels in labelled)
    assert any(("node", "pg2") in labels for labels in labelled)


def test_own_registry_every_name_prefixed_and_content_type() -> None:
    a, b = Metrics(), Metrics()  # a second instance must not clash with the first
    a.failover(1.0)
    assert value(b, "hacontrol_failovers_total") == 0
    assert REGISTRY.get_sample_value("hacontrol_failovers_total") is None
    names = {family.name for family in text_string_to_metric_families(a.render().decode())}
    assert names and all(name.startswith("hacontrol_") for name in names)
    assert Metrics.content_type.startswith("text/plain")


def test_no_created_series_and_no_failover_duration_before_a_failover() -> None:
    m = Metrics()
    m.probe("pg1", 0.001, ok=True)
    text = m.render().decode()
    assert "_created" not in text
    assert "hacontrol_last_failover_duration_seconds" not in text
    assert "hacontrol_last_switchover_duration_seconds" not in text
    m.failover(0.8)
    assert value(m, "hacontrol_last_failover_duration_seconds") == 0.8
    assert value(m, "hacontrol_info", version=__version__) == 1


def test_paused_maintenance_positions_and_a_blocked_failover_with_its_reason() -> None:
    m = Metrics()
    m.node("pg2", "replica", 1, 0, 0.1, True, False, True, 0x3000060, 0x3000000)
    assert value(m, "hacontrol_node_maintenance", node="pg2") == 1
    assert value(m, "hacontrol_node_wal_position_bytes", node="pg2") == 0x3000060
    assert value(m, "hacontrol_node_replay_position_bytes", node="pg2") == 0x3000000
    m.cluster(False, None)
    assert value(m, "hacontrol_paused") == 0
    assert not [k for k in samples(m) if k[0] == "hacontrol_failover_blocked"]
    m.cluster(True, "paused")
    assert value(m, "hacontrol_paused") == 1
    assert value(m, "hacontrol_failover_blocked", reason="paused") == 1
    m.cluster(False, "cooldown")
    assert value(m, "hacontrol_failover_blocked", reason="paused") is None
    assert value(m, "hacontrol_failover_blocked", reason="cooldown") == 1
    m.cluster(False, None)
    assert not [k for k in samples(m) if k[0] == "hacontrol_failover_blocked"]
    m.forget("pg2")
    assert value(m, "hacontrol_node_wal_position_bytes", node="pg2") is None


def test_slot_series_follow_the_slots_and_vanish_with_them() -> None:
    m = Metrics()
    m.slots("pg1", [("hacontrol_pg2", "physical", True, 1024),
                    ("cdc", "logical", False, None)])
    assert value(m, "hacontrol_slot_retained_bytes", node="pg1", slot="hacontrol_pg2",
                 kind="physical") == 1024
    assert value(m, "hacontrol_slot_active", node="pg1", slot="hacontrol_pg2",
                 kind="physical") == 1
    assert value(m, "hacontrol_slot_active", node="pg1", slot="cdc", kind="logical") == 0
    # Unknown retention is no series, not a made-up zero.
    assert value(m, "hacontrol_slot_retained_bytes", node="pg1", slot="cdc",
                 kind="logical") is None
    m.slots("pg1", [("cdc", "logical", True, 10)])
    assert value(m, "hacontrol_slot_active", node="pg1", slot="hacontrol_pg2",
                 kind="physical") is None
    m.forget("pg1")
    assert value(m, "hacontrol_slot_active", node="pg1", slot="cdc", kind="logical") is None
