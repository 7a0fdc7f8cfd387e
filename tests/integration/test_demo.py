"""``hacontrol demo --scenario failover`` end to end, as a newcomer or CI runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_failover_scenario_prints_a_timeline_and_exits_0() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hacontrol", "demo", "--scenario", "failover"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        out, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "timeline (seconds relative to the kill):" in text
    for step in ("killed pg1", "detected:", "confirmed:", "promoted:", "first acknowledged write",
                 "old primary pg1 fenced", "acknowledged writes lost:"):
        assert step in text, f"{step!r} missing:\n{text}"
    rto = re.search(r"first acknowledged write on the new primary ([0-9.]+) s", text)
    assert rto is not None and float(rto.group(1)) < 10, text
    # Everything it started is gone.
    removed = re.search(r"removed (\S+)", text)
    assert removed is not None and "cluster stopped" in text
    assert not Path(removed.group(1)).exists()
