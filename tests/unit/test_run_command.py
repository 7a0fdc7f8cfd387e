"""`hacontrol run` as operators start it: a bad file is exit 2, one line per problem."""

import subprocess
import sys
from pathlib import Path


def test_bad_config_exits_2_with_the_key_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[nodes]]\nname = "pg1"\ndsn = "host=a password=hunter2"\npriority = -1\n'
        '[[nodes]]\nname = "pg2"\ndsn = "host=b"\n[timing]\nprobe_intervl = 1\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hacontrol", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "nodes[0].priority" in proc.stderr
    assert "timing.probe_intervl" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "hunter2" not in proc.stderr + proc.stdout
