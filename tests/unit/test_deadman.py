"""The harnesses' dead man's switch: its script runs when the pipe closes, whether the
harness releases it or dies without a word."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hacontrol.testing.deadman import DeadManSwitch

# Writes every line it read to $1 once its stdin closes, unless it read "done".
SCRIPT = (
    'seen=""\n'
    'while read -r line; do [ "$line" = done ] && exit 0; seen="$seen$line,"; done\n'
    'printf "%s" "$seen" > "$1"\n'
)


def test_released_it_runs_the_script_with_what_it_was_told(tmp_path: Path) -> None:
    out = tmp_path / "out"
    switch = DeadManSwitch(SCRIPT, str(out))
    switch.say("a")
    switch.say("b")
    switch.release()
    assert out.read_text() == "a,b,"
    switch.say("late")  # released: nothing is raised
    switch.release()


def test_a_last_line_reaches_the_script_before_the_pipe_closes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    DeadManSwitch(SCRIPT, str(out)).release(last="done")
    assert not out.exists()


def test_the_script_runs_when_its_owner_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    owner = textwrap.dedent(f"""
        import os, time
        from hacontrol.testing.deadman import DeadManSwitch
        switch = DeadManSwitch({SCRIPT!r}, {str(out)!r})
        switch.say("x")
        print("ready", flush=True)
        time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", owner], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, 9)
        proc.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (out.exists() and out.read_text()):
            time.sleep(0.02)
        assert out.read_text() == "x,"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
