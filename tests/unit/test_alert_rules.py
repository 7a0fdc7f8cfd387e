"""The Prometheus alert rules (docs/prometheus/alerts.yml): promtool's own checks and
unit tests, and their fit with what the controller exports and what docs/alerts.md
explains."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hacontrol.service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "prometheus" / "alerts_test.yml"
ALERTS_DOC = ROOT / "docs" / "alerts.md"


def _promtool() -> str:
    found = shutil.which("promtool")
    local = Path(sys.prefix) / "bin" / "promtool"
    if found is None and local.is_file():
        found = str(local)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: ./quickstart setup fetches it into .venv/bin")
        pytest.skip("promtool is missing (./quickstart setup fetches it)")
    return found


def _alerts() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, timeout=120, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    text = RULE_TESTS.read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels:", text))
    silent = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", text))
    alerts = set(_alerts())
    assert len(alerts) >= 11
    assert alerts - fired == set(), "never shown firing"
    # Absence of every controller is the one case where there is no "healthy" series.
    assert alerts - silent == set(), "never shown silent"


def test_every_metric_the_rules_use_is_one_the_controller_exports() -> None:
    metrics = Metrics()
    metrics.probe("pg1", None, False, "timeout")
    metrics.node("pg1", "primary", 1, None, None, True, False)
    metrics.node("pg2", "replica", 1, 10, 0.1, True, False)
    metrics.slots("pg1", [("hacontrol_pg2", "physical", True, 10)])
    metrics.cluster(True, "paused")
    metrics.breaker("pg1", "open")
    metrics.failover(1.0)
    metrics.leadership(True, True, 7)
    exported = set(re.findall(r"^(hacontrol_\w+?)(?:\{| )", metrics.render().decode(), re.M))
    used = set(re.findall(r"\b(hacontrol_[a-z_]+)\b", RULES.read_text()))
    assert used, "the rules use no hacontrol metric"
    assert used - exported == set()


def test_every_alert_has_a_runbook_section_in_the_docs() -> None:
    rules = RULES.read_text()
    anchors = {m.lower() for m in re.findall(r"^#+ (Hacontrol\w+)$", ALERTS_DOC.read_text(),
                                             re.M)}
    for alert in _alerts():
        assert f'runbook_url: "docs/alerts.md#{alert.lower()}"' in rules, alert
        assert alert.lower() in anchors, f"docs/alerts.md has no section {alert}"
