"""Node drivers without a database: templates and quoting, status codes, timeouts,
redaction, configuration models, standby configuration files, what rejoin
and switchover do when a driver cannot help, and how a driver proves a data
directory is its node's (port resolution, refusals)."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from hacontrol.core.actions import Switchover
from hacontrol.core.model import NodeSpec
from hacontrol.core.results import OutcomeStatus
from hacontrol.io.drivers import (
    CommandDriver,
    CommandDriverConfig,
    DriverResult,
    LocalDriver,
    LocalDriverConfig,
    NullDriver,
    Step,
    build_driver,
)
from hacontrol.io.drivers.base import refusal
from hacontrol.io.drivers.command import parse_identity, render
from hacontrol.io.drivers.config import DriverConfig
from hacontrol.io.drivers.datadir import auto_conf_value, set_auto_conf
from hacontrol.io.drivers.identity import (
    configured_port,
    control_file_identifier,
    controldata_identifier,
    directory_port,
    directory_state,
    parse_conf_line,
    parse_int,
    postmaster_alive,
    running_port,
)
from hacontrol.io.drivers.local import split_password
from hacontrol.io.dsn import dsn_port
from hacontrol.io.procedures.rejoin import missing_steps, rejoin
from hacontrol.io.procedures.switchover import SwitchoverContext, run_switchover
from hacontrol.testing.local_node import free_port

SECRET = "s3cr3t-pw"


def command(**templates: Any) -> CommandDriver:
    return CommandDriver(CommandDriverConfig(data_dir="/srv/pg data", **templates), "db1")


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.records.append((kind, fields))


# --------------------------------------------------------------------------- templates


def test_render_quotes_once_for_the_local_shell_and_twice_for_ssh() -> None:
    dsn = "host=db2 port=5432 user=rewinder dbname=postgres"
    local = render("pg_rewind --source-server={source_dsn}", {"source_dsn": dsn})
    assert shlex.split(local) == ["pg_rewind", f"--source-server={dsn}"]
    remote = render("ssh db1 pg_rewind --source-server={source_dsn:ssh}", {"source_dsn": dsn})
    # ssh joins its arguments and the remote shell splits them again.
    after_local = shlex.split(remote)
    assert shlex.split(" ".join(after_local[2:])) == ["pg_rewind", f"--source-server={dsn}"]


def test_render_neutralises_shell_metacharacters() -> None:
    nasty = "x'; touch /tmp/pwned; echo '"
    assert shlex.split(render("echo {node}", {"node": nasty})) == ["echo", nasty]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("systemctl stop {service}", "unknown placeholder {service}"),
        ("echo {node!r}", "may only be written"),
        ("echo {node:>10}", "may only be written"),
        ("echo {node", "not a valid template"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        CommandDriverConfig(stop=template)


def test_command_capabilities_follow_the_configured_templates() -> None:
    driver = command(stop="true", start="true", status="true")
    assert driver.capabilities == {Step.STOP, Step.START, Step.STATUS}
    assert driver.can(Step.STOP, Step.START)
    assert not driver.can(Step.REWIND)


# --------------------------------------------------------------------------- running


async def test_command_steps_get_quoted_values_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "args"
    driver = command(
        stop=f"printf '%s\\n' {{node}} {{data_dir}} {{mode}} \"$HACONTROL_STEP\" > {out}"
    )
    result = await driver.stop("immediate")
    assert result.ok, result.detail
    assert out.read_text().splitlines() == ["db1", "/srv/pg data", "immediate", "stop"]


async def test_command_status_maps_exit_codes() -> None:
    assert (await command(status="exit 0").status()).running is True
    stopped = await command(status="exit 3").status()
    assert stopped.ok and stopped.running is False
    unknown = await command(status="echo 'boom' >&2; exit 1").status()
    assert not unknown.ok and unknown.running is None
    assert "exited with 1: boom" in unknown.detail


async def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    driver = CommandDriver(
        CommandDriverConfig(start=f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.3), "db1"
    )
    started = time.monotonic()
    result = await driver.start()
    assert time.monotonic() - started < 5
    assert result.timed_out and not result.ok
    child = int(pidfile.read_text())
    for _ in range(250):  # the kill is asynchronous: up to 5 s
        if not _alive(child):
            break
        await asyncio.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_command_output_and_detail_never_show_a_password() -> None:
    driver = command(rewind="echo connecting with {source_dsn}; echo password=hunter2; exit 2")
    result = await driver.rewind(f"host=db2 user=postgres password={SECRET} dbname=postgres")
    assert not result.ok
    text = f"{result.detail}\n{result.output}\n{result.fields()}"
    assert SECRET not in text and "hunter2" not in text
    assert "***" in text


async def test_missing_template_is_not_possible_and_runs_nothing() -> None:
    result = await command(stop="true").rewind("host=db2")
    assert not result.possible and not result.ok
    assert "no rewind command configured for db1" in result.detail


async def test_null_driver_says_every_host_step_needs_a_driver() -> None:
    driver = NullDriver("pg1")
    assert driver.capabilities == frozenset()
    results = [
        await driver.stop(), await driver.start(), await driver.status(),
        await driver.rewind("host=x"), await driver.basebackup("host=x"),
        await driver.write_standby_config("host=x"), await driver.fence(),
    ]
    assert all(not r.possible and not r.ok for r in results)
    assert {r.detail for r in results} == {"not possible without a driver"}
    assert await driver.final_lsn() is None


# --------------------------------------------------------------------------- config


def test_driver_config_parses_by_kind_and_forbids_unknown_keys() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(DriverConfig)
    local = adapter.validate_python({"kind": "local", "data_dir": "/var/lib/postgresql/15/main"})
    assert isinstance(local, LocalDriverConfig) and local.bindir is None
    cmd = adapter.validate_python({"kind": "command", "stop": "systemctl stop pg", "timeout": 5})
    assert isinstance(cmd, CommandDriverConfig) and cmd.timeout == 5
    with pytest.raises(ValidationError, match="data_dr"):
        adapter.validate_python({"kind": "local", "data_dir": "/x", "data_dr": "/y"})
    with pytest.raises(ValidationError, match="absolute"):
        adapter.validate_python({"kind": "local", "data_dir": "main"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "ssh"})


def test_build_driver_for_each_kind() -> None:
    assert isinstance(build_driver(None, "pg1"), NullDriver)
    local = build_driver(LocalDriverConfig(data_dir=Path("/srv/pg1"), timeout=7), "pg1")
    assert isinstance(local, LocalDriver) and local.timeout == 7
    assert local.log_file == Path("/srv/pg1.log")
    cmd = build_driver(CommandDriverConfig(stop="true"), "pg1")
    assert isinstance(cmd, CommandDriver) and cmd.node == "pg1"


def test_build_driver_gives_the_dsn_port_and_the_pinned_identifier() -> None:
    cfg = LocalDriverConfig(data_dir=Path("/srv/pg1"))
    local = build_driver(cfg, "pg1", dsn="host=127.0.0.1 port=5433", system_identifier=42)
    assert local.expected_port == 5433 and local.pinned_system_identifier == 42
    cmd = build_driver(CommandDriverConfig(stop="true"), "pg1",
                       dsn="postgresql://u@db1:6432/postgres")
    assert cmd.expected_port == 6432
    # A local driver that could prove nothing is never built.
    with pytest.raises(ValueError, match="no single numeric port"):
        build_driver(cfg, "pg1", dsn="service=pg1")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0, -1, 1e7])
def test_driver_timeouts_are_finite_and_bounded(value: float) -> None:
    for model in (LocalDriverConfig, CommandDriverConfig):
        extra: dict[str, Any] = {"data_dir": "/srv/pg1"} if model is LocalDriverConfig else {}
        with pytest.raises(ValidationError):
            model(timeout=value, **extra)
        with pytest.raises(ValidationError):
            model(basebackup_timeout=value, **extra)
    assert LocalDriverConfig(data_dir=Path("/x"), timeout=3600, basebackup_timeout=604800)


# --------------------------------------------------------------------------- files


def test_auto_conf_editing_replaces_settings_and_quotes_like_alter_system() -> None:
    text = (
        "# Do not edit this file manually!\n"
        "primary_conninfo = 'host=old'\n"
        "wal_receiver_timeout = '2000'\n"
        "default_transaction_read_only = 'off'\n"
    )
    new = set_auto_conf(text, {"primary_conninfo": "host=new password='it''s'",
                               "default_transaction_read_only": "on"})
    lines = new.splitlines()
    assert "wal_receiver_timeout = '2000'" in lines
    assert "host=old" not in new
    assert lines[-2] == "primary_conninfo = " + auto_conf_value("host=new password='it''s'")
    assert lines[-1] == "default_transaction_read_only = 'on'"
    assert auto_conf_value("a'b\\c") == "'a''b\\\\c'"


def test_split_password_moves_it_to_the_environment() -> None:
    dsn, env = split_password(f"host=db2 user=postgres password={SECRET} dbname=postgres")
    assert SECRET not in dsn and "host=db2" in dsn
    assert env == {"PGPASSWORD": SECRET}
    assert split_password("host=db2") == ("host=db2", {})


async def test_local_standby_config_writes_signal_and_conninfo(tmp_path: Path) -> None:
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "postgresql.auto.conf").write_text("primary_conninfo = 'host=old'\n")
    os_user = None if os.geteuid() != 0 else "root"
    driver = LocalDriver("pg1", data, bindir="/nonexistent", os_user=os_user)
    result = await driver.write_standby_config("host=db2 port=5432 application_name=pg1")
    assert result.ok, result.detail
    assert (data / "standby.signal").exists()
    auto = (data / "postgresql.auto.conf").read_text()
    assert "primary_conninfo = 'host=db2 port=5432 application_name=pg1'" in auto
    assert "host=old" not in auto
    assert "default_transaction_read_only = 'on'" in auto
    assert oct((data / "postgresql.auto.conf").stat().st_mode & 0o777) == "0o600"


async def test_local_driver_reports_missing_binaries_instead_of_raising(tmp_path: Path) -> None:
    data = tmp_path / "main"
    data.mkdir()
    # A live PID in the lock file: only pg_ctl can tell more.
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")
    driver = LocalDriver("pg1", data, bindir=tmp_path / "nobin",
                         os_user=None if os.geteuid() != 0 else "postgres")
    result = await driver.status()
    assert not result.ok and result.running is None
    assert "cannot run" in result.detail


# --------------------------------------------------------------------------- procedures


def _spec(name: str, port: int) -> NodeSpec:
    return NodeSpec(name, f"host=127.0.0.1 port={port} user=postgres dbname=postgres "
                          "connect_timeout=1")


async def test_rejoin_without_a_driver_touches_nothing() -> None:
    rec = Recorder()
    port = free_port()
    result = await rejoin(_spec("pg1", port), _spec("pg2", port), NullDriver("pg1"),
                          allow_basebackup=True, timeout=1, record=rec)
    assert not result.ok and result.steps == ()
    assert "not possible" in result.detail and "stop" in result.detail
    assert [k for k, _ in rec.records] == ["rejoin_started", "rejoin_finished"]


def test_missing_steps_names_what_a_command_driver_lacks() -> None:
    driver = command(stop="true", start="true", status="true", rewind="true")
    assert missing_steps(driver, allow_basebackup=False) == ["standby_config"]
    assert missing_steps(command(stop="true"), allow_basebackup=True) == [
        "status", "start", "standby_config", "rewind or basebackup",
    ]


async def test_switchover_with_unreachable_target_is_not_started() -> None:
    rec = Recorder()
    specs = {"pg1": _spec("pg1", free_port()), "pg2": _spec("pg2", free_port())}
    ctx = SwitchoverContext(specs=specs, drivers={}, record=rec, connect_timeout=1)
    outcome = await run_switchover(ctx, Switchover("pg1", "pg2", "test"))
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail.startswith("not started:")
    assert [k for k, _ in rec.records] == ["switchover_started", "switchover_finished"]


def test_a_killed_or_zombie_postmaster_counts_as_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "postmaster.pid"
    pidfile.write_text(f"{os.getpid()}\n/data\n")
    assert postmaster_alive(pidfile)
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, "no zombie"
        time.sleep(0.01)
    pidfile.write_text(f"{child.pid}\n/data\n")
    assert not postmaster_alive(pidfile)  # exited, not reaped yet: a zombie
    child.wait()
    assert not postmaster_alive(pidfile)  # gone


# --------------------------------------------------------------------------- identity:
# which port a data directory runs (or would run) on


def pgdata(path: Path, conf: str = "", *, auto: str | None = None) -> Path:
    """A fake data directory: PG_VERSION, ``conf`` as postgresql.conf, maybe an auto.conf."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "PG_VERSION").write_text("15\n")
    (path / "postgresql.conf").write_text(conf)
    if auto is not None:
        (path / "postgresql.auto.conf").write_text(auto)
    return path


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("port = 5433", ("port", "5433")),
        ("  PORT=5433   # the node's", ("port", "5433")),
        ("port 5433", ("port", "5433")),
        ("port = '5433'", ("port", "5433")),
        ("include_if_exists = 'it''s.conf'", ("include_if_exists", "it's.conf")),
        (r"include 'a\\b.conf'", ("include", "a\\b.conf")),
        ("# port = 1", None),
        ("", None),
        ("port = '5433", None),
        ("port = 5433 junk", None),
    ],
)
def test_conf_lines_parse_like_postgresql(line: str, parsed: tuple[str, str] | None) -> None:
    assert parse_conf_line(line) == parsed


