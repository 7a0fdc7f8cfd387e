from pathlib import Path

from click.testing import CliRunner

from hacontrol.cli import main

GOOD = """
[[nodes]]
name = "pg1"
dsn = "host=127.0.0.1 port=1 user=postgres dbname=postgres"
[[nodes]]
name = "pg2"
dsn = "host=127.0.0.1 port=2 user=postgres dbname=postgres"
"""


def test_check_config_valid(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "pg1" in result.output and "pg2" in result.output


def test_check_config_names_the_bad_key_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD + "\n[timing]\nprobe_interval = -1\n")
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "timing.probe_interval" in result.output
    assert "Traceback" not in result.output


def test_run_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[nodes]]\nname = "pg1"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert "nodes" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "not found" in result.output


def test_history_empty(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["history", "--config", str(path)])
    assert result.exit_code == 0
    assert "no events recorded" in result.output
