"""Node drivers without a database: templates and quoting, status codes, timeouts,
redaction, configuration models, standby configuration files, and what rejoin
and switchover do when a driver cannot help."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from hacontrol.actions import OutcomeStatus, Switchover
from hacontrol.drivers import (
    CommandDriver,
    CommandDriverConfig,
    LocalDriver,
    LocalDriverConfig,
    NullDriver,
    Step,
    build_driver,
)
from hacontrol.drivers.command import render
from hacontrol.drivers.config import DriverConfig
from hacontrol.drivers.local import (
    _postmaster_alive,
    auto_conf_value,
    set_auto_conf,
    split_password,
)
from hacontrol.model import NodeSpec
from hacontrol.rejoin import missing_steps, rejoin
from hacontrol.switchover import SwitchoverContext, run_switchover
from hacontrol.testing.local_cluster import free_port

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
    driver = LocalDriver("pg1", tmp_path / "main", bindir=tmp_path / "nobin",
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
    assert _postmaster_alive(pidfile)
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, "no zombie"
        time.sleep(0.01)
    pidfile.write_text(f"{child.pid}\n/data\n")
    assert not _postmaster_alive(pidfile)  # exited, not reaped yet: a zombie
    child.wait()
    assert not _postmaster_alive(pidfile)  # gone