@pytest.mark.parametrize(
    ("text", "value"),
    [("5433", 5433), (" 5433 ", 5433), ("0x1539", 5433), ("012471", 5433), ("5433.4", 5433),
     ("+5433", 5433), ("x", None), ("", None), ("inf", None)],
)
def test_integers_parse_like_strtol_base_0(text: str, value: int | None) -> None:
    assert parse_int(text) == value


def test_port_last_setting_wins_and_auto_conf_comes_after_postgresql_conf(
    tmp_path: Path,
) -> None:
    data = pgdata(tmp_path / "d", "port = 5432\nport = 5433\n")
    reading = configured_port(data)
    assert (reading.port, reading.source) == (5433, f"{data / 'postgresql.conf'}, line 2")
    (data / "postgresql.auto.conf").write_text("# ALTER SYSTEM\nport = '5434'\n")
    assert configured_port(data).port == 5434


def test_includes_are_followed_relative_to_the_including_file(tmp_path: Path) -> None:
    data = pgdata(tmp_path / "d", "port = 1\ninclude 'conf.d/node.conf'\n")
    (data / "conf.d").mkdir()
    (data / "conf.d" / "node.conf").write_text("include_if_exists = 'deeper.conf'\n")
    (data / "conf.d" / "deeper.conf").write_text("port = 5440\n")
    reading = configured_port(data)
    assert reading.port == 5440 and "deeper.conf, line 1" in reading.source
    # A missing include_if_exists is skipped, as PostgreSQL does.
    (data / "conf.d" / "deeper.conf").unlink()
    assert configured_port(data).port == 1


