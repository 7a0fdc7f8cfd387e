"""``hacontrol demo --scenario failover`` end to end, as a newcomer or CI runs it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import urllib.request
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
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ ", text), text
    rto = re.search(r"first acknowledged write on the new primary ([0-9.]+) s", text)
    assert rto is not None and float(rto.group(1)) < 10, text
    # Everything it started is gone.
    removed = re.search(r"removed (\S+)", text)
    assert removed is not None and "cluster stopped" in text
    assert not Path(removed.group(1)).exists()


def test_interactive_demo_kills_on_k_fences_on_r_and_quits_on_q() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on a terminal
        os.execv(sys.executable, [sys.executable, "-m", "hacontrol", "demo"])
    seen = b""

    def until(pattern: str, timeout: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while re.search(pattern, seen.decode(errors="replace")[-4000:]) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} within {timeout} s:\n{seen.decode()[-3000:]}"
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    assert re.search(pattern, seen.decode(errors="replace")), seen.decode()[-3000:]
                    return
                seen += chunk

    try:
        until(r"press k", 60)
        # The printed dashboard serves its page while the demo runs.
        url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/) ", seen.decode(errors="replace"))
        assert url is not None, seen.decode()[-3000:]
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            assert b"/dashboard/dashboard.js" in page.read()
        os.write(fd, b"k")
        until(r"primary (pg2|pg3), mode", 30)
        os.write(fd, b"r")
        until(r"pg1 +primary .* fenced", 30)
        os.write(fd, b"q")
        until(r"removed /", 30)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
