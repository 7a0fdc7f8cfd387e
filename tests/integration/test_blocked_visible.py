"""A failover that is needed but held back is visible in /status, the CLI and the
metrics, with its reason and the way out (real servers, real API, real CLI)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from hacontrol.testing import LocalCluster
from tests.integration.operator_support import (
    TOKEN,
    ServiceThread,
    hacontrol,
    output,
    write_config,
)
from tests.integration.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _metric(st: ServiceThread, line_start: str) -> str | None:
    """The first /metrics line that starts with ``line_start``."""
    with urllib.request.urlopen(f"http://{st.service.api_address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return next((line for line in text.splitlines() if line.startswith(line_start)), None)


def test_a_failover_held_back_by_pause_shows_why_and_the_way_out(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = write_config(cluster, tmp_path)
    with ServiceThread(config) as st:
        wait_until(lambda: st.primary == "pg1", 20, "pg1 adopted")
        _, snap = st.call("GET", "/status")
        assert snap["failover_blocked"] is None and snap["paused"] is False
        assert _metric(st, "hacontrol_failover_blocked{") is None
        assert _metric(st, "hacontrol_last_failover_duration_seconds") is None
        assert _metric(st, "hacontrol_paused ") == "hacontrol_paused 0.0"
        status, _ = st.call("POST", "/pause", {}, token=TOKEN)
        assert status == 200
        cluster.node("pg1").kill()

        def blocked() -> dict[str, str] | None:
            _, now = st.call("GET", "/status")
            found: dict[str, str] | None = now.get("failover_blocked")
            return found

        held = wait_until(blocked, 20, "the held-back failover in /status")
        assert held["reason"] == "paused" and held["way_out"] == "hacontrol resume"
        assert "pg1" in held["message"]
        assert _metric(st, 'hacontrol_failover_blocked{reason="paused"}') is not None
        assert _metric(st, "hacontrol_paused ") == "hacontrol_paused 1.0"
        shown = hacontrol(config, "status")
        text = output(shown)
        assert "BLOCKED" in text and "hacontrol resume" in text, text
        # Nothing was promoted meanwhile, and resuming lets the failover run.
        time.sleep(1.0)
        assert cluster.primaries() == []
        status, _ = st.call("POST", "/resume", {}, token=TOKEN)
        assert status == 200
        wait_until(lambda: st.primary in ("pg2", "pg3"), 30, "the failover after resume")
        wait_until(lambda: blocked() is None, 10, "the block to clear")
        assert _metric(st, "hacontrol_failover_blocked{") is None