def test_include_dir_reads_conf_files_in_name_order(tmp_path: Path) -> None:
    data = pgdata(tmp_path / "d", "include_dir 'conf.d'\n")
    (data / "conf.d").mkdir()
    (data / "conf.d" / "10-b.conf").write_text("port = 5442\n")
    (data / "conf.d" / "01-a.conf").write_text("port = 5441\n")
    (data / "conf.d" / ".hidden.conf").write_text("port = 9\n")
    (data / "conf.d" / "notes.txt").write_text("port = 9\n")
    assert configured_port(data).port == 5442


def test_an_include_that_cannot_be_read_makes_the_port_unknown(tmp_path: Path) -> None:
    data = pgdata(tmp_path / "d", "port = 5432\ninclude 'missing.conf'\n")
    reading = configured_port(data)
    assert reading.port is None
    assert f"{data / 'missing.conf'} does not exist" in reading.problem
    # A later setting wins whatever the include held.
    (data / "postgresql.auto.conf").write_text("port = 5450\n")
    assert configured_port(data).port == 5450
    bad_dir = pgdata(tmp_path / "e", "include_dir 'nowhere'\n")
    assert configured_port(bad_dir).port is None
    loop = pgdata(tmp_path / "f", "include 'postgresql.conf'\n")
    assert "nested deeper than 10" in configured_port(loop).problem


def test_no_port_setting_means_postgresqls_default(tmp_path: Path) -> None:
    reading = configured_port(pgdata(tmp_path / "d", "shared_buffers = 32MB\n"))
    assert reading.port == 5432 and "default" in reading.source
    invalid = configured_port(pgdata(tmp_path / "e", "port = 70000\n"))
    assert invalid.port is None and "not a valid port" in invalid.problem


def test_postmaster_opts_command_line_wins_and_names_the_config_file(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "postgresql.conf").write_text("port = 5460\n")
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    opts = data / "postmaster.opts"
    opts.write_text(f'/usr/lib/postgresql/15/bin/postgres "-D" "{data}" "-c" '
                    f'"config_file={etc / "postgresql.conf"}"\n')
    assert configured_port(data).port == 5460
    opts.write_text(f'/usr/lib/postgresql/15/bin/postgres "-D" "{data}" "-p" "5461" '
                    f'"-c" "config_file={etc / "postgresql.conf"}"\n')
    reading = configured_port(data)
    assert reading.port == 5461 and "command line it last ran with" in reading.source
    opts.write_text(f"/usr/bin/postgres -D {data} --port=5462 -c shared_buffers=1MB\n")
    assert configured_port(data).port == 5462


def test_a_live_postmaster_reports_its_port_from_the_lock_file(tmp_path: Path) -> None:
    data = pgdata(tmp_path / "d", "port = 5432\n")
    pidfile = data / "postmaster.pid"
    pidfile.write_text(f"{os.getpid()}\n{data}\n1700000000\n5499\n/tmp\n127.0.0.1\n")
    reading = directory_port(data)
    assert (reading.port, reading.running) == (5499, True)
    assert reading.describe().startswith("its server runs on port 5499")
    assert running_port(data) == reading
    # A dead postmaster's lock file says nothing: the configuration decides.
    child = subprocess.Popen(["true"])
    child.wait()
    pidfile.write_text(f"{child.pid}\n{data}\n1700000000\n5499\n")
    assert directory_port(data).port == 5432 and not directory_port(data).running


def test_dsn_port_as_libpq_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPORT", raising=False)
    assert dsn_port("host=127.0.0.1 port=5433 user=x") == 5433
    assert dsn_port("postgresql://u@h:6543/db") == 6543
    assert dsn_port("host=h") == 5432
    monkeypatch.setenv("PGPORT", "6000")
    assert dsn_port("host=h") == 6000
    assert dsn_port("service=pg1") is None
    assert dsn_port("host=h port=5432,5433") is None
    assert dsn_port("host=h port=05433") == 5433  # libpq reads a port in decimal


def test_directory_states(tmp_path: Path) -> None:
    assert directory_state(tmp_path / "nope") == "missing"
    (tmp_path / "empty").mkdir()
    assert directory_state(tmp_path / "empty") == "empty"
    (tmp_path / "file").write_text("x")
    assert directory_state(tmp_path / "file") == "not_a_directory"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    assert directory_state(tmp_path / "other") == "not_pgdata"
    assert directory_state(pgdata(tmp_path / "d")) == "pgdata"


def test_system_identifier_from_controldata_and_the_control_file(tmp_path: Path) -> None:
    out = "pg_control version number:            1300\nDatabase system identifier:  " \
          "7301234567890123456\n"
    assert controldata_identifier(out) == 7301234567890123456
    assert controldata_identifier("nothing") is None
    data = pgdata(tmp_path / "d")
    (data / "global").mkdir()
    (data / "global" / "pg_control").write_bytes(
        (7301234567890123456).to_bytes(8, sys.byteorder) + b"\0" * 100
    )
    assert control_file_identifier(data) == 7301234567890123456
    assert control_file_identifier(tmp_path / "nope") is None


# --------------------------------------------------------------------------- identity:
# a driver refuses to act on a directory it cannot prove is its node's


def swapped(tmp_path: Path) -> tuple[LocalDriver, Path, Path]:
    """pg1 (dsn port 5432) given pg2's data directory (port 5433)."""
    pg1 = pgdata(tmp_path / "pg1", "port = 5432\n")
    pg2 = pgdata(tmp_path / "pg2", "port = 5433\n")
    driver = LocalDriver("pg1", pg2, bindir=tmp_path / "nobin", expected_port=5432,
                         os_user=None if os.geteuid() != 0 else "postgres")
    return driver, pg1, pg2


async def test_every_changing_step_is_refused_on_another_nodes_directory(
    tmp_path: Path,
) -> None:
    driver, _, pg2 = swapped(tmp_path)
    results = [
        await driver.stop("fast"), await driver.start(), await driver.rewind("host=x"),
        await driver.basebackup("host=x"),
        await driver.write_standby_config("host=x application_name=pg1"),
    ]
    assert [r.step for r in results] == ["stop", "start", "rewind", "basebackup",
                                         "standby_config"]
    for result in results:
        assert result.refused and not result.ok and result.possible
        assert result.fields()["refused"] is True
        assert result.detail.startswith("refused to ")
        assert f"{pg2} is not pg1's data directory" in result.detail
        assert "would run on port 5433" in result.detail
        assert f"({pg2 / 'postgresql.conf'}, line 1)" in result.detail
        assert "pg1's dsn names port 5432" in result.detail
        assert "fix data_dir in pg1's [nodes.driver] table" in result.detail
        assert "\n" not in result.detail
    assert results[3].detail.startswith("refused to re-clone pg1: ")
    assert not (pg2 / "standby.signal").exists()
    assert "primary_conninfo" not in (pg2 / "postgresql.conf").read_text()
    assert sorted(os.listdir(tmp_path)) == ["pg1", "pg2"]
    assert await driver.final_lsn() is None


async def test_the_right_directory_is_proven(tmp_path: Path) -> None:
    _, pg1, _ = swapped(tmp_path)
    driver = LocalDriver("pg1", pg1, bindir=tmp_path / "nobin", expected_port=5432)
    proof = await driver.verify_identity()
    assert proof.ok and not proof.refused
    assert proof.detail == (f"{pg1} is pg1's: its server would run on port 5432 "
                            f"({pg1 / 'postgresql.conf'}, line 1)")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "does not exist (expected pg1's data directory, its server on port 5432)"),
        ("empty", "is empty"),
        ("not_pgdata", "is not a PostgreSQL data directory, it has no PG_VERSION"),
        ("unknown_port", "the port its server would run on cannot be told"),
    ],
)
async def test_a_directory_that_proves_nothing_is_refused(
    tmp_path: Path, setup: str, expected: str
) -> None:
    data = tmp_path / "main"
    if setup == "empty":
        data.mkdir()
    elif setup == "not_pgdata":
        data.mkdir()
        (data / "postgresql.conf").write_text("port = 5432\n")
    elif setup == "unknown_port":
        pgdata(data, "include 'gone.conf'\n")
    driver = LocalDriver("pg1", data, bindir=tmp_path / "nobin", expected_port=5432)
    result = await driver.rewind("host=x")
    assert result.refused and expected in result.detail and "pg1" in result.detail


async def test_a_base_backup_into_a_missing_or_empty_directory_needs_no_proof(
    tmp_path: Path,
) -> None:
    data = tmp_path / "main"
    driver = LocalDriver("pg1", data, bindir=tmp_path / "nobin", expected_port=5432)
    proof = await driver.verify_identity(Step.BASEBACKUP, absent_ok=True)
    assert proof.ok and proof.detail == f"nothing to prove: {data} does not exist"
    data.mkdir()
    assert (await driver.verify_identity(Step.BASEBACKUP, absent_ok=True)).ok
    # Past the proof, it fails on the missing binaries: not refused.
    result = await driver.basebackup("host=x")
    assert not result.ok and not result.refused


async def test_the_system_identifier_must_be_the_clusters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pg1, _ = swapped(tmp_path)
    driver = LocalDriver("pg1", pg1, bindir=tmp_path / "nobin", expected_port=5432)
    found: list[tuple[int | None, str]] = [(111, "")]

    async def controldata(self: LocalDriver) -> tuple[int | None, str]:
        return found[0]

    monkeypatch.setattr(LocalDriver, "_system_identifier", controldata)
    assert (await driver.verify_identity()).ok  # nothing known yet: only the port counts
    driver.expect_system_identifier(111)
    proof = await driver.verify_identity()
    assert proof.ok and "its system identifier is 111" in proof.detail
    driver.expect_system_identifier(222)
    refused = await driver.stop()
    assert refused.refused
    assert "its control file names system identifier 111, but the cluster's is 222 " \
           "(learned from the cluster)" in refused.detail
    found[0] = (None, "pg_controldata exited with 1: could not open file")
    refused = await driver.start()
    assert refused.refused and "its system identifier cannot be read (pg_controldata " \
        "exited with 1" in refused.detail
    driver.expect_system_identifier(None)
    assert (await driver.verify_identity()).ok


async def test_a_learned_identifier_never_replaces_the_pinned_one(tmp_path: Path) -> None:
    _, pg1, _ = swapped(tmp_path)
    driver = LocalDriver("pg1", pg1, bindir=tmp_path / "nobin", expected_port=5432,
                         system_identifier=7)
    assert driver.expected_system_identifier() == (7, "pinned by system_identifier", "")
    driver.expect_system_identifier(8)
    refused = await driver.rewind("host=x")
    assert refused.refused
    assert "the cluster reports system identifier 8, but system_identifier in the " \
           "configuration pins 7" in refused.detail
    # pg_control_system() shows it as a signed bigint; pg_controldata unsigned.
    driver.expect_system_identifier(-1)
    assert driver.learned_system_identifier == (1 << 64) - 1


def test_the_base_driver_cannot_check_by_default() -> None:
    driver = NullDriver("pg1")
    assert driver.expected_port is None
    driver.expect_system_identifier(5)
    assert driver.expected_system_identifier() == (5, "learned from the cluster", "")
    result = asyncio.run(driver.verify_identity())
    assert not result.possible and not result.ok


# --------------------------------------------------------------------------- identity:
# the command driver's optional identity command


def identified(tmp_path: Path, identity: str, **templates: str) -> CommandDriver:
    marker = tmp_path / "ran"
    steps = {name: f"echo {name} >> {marker}" for name in
             ("stop", "start", "rewind", "basebackup", "standby_config")}
    steps.update(templates)
    cfg = CommandDriverConfig(data_dir="/srv/pg1", identity=identity, **steps)
    return CommandDriver(cfg, "pg1", expected_port=5432)


def ran(tmp_path: Path) -> list[str]:
    marker = tmp_path / "ran"
    return marker.read_text().split() if marker.exists() else []


def test_identity_output_forms() -> None:
    out = "Database system identifier:           7301234567890123456\nport=5432\nnoise\n"
    assert parse_identity(out) == (5432, 7301234567890123456)
    assert parse_identity("PORT: 5433\nsystem_identifier = 9\n") == (5433, 9)
    assert parse_identity("nothing useful") == (None, None)


async def test_command_identity_that_matches_lets_every_step_run(tmp_path: Path) -> None:
    driver = identified(tmp_path, "echo port=5432; echo 'Database system identifier: 9'")
    driver.expect_system_identifier(9)
    assert Step.IDENTITY in driver.capabilities
    proof = await driver.verify_identity()
    assert proof.ok and proof.detail == "identity command: port 5432, system identifier 9"
    for call in (driver.stop(), driver.start(), driver.rewind("host=x"),
                 driver.basebackup("host=x"), driver.write_standby_config("host=x")):
        assert (await call).ok
    assert ran(tmp_path) == ["stop", "start", "rewind", "basebackup", "standby_config"]


async def test_command_identity_mismatch_refuses_without_running_the_step(
    tmp_path: Path,
) -> None:
    driver = identified(tmp_path, "echo port=5433")
    result = await driver.stop()
    assert result.refused and not ran(tmp_path)
    assert "the identity command reports port 5433, but pg1's dsn names port 5432" \
        in result.detail
    driver = identified(tmp_path, "echo system_identifier=1")
    driver.expect_system_identifier(2)
    result = await driver.rewind("host=x")
    assert result.refused and "names system identifier 1, but the cluster's is 2" \
        in result.detail
    for identity, why in [("true", "printed neither a port nor a system identifier"),
                          ("echo boom >&2; exit 1", "the identity command failed")]:
        result = await identified(tmp_path, identity).start()
        assert result.refused and why in result.detail
    assert not ran(tmp_path)


async def test_command_identity_exit_4_allows_only_a_base_backup(tmp_path: Path) -> None:
    driver = identified(tmp_path, "exit 4")
    assert (await driver.start()).refused
    assert (await driver.basebackup("host=x")).ok
    assert ran(tmp_path) == ["basebackup"]


async def test_command_driver_without_identity_cannot_check_and_runs(tmp_path: Path) -> None:
    driver = command(stop="true")
    proof = await driver.verify_identity()
    assert not proof.possible and "no identity command configured for db1" in proof.detail
    assert (await driver.stop()).ok


class RefusingDriver(NullDriver):
    """Can do every rejoin step, but its data directory is not the node's."""

    capabilities = frozenset({Step.STATUS, Step.STOP, Step.START, Step.REWIND,
                              Step.STANDBY_CONFIG})

    def __init__(self) -> None:
        super().__init__("pg1")
        self.calls: list[str] = []

    async def status(self) -> DriverResult:
        self.calls.append("status")
        return DriverResult("status", True, "running", running=True)

    async def stop(self, mode: str = "fast") -> DriverResult:
        self.calls.append(f"stop {mode}")
        return refusal(Step.STOP, "pg1", "/data/pg2 is not pg1's data directory")


async def test_rejoin_ends_at_a_refused_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import hacontrol.io.procedures.rejoin as rejoin_module

    async def no_problem(primary: NodeSpec, connect_timeout: float) -> str:
        return ""

    monkeypatch.setattr(rejoin_module, "_primary_problem", no_problem)
    driver = RefusingDriver()
    rec = Recorder()
    result = await rejoin(_spec("pg1", 1), _spec("pg2", 2), driver, allow_basebackup=True,
                          timeout=1, record=rec)
    assert not result.ok and not result.stopped
    assert result.detail == ("rejoin of pg1 not attempted: refused to stop pg1: /data/pg2 is "
                             "not pg1's data directory")
    # One refusal is enough: no immediate stop, no rewind, nothing started.
    assert driver.calls == ["status", "stop fast"]


class StoppedRefusingDriver(RefusingDriver):
    """Stopped already; its rewind and base backup are refused."""

    capabilities = RefusingDriver.capabilities | {Step.BASEBACKUP}

    async def status(self) -> DriverResult:
        self.calls.append("status")
        return DriverResult("status", True, "stopped", running=False)

    async def rewind(self, source_dsn: str) -> DriverResult:
        self.calls.append("rewind")
        return refusal(Step.REWIND, "pg1", "/data/pg2 is not pg1's data directory")

    async def basebackup(self, source_dsn: str) -> DriverResult:
        self.calls.append("basebackup")
        return DriverResult("basebackup", True, "cloned")


async def test_a_refused_rewind_is_not_followed_by_a_base_backup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hacontrol.io.procedures.rejoin as rejoin_module

    async def no_problem(*args: object) -> str:
        return ""

    monkeypatch.setattr(rejoin_module, "_primary_problem", no_problem)
    monkeypatch.setattr(rejoin_module, "_checkpoint", no_problem)
    driver = StoppedRefusingDriver()
    result = await rejoin(_spec("pg1", 1), _spec("pg2", 2), driver, allow_basebackup=True,
                          timeout=1, record=Recorder())
    assert not result.ok
    assert result.detail == ("rejoin of pg1 abandoned: refused to rewind pg1: /data/pg2 is not "
                             "pg1's data directory")
    assert driver.calls == ["status", "rewind"]


def _zombie() -> subprocess.Popen[bytes]:
    """A child process that exited and was not reaped yet (as a SIGKILLed postmaster
    whose parent does not wait for it)."""
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z":
            return child
        time.sleep(0.01)
    raise AssertionError("the child did not become a zombie")


async def test_a_zombie_postmaster_counts_as_stopped_and_its_lock_file_is_cleared(
    tmp_path: Path,
) -> None:
    data = tmp_path / "main"
    data.mkdir()
    child = _zombie()
    try:
        (data / "postmaster.pid").write_text(f"{child.pid}\n{data}\n")
        driver = LocalDriver("pg1", data, bindir=tmp_path / "nobin",
                             os_user=None if os.geteuid() != 0 else "postgres")
        state = await driver.status()
        assert state.ok and state.running is False and "zombie" in state.detail
        # The server would refuse to start while the zombie's PID exists.
        assert driver._clear_stale_lock() is None
        assert not (data / "postmaster.pid").exists()
    finally:
        child.wait(5)


def test_a_zombie_lock_file_stays_while_a_process_still_works_in_the_directory(
    tmp_path: Path,
) -> None:
    data = tmp_path / "main"
    data.mkdir()
    child = _zombie()
    orphan = subprocess.Popen(["sleep", "30"], cwd=data)
    try:
        (data / "postmaster.pid").write_text(f"{child.pid}\n{data}\n")
        driver = LocalDriver("pg1", data, bindir=tmp_path / "nobin",
                             os_user=None if os.geteuid() != 0 else "postgres")
        refused = driver._clear_stale_lock()
        assert refused is not None and not refused.ok and str(orphan.pid) in refused.detail
        assert (data / "postmaster.pid").exists()
    finally:
        orphan.kill()
        orphan.wait(5)
        child.wait(5)


async def test_discard_promote_removes_the_request_of_a_stopped_node_only(tmp_path: Path) -> None:
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "promote.signal").write_text("")
    driver = LocalDriver("pg1", data, bindir=tmp_path / "nobin",
                         os_user=None if os.geteuid() != 0 else "root")
    assert driver.can(Step.DISCARD_PROMOTE)
    # A running server (a live PID in its lock file): never touched.
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")
    refused = await driver.discard_promote()
    assert not refused.ok and (data / "promote.signal").exists()
    (data / "postmaster.pid").unlink()
    done = await driver.discard_promote()
    assert done.ok and "promote.signal removed" in done.detail
    assert not (data / "promote.signal").exists()
    again = await driver.discard_promote()
    assert again.ok and "no promote.signal" in again.detail


async def test_standby_config_drops_a_leftover_promote_request(tmp_path: Path) -> None:
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "promote.signal").write_text("")
    driver = LocalDriver("pg1", data, bindir="/nonexistent",
                         os_user=None if os.geteuid() != 0 else "root")
    assert (await driver.write_standby_config("host=db2 port=5432")).ok
    assert (data / "standby.signal").exists() and not (data / "promote.signal").exists()
