"""Configuration loading, validation messages, env overrides and explain()."""

from __future__ import annotations

import os
import sys
import types
import typing
from pathlib import Path

import pytest

from hacontrol.config import (
    Config,
    ConfigError,
    NodeConfig,
    Section,
    check_config,
    config_from_mapping,
    config_warnings,
    detection_delay,
    env_warnings,
    explain,
    load_config,
    setting_env_names,
)
from hacontrol.core.model import Endpoint, NodeSpec
from hacontrol.core.settings import DecisionSettings, FailoverMode

NODES = """
[[nodes]]
name = "pg1"
dsn = "host=10.0.0.1 port=5432 user=hacontrol dbname=postgres"

[[nodes]]
name = "pg2"
dsn = "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres"
priority = 50
replication_dsn = "host=10.0.0.2 port=5432 user=replicator"
"""

# Three nodes and a fence hook: nothing to warn about.
QUIET = NODES + """
[[nodes]]
name = "pg3"
dsn = "host=10.0.0.3 port=5432 user=hacontrol dbname=postgres"

[hooks]
fence = "/usr/local/sbin/fence-node"
"""


def write(tmp_path: Path, text: str, name: str = "hacontrol.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return info.value.problems


def one_problem(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- defaults


def test_nodes_only_file_gets_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {})
    assert config.mode is FailoverMode.AUTOMATIC
    assert config.timing.probe_interval == 0.2
    assert config.timing.failure_threshold == 3
    assert config.timing.detection_window == 0.5
    assert config.postgres.manage_settings is True
    assert config.hooks.pre_promote == ""
    assert config.journal == tmp_path.resolve() / "hacontrol-journal.jsonl"


def test_decision_settings_match_the_model_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {})
    assert config.decision_settings() == DecisionSettings()


def test_decision_settings_map_every_field(tmp_path: Path) -> None:
    text = NODES + """
mode = "semi-automatic"
[timing]
probe_interval = 0.1
probe_timeout = 0.5
failure_threshold = 4
detection_window = 0.4
replica_silence = 2.5
recovery_threshold = 5
cooldown = 60
promote_timeout = 20
repoint_retry = 2
[failover]
max_lag_bytes = 1024
failback = true
failback_delay = 90
"""
    # mode must precede the tables in TOML; put it first.
    text = 'mode = "semi-automatic"\n' + text.replace('mode = "semi-automatic"\n', "")
    settings = load_config(write(tmp_path, text), {}).decision_settings()
    assert settings == DecisionSettings(
        mode=FailoverMode.SEMI_AUTOMATIC,
        probe_interval_s=0.1,
        failure_threshold=4,
        detection_window_s=0.4,
        replica_silence_s=2.5,
        recovery_threshold=5,
        max_lag_bytes=1024,
        cooldown_s=60,
        promote_timeout_s=20,
        repoint_retry_s=2,
        failback=True,
        failback_delay_s=90,
    )


def test_node_specs_keep_file_order_and_fields(tmp_path: Path) -> None:
    specs = load_config(write(tmp_path, NODES), {}).node_specs()
    assert specs == (
        NodeSpec("pg1", "host=10.0.0.1 port=5432 user=hacontrol dbname=postgres", 100, None,
                 endpoints=(Endpoint("10.0.0.1", 5432),)),
        NodeSpec(
            "pg2",
            "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres",
            50,
            "host=10.0.0.2 port=5432 user=replicator",
            endpoints=(Endpoint("10.0.0.2", 5432),),
        ),
    )


def test_managed_settings_in_milliseconds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {})
    assert config.managed_settings_ms() == {
        "wal_receiver_timeout": 2000,
        "wal_sender_timeout": 10000,
    }
    off = load_config(write(tmp_path, NODES + "[postgres]\nmanage_settings = false\n"), {})
    assert off.managed_settings_ms() == {}


def test_empty_replication_dsn_means_unset(tmp_path: Path) -> None:
    text = NODES.replace('replication_dsn = "host=10.0.0.2 port=5432 user=replicator"',
                         'replication_dsn = ""')
    assert load_config(write(tmp_path, text), {}).nodes[1].replication_dsn is None


def test_uri_dsns_are_accepted(tmp_path: Path) -> None:
    text = """
[[nodes]]
name = "a"
dsn = "postgresql://hacontrol@127.0.0.1:5433/postgres"
[[nodes]]
name = "b"
dsn = "postgresql://hacontrol@127.0.0.1:5434/postgres"
"""
    assert [n.name for n in load_config(write(tmp_path, text), {}).nodes] == ["a", "b"]


# ---------------------------------------------------------------- journal path


def test_relative_journal_resolves_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    path = write(sub, 'journal = "state/journal.jsonl"\n' + NODES)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc") / "hacontrol.toml", {})
    assert config.journal == sub.resolve() / "state" / "journal.jsonl"
    assert load_config(path, {}).journal == config.journal


def test_absolute_journal_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "j.jsonl"
    config = load_config(write(tmp_path, f'journal = "{target}"\n' + NODES), {})
    assert config.journal == target


def test_journal_from_env_also_resolves_against_the_config_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {"HACONTROL_JOURNAL": "j2.jsonl"})
    assert config.journal == tmp_path.resolve() / "j2.jsonl"


# ---------------------------------------------------------------- environment


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    text = 'mode = "automatic"\n' + NODES + "[timing]\nprobe_interval = 0.3\ncooldown = 10\n"
    env = {
        "HACONTROL_MODE": "manual",
        "HACONTROL_TIMING__PROBE_INTERVAL": "0.25",
        "HACONTROL_HOOKS__TIMEOUT": "3",
        "HACONTROL_POSTGRES__HEARTBEAT": "false",
    }
    config = load_config(write(tmp_path, text), env)
    assert config.mode is FailoverMode.MANUAL
    assert config.timing.probe_interval == 0.25
    # keys of the same table that the environment does not set stay from the file
    assert config.timing.cooldown == 10
    assert config.hooks.timeout == 3
    assert config.postgres.heartbeat is False


def test_env_names_are_case_insensitive_and_mode_values_too(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {"hacontrol_mode": "Semi-Automatic"})
    assert config.mode is FailoverMode.SEMI_AUTOMATIC


def test_env_can_supply_nodes_as_json(tmp_path: Path) -> None:
    env = {
        "HACONTROL_NODES": '[{"name": "x", "dsn": "host=h1"}, {"name": "y", "dsn": "host=h2"}]'
    }
    config = load_config(write(tmp_path, ""), env)
    assert [n.name for n in config.nodes] == ["x", "y"]


def test_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HACONTROL_TIMING__FAILURE_THRESHOLD", "5")
    assert load_config(write(tmp_path, NODES)).timing.failure_threshold == 5
    assert "HACONTROL_TIMING__FAILURE_THRESHOLD" in os.environ


def test_unrelated_env_vars_are_ignored(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {"PGPASSWORD": "x", "HOME": "/root"})
    assert config.timing.probe_interval == 0.2


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES, {"HACONTROL_TIMING__PROBE_INTERVAL": "-1"})
    assert line == (
        f"{tmp_path / 'hacontrol.toml'}: timing.probe_interval "
        "(set by HACONTROL_TIMING__PROBE_INTERVAL): must be at least 0.01 (got '-1')"
    )


def test_unknown_nested_env_key_is_reported(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES, {"HACONTROL_HOOKS__TIMEUT": "3"})
    assert "hooks.timeut (set by HACONTROL_HOOKS__TIMEUT): unknown key; allowed keys: " in line
    assert "pre_promote, fence, on_role_change, timeout" in line


def test_env_nodes_not_json(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES, {"HACONTROL_NODES": "[{"})
    assert "nodes (set by HACONTROL_NODES): not valid JSON" in line
    assert "Traceback" not in line


# ---------------------------------------------------------------- file problems


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [f"{path}: configuration file not found"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, {})
    assert info.value.problems == [f"{tmp_path}: is a directory, not a configuration file"]


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, NODES)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # Running as root bypasses file modes, so simulate the failing read.
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [
        f"{path}: cannot read the configuration file: permission denied"
    ]


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "\n[timing\nprobe_interval = 1\n")
    # NODES has 10 lines and ends with a newline; the blank line is 11, "[timing" is 12.
    assert line == (
        f"{tmp_path / 'hacontrol.toml'}: TOML syntax error at line 12, column 8: "
        "Expected ']' at the end of a table declaration"
    )


def test_toml_error_at_end_of_document(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + 'mode = "manual')
    assert "TOML syntax error" in line
    assert "line" in line or "end of the file" in line


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hacontrol.toml"
    path.write_bytes(b'mode = "manual"\n# \xff\xfe\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.problems == [f"{path}: line 2: not valid UTF-8 text"]


def test_empty_file_needs_nodes(tmp_path: Path) -> None:
    line = one_problem(tmp_path, "")
    assert line.endswith("nodes: missing; at least 2 [[nodes]] tables (name, dsn) are required")


def test_one_node_is_not_enough(tmp_path: Path) -> None:
    text = '[[nodes]]\nname = "a"\ndsn = "host=x"\n'
    line = one_problem(tmp_path, text)
    assert line.endswith("nodes: at least 2 nodes are required, a primary and a replica (got 1)")


# ---------------------------------------------------------------- field rules

LABEL = "hacontrol.toml"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("timing.probe_interval", "-1", "must be at least 0.01 (got -1)"),
        ("timing.probe_interval", "0", "must be at least 0.01 (got 0)"),
        ("timing.probe_timeout", "0", "must be at least 0.01 (got 0)"),
        ("timing.failure_threshold", "0", "must be at least 1 (got 0)"),
        ("timing.failure_threshold", "2.5", "must be a whole number (got 2.5)"),
        ("timing.failure_threshold", '"x"', "must be a whole number (got 'x')"),
        ("timing.detection_window", "-0.5", "must be at least 0 (got -0.5)"),
        ("timing.replica_silence", "0", "must be greater than 0 (got 0)"),
        ("timing.recovery_threshold", "0", "must be at least 1 (got 0)"),
        ("timing.cooldown", "-1", "must be at least 0 (got -1)"),
        ("timing.promote_timeout", "0", "must be greater than 0 (got 0)"),
        ("timing.repoint_retry", "0", "must be greater than 0 (got 0)"),
        ("failover.max_lag_bytes", "-1", "must be at least 0 (got -1)"),
        ("failover.failback", '"maybe"', "must be true or false (got 'maybe')"),
        ("failover.failback_delay", "-1", "must be at least 0 (got -1)"),
        ("postgres.wal_receiver_timeout", "0", "must be at least 0.001 (got 0)"),
        ("postgres.wal_sender_timeout", "0", "must be at least 0.001 (got 0)"),
        ("postgres.heartbeat", "2", "must be true or false (got 2)"),
        ("hooks.timeout", "0", "must be greater than 0 (got 0)"),
        ("hooks.fence", "1", "must be a string (got 1)"),
    ],
)
def test_field_constraints(tmp_path: Path, key: str, value: str, expected: str) -> None:
    section, name = key.split(".")
    line = one_problem(tmp_path, NODES + f"[{section}]\n{name} = {value}\n")
    assert line == f"{tmp_path / LABEL}: {key}: {expected}"


def test_bad_mode_lists_allowed_values(tmp_path: Path) -> None:
    line = one_problem(tmp_path, 'mode = "auto"\n' + NODES)
    assert line == (
        f"{tmp_path / LABEL}: mode: must be one of: automatic, semi-automatic, manual (got 'auto')"
    )


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "[timing]\nprobe_intervl = 0.2\n")
    assert line == (
        f"{tmp_path / LABEL}: timing.probe_intervl: unknown key; allowed keys: probe_interval, "
        "probe_timeout, failure_threshold, detection_window, replica_silence, "
        "recovery_threshold, cooldown, promote_timeout, repoint_retry"
    )


def test_unknown_top_level_key_and_section(tmp_path: Path) -> None:
    found = problems(tmp_path, 'colour = "blue"\n' + NODES + "[apii]\nx = 1\n")
    assert len(found) == 2
    assert all(": unknown key; allowed keys: mode, journal, nodes, timing" in p for p in found)
    assert found[0].startswith(f"{tmp_path / LABEL}: colour: ")
    assert found[1].startswith(f"{tmp_path / LABEL}: apii: ")


def test_unknown_node_key(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "prio = 3\n")
    assert line == (
        f"{tmp_path / LABEL}: nodes[1].prio: unknown key; allowed keys: "
        "name, dsn, priority, replication_dsn, driver"
    )


def test_section_given_as_a_value(tmp_path: Path) -> None:
    line = one_problem(tmp_path, "timing = 5\n" + NODES)
    assert line == f"{tmp_path / LABEL}: timing: must be a table ([section]) (got 5)"


def test_negative_priority(tmp_path: Path) -> None:
    text = NODES.replace("priority = 50", "priority = -1")
    line = one_problem(tmp_path, text)
    assert line == f"{tmp_path / LABEL}: nodes[1].priority: must be at least 0 (got -1)"


def test_missing_node_keys(tmp_path: Path) -> None:
    found = problems(tmp_path, NODES + '[[nodes]]\npriority = 1\n')
    assert found == [
        f"{tmp_path / LABEL}: nodes[2].name: required key is missing",
        f"{tmp_path / LABEL}: nodes[2].dsn: required key is missing",
    ]


@pytest.mark.parametrize("name", ["", "has space", "-lead", "a" * 64, "é"])
def test_invalid_node_names(tmp_path: Path, name: str) -> None:
    line = one_problem(tmp_path, NODES.replace('name = "pg2"', f'name = "{name}"'))
    assert line.startswith(f"{tmp_path / LABEL}: nodes[1].name: invalid node name ")
    assert "allowed: 1-63 letters, digits" in line


def test_duplicate_node_names(tmp_path: Path) -> None:
    text = NODES + '[[nodes]]\nname = "pg1"\ndsn = "host=10.0.0.3"\n'
    line = one_problem(tmp_path, text)
    assert line == (
        f"{tmp_path / LABEL}: nodes[2].name: duplicate node name 'pg1' (also nodes[0]); "
        "node names must be unique"
    )


def test_two_nodes_on_the_same_server(tmp_path: Path) -> None:
    text = NODES.replace("host=10.0.0.2 port=5432 user=hacontrol", "host=10.0.0.1 user=other")
    line = one_problem(tmp_path, text)
    assert line == (
        f"{tmp_path / LABEL}: nodes[1].dsn (pg2): points at the same server (10.0.0.1:5432) as "
        "nodes[0] ('pg1'); each node is one server"
    )


def test_node_dsn_must_name_one_host(tmp_path: Path) -> None:
    text = NODES.replace("host=10.0.0.2 port=5432", "host=10.0.0.2,10.0.0.3 port=5432,5432")
    found = problems(tmp_path, text)
    assert [p.split(": ", 1)[1] for p in found] == [
        "nodes[1].dsn: names 2 hosts; a node's DSN must name exactly one server",
        "nodes[1].replication_dsn: names 2 hosts; a node's DSN must name exactly one server",
    ]


@pytest.mark.parametrize("dsn", ["", "   ", "host=h port", "host='unterminated", "nonsense"])
def test_unparseable_dsn(tmp_path: Path, dsn: str) -> None:
    text = NODES.replace('dsn = "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres"',
                         f'dsn = "{dsn}"')
    line = one_problem(tmp_path, text)
    assert line.startswith(f"{tmp_path / LABEL}: nodes[1].dsn: ")
    assert "libpq connection string" in line


def test_unparseable_replication_dsn(tmp_path: Path) -> None:
    text = NODES.replace("user=replicator", "user")
    line = one_problem(tmp_path, text)
    assert line.startswith(f"{tmp_path / LABEL}: nodes[1].replication_dsn: not a valid libpq")


def test_bad_dsn_message_never_shows_the_password(tmp_path: Path) -> None:
    text = NODES.replace(
        'dsn = "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres"',
        "dsn = \"host=10.0.0.2 password=Sup3rSecret garbage\"",
    )
    line = one_problem(tmp_path, text)
    assert "Sup3rSecret" not in line
    assert "garbage" not in line  # a password may be split by the parse error
    assert 'missing "="' in line


def test_detection_window_must_cover_one_interval(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "[timing]\nprobe_interval = 1.0\ndetection_window = 0.5\n")
    assert line == (
        f"{tmp_path / LABEL}: timing.detection_window: must be at least timing.probe_interval "
        "(1 s) (got 0.5)"
    )


def test_replica_silence_must_exceed_half_the_receiver_timeout(tmp_path: Path) -> None:
    text = NODES + "[timing]\nreplica_silence = 1.5\n"
    line = one_problem(tmp_path, text)
    assert line == (
        f"{tmp_path / LABEL}: timing.replica_silence: must be greater than "
        "postgres.wal_receiver_timeout / 2 + 0.5 s = 1.5 s, or an idle but healthy primary "
        "looks lost to its replicas (got 1.5)"
    )
    # Not managed: the rule cannot be checked here (a warning in explain instead).
    unmanaged = text + "[postgres]\nmanage_settings = false\n"
    assert load_config(write(tmp_path, unmanaged), {}).timing.replica_silence == 1.5


def test_many_problems_are_all_reported_one_line_each(tmp_path: Path) -> None:
    text = 'mode = "x"\n' + NODES.replace("priority = 50", "priority = -2") + (
        "[timing]\nprobe_interval = 0\nfailure_threshold = 0\n[hooks]\ntimeout = -1\n"
    )
    found = problems(tmp_path, text)
    keys = [p.split(": ")[1] for p in found]
    assert keys == [
        "mode",
        "nodes[1].priority",
        "timing.probe_interval",
        "timing.failure_threshold",
        "hooks.timeout",
    ]
    assert all("\n" not in p and "Traceback" not in p for p in found)


def test_config_error_text_is_the_problem_lines(tmp_path: Path) -> None:
    path = write(tmp_path, 'mode = "x"\n[timing]\nprobe_interval = 0\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value) == "\n".join(info.value.problems)
    assert len(info.value.problems) == 3


def test_direct_construction_checks_cross_field_rules() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(
            {"nodes": [{"name": "a", "dsn": "host=x"}, {"name": "a", "dsn": "host=y"}]},
            source="inline",
        )
    assert info.value.problems == [
        "inline: nodes[1].name: duplicate node name 'a' (also nodes[0]); node names must be unique"
    ]


def test_config_from_mapping_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HACONTROL_MODE", "manual")
    config = config_from_mapping(
        {"nodes": [{"name": "a", "dsn": "host=x"}, {"name": "b", "dsn": "host=y"}]}
    )
    assert config.mode is FailoverMode.AUTOMATIC
    assert isinstance(config, Config)


# ---------------------------------------------------------------- explain / check_config


def test_detection_delay() -> None:
    def delay(interval: float, threshold: int, window: float) -> float:
        data = {
            "nodes": [{"name": "a", "dsn": "host=x"}, {"name": "b", "dsn": "host=y"}],
            "timing": {
                "probe_interval": interval,
                "failure_threshold": threshold,
                "detection_window": window,
            },
        }
        return round(detection_delay(config_from_mapping(data)), 6)

    assert delay(0.2, 3, 0.5) == 0.6  # the window rules: 4 probes
    assert delay(0.2, 3, 0.4) == 0.4  # exactly 3 probes span 0.4 s
    assert delay(0.1, 5, 0.2) == 0.4  # the count rules
    assert delay(1.0, 1, 1.0) == 1.0


def test_explain_summarises_the_configuration(tmp_path: Path) -> None:
    text = (
        'mode = "semi-automatic"\n'
        + NODES.replace("priority = 50", "priority = 0")
        + '[hooks]\npre_promote = "/usr/local/bin/stonith --host $HACONTROL_OLD_PRIMARY"\n'
    )
    config = load_config(write(tmp_path, text), {})
    out = explain(config)
    assert "mode: semi-automatic: fails over by itself, never fails back on its own" in out
    assert "pg1  priority 100" in out
    assert "pg2  never promoted" in out
    assert (
        "declared failed after 3 failed probes spanning >= 0.5 s, about 0.6 s (4 probes) at a "
        "0.2 s interval, then confirmed by the replicas" in out
    )
    assert (
        "at most 16 MiB behind; most WAL first, then the least WAL left to replay, then"
        " priority, then name" in out
    )
    assert "pre_promote: /usr/local/bin/stonith --host $HACONTROL_OLD_PRIMARY" in out
    assert "fence: (none)" in out
    assert "wal_receiver_timeout = 2000ms, wal_sender_timeout = 10000ms" in out
    assert f"journal: {tmp_path.resolve() / 'hacontrol-journal.jsonl'}" in out
    assert "only pg1 has priority > 0" in out


def test_explain_redacts_and_warns_about_passwords(tmp_path: Path) -> None:
    text = NODES.replace(
        "host=10.0.0.1 port=5432 user=hacontrol dbname=postgres",
        "host=10.0.0.1 port=5432 user=hacontrol password=Hunter2pw",
    ).replace("user=replicator", "user=replicator password='repl pw'")
    text = text.replace(
        "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres",
        "postgresql://hacontrol:UriSecret9@10.0.0.2:5432/postgres",
    )
    out = explain(load_config(write(tmp_path, text), {}))
    for secret in ("Hunter2pw", "repl pw", "UriSecret9"):
        assert secret not in out
    assert "password=***" in out
    assert "postgresql://hacontrol:***@10.0.0.2" in out
    assert out.count("use a libpq passfile") == 3
    assert "nodes[1].replication_dsn (pg2): a password is written in the DSN" in out


def test_explain_warns_about_unmanaged_settings_and_failback_outside_automatic(
    tmp_path: Path,
) -> None:
    text = 'mode = "manual"\n' + NODES + (
        "[failover]\nfailback = true\n[postgres]\nmanage_settings = false\nheartbeat = false\n"
    )
    out = explain(load_config(write(tmp_path, text), {}))
    assert "mode: manual: detects and alerts only" in out
    assert "postgres.manage_settings is off" in out
    assert "below 2 × (timing.replica_silence − 0.5 s) = 5 s" in out
    assert "postgres.heartbeat is off" in out
    assert "failover.failback has no effect in manual mode" in out
    assert "not managed (the nodes keep their own)" in out


def test_explain_without_warnings(tmp_path: Path) -> None:
    out = explain(load_config(write(tmp_path, QUIET), {}))
    assert "warnings:" not in out
    assert "no automatic failback" in out


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, NODES, "good.toml")
    bad = write(tmp_path, NODES + "[timing]\nprobe_interval = -1\n", "bad.toml")
    code, text = check_config(good, {})
    assert code == 0
    assert text.startswith("mode: automatic")
    code, text = check_config(bad, {})
    assert code == 2
    assert text == f"{bad}: timing.probe_interval: must be at least 0.01 (got -1)"


# ---------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("inf", "must be a finite number (got inf)"),
        ("+inf", "must be a finite number (got inf)"),
        ("-inf", "must be a finite number (got -inf)"),
        ("nan", "must be a finite number (got nan)"),
        ("3e6", "must be at most 60 (got 3e+06)"),
        ("61", "must be at most 60 (got 61)"),
    ],
)
def test_absurd_probe_timeout_in_the_file_is_refused(
    tmp_path: Path, value: str, expected: str
) -> None:
    line = one_problem(tmp_path, NODES + f"[timing]\nprobe_timeout = {value}\n")
    assert line == f"{tmp_path / LABEL}: timing.probe_timeout: {expected}"
    code, text = check_config(tmp_path / LABEL, {})
    assert (code, text) == (2, line)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("inf", "must be a finite number (got 'inf')"),
        ("Infinity", "must be a finite number (got 'Infinity')"),
        ("-inf", "must be a finite number (got '-inf')"),
        ("nan", "must be a finite number (got 'nan')"),
        ("NaN", "must be a finite number (got 'NaN')"),
        ("3e6", "must be at most 60 (got '3e6')"),
    ],
)
def test_absurd_probe_timeout_from_the_environment_is_refused(
    tmp_path: Path, value: str, expected: str
) -> None:
    env = {"HACONTROL_TIMING__PROBE_TIMEOUT": value}
    line = one_problem(tmp_path, NODES, env)
    assert line == (
        f"{tmp_path / LABEL}: timing.probe_timeout (set by HACONTROL_TIMING__PROBE_TIMEOUT): "
        f"{expected}"
    )
    code, text = check_config(tmp_path / LABEL, env)
    assert (code, text) == (2, line)


# Every number: (key, its largest allowed value). One past it is refused, and so are
# inf and nan (for the floats); the largest itself loads (given what it depends on).
BOUNDS = [
    ("timing.probe_interval", "60"),
    ("timing.probe_timeout", "60"),
    ("timing.failure_threshold", "100"),
    ("timing.detection_window", "3600"),
    ("timing.replica_silence", "3600"),
    ("timing.recovery_threshold", "100"),
    ("timing.cooldown", "604800"),
    ("timing.promote_timeout", "3600"),
    ("timing.repoint_retry", "3600"),
    ("failover.max_lag_bytes", "1099511627776"),
    ("failover.failback_delay", "604800"),
    ("failover.candidate_backoff", "86400"),
    ("rejoin.timeout", "3600"),
    ("switchover.catchup_timeout", "3600"),
    ("switchover.timeout", "7200"),
    ("postgres.wal_receiver_timeout", "3600"),
    ("postgres.wal_sender_timeout", "3600"),
    ("hooks.timeout", "3600"),
]
# What the largest values above need from other keys (cross-field rules).
ROOM = {
    "timing": {"replica_silence": "3600", "detection_window": "3600", "promote_timeout": "3600"},
    "switchover": {"timeout": "7200"},
}


@pytest.mark.parametrize(("key", "largest"), BOUNDS)
def test_every_number_has_an_upper_bound(tmp_path: Path, key: str, largest: str) -> None:
    section, name = key.split(".")
    too_big = str(int(largest) + 1)
    line = one_problem(tmp_path, NODES + f"[{section}]\n{name} = {too_big}\n")
    assert line == f"{tmp_path / LABEL}: {key}: must be at most {largest} (got {too_big})"
    tables = {t: dict(values) for t, values in ROOM.items()}
    tables.setdefault(section, {})[name] = largest
    text = NODES + "".join(
        f"[{t}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        for t, values in tables.items()
    )
    config = load_config(write(tmp_path, text), {})
    assert str(getattr(getattr(config, section), name)).removesuffix(".0") == largest


@pytest.mark.parametrize(
    "key", [k for k, _ in BOUNDS if k.split(".")[1] not in
            ("failure_threshold", "recovery_threshold", "max_lag_bytes")],
)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_duration_is_finite(tmp_path: Path, key: str, value: str) -> None:
    section, name = key.split(".")
    line = one_problem(tmp_path, NODES + f"[{section}]\n{name} = {value}\n")
    assert line == f"{tmp_path / LABEL}: {key}: must be a finite number (got {value})"


@pytest.mark.parametrize("key", ["failure_threshold", "recovery_threshold"])
def test_counts_are_whole_finite_numbers(tmp_path: Path, key: str) -> None:
    line = one_problem(tmp_path, NODES + f"[timing]\n{key} = inf\n")
    assert line.startswith(f"{tmp_path / LABEL}: timing.{key}: must be ")


def test_priority_is_bounded(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES.replace("priority = 50", "priority = 1000001"))
    assert line == f"{tmp_path / LABEL}: nodes[1].priority: must be at most 1000000 (got 1000001)"


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        ("timeout = inf", "nodes[0].driver.timeout: must be a finite number (got inf)"),
        ("timeout = 3601", "nodes[0].driver.timeout: must be at most 3600 (got 3601)"),
        ("basebackup_timeout = nan",
         "nodes[0].driver.basebackup_timeout: must be a finite number (got nan)"),
        ("basebackup_timeout = 604801",
         "nodes[0].driver.basebackup_timeout: must be at most 604800 (got 604801)"),
    ],
)
def test_driver_timeouts_are_bounded(tmp_path: Path, driver: str, expected: str) -> None:
    for kind in ('kind = "local"\ndata_dir = "/nonexistent/x"', 'kind = "command"'):
        table = f'dbname=postgres"\n[nodes.driver]\n{kind}\n{driver}\n\n[[nodes]]'
        text = NODES.replace('dbname=postgres"\n\n[[nodes]]', table, 1)
        assert one_problem(tmp_path, text) == f"{tmp_path / LABEL}: {expected}"


def test_probe_round_must_fit_inside_the_replica_silence(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "[timing]\nprobe_timeout = 2.9\n")
    assert line.startswith(
        f"{tmp_path / LABEL}: timing.probe_timeout: must be at most timing.replica_silence"
        " - timing.probe_interval = 2.8 s: a replica confirms a lost primary only if it was"
        " seen streaming within timing.replica_silence before the primary's first failed probe"
    )
    assert line.endswith("(got 2.9)")
    line = one_problem(tmp_path, NODES + "[timing]\nprobe_interval = 3\ndetection_window = 3\n")
    assert line.startswith(
        f"{tmp_path / LABEL}: timing.probe_interval: must be less than timing.replica_silence"
        " (3 s)"
    )
    # Raising the silence makes room (its own rule: > wal_receiver_timeout / 2 + 0.5).
    ok = NODES + "[timing]\nprobe_timeout = 10\nreplica_silence = 10.2\npromote_timeout = 20\n"
    assert load_config(write(tmp_path, ok), {}).timing.probe_timeout == 10


def test_promote_timeout_must_cover_two_probe_timeouts(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "[timing]\npromote_timeout = 1.5\n")
    assert line == (
        f"{tmp_path / LABEL}: timing.promote_timeout: must be at least 2 × timing.probe_timeout"
        " = 2 s: the promote's own connection and the probe that sees it promoted may each "
        "take a probe timeout, so a shorter limit abandons promotions that work (got 1.5)"
    )


def test_the_old_probe_timeout_warning_is_now_an_error(tmp_path: Path) -> None:
    # probe_timeout > replica_silence used to pass with a warning.
    found = problems(tmp_path, NODES + "[timing]\nprobe_timeout = 4\npromote_timeout = 5\n")
    assert [p.split(": ")[1] for p in found] == ["timing.probe_timeout", "timing.promote_timeout"]


# ---------------------------------------------------------------- system_identifier


def test_system_identifier_pins_the_cluster(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, NODES), {}).system_identifier is None
    config = load_config(write(tmp_path, "system_identifier = 7301234567890123456\n" + NODES), {})
    assert config.system_identifier == 7301234567890123456
    assert "identity: system identifier 7301234567890123456 (pinned)" in explain(config)
    # Above TOML's largest integer, as a string; and from the environment.
    big = load_config(write(tmp_path, 'system_identifier = "18446744073709551615"\n' + NODES), {})
    assert big.system_identifier == (1 << 64) - 1
    env = load_config(write(tmp_path, NODES), {"HACONTROL_SYSTEM_IDENTIFIER": "42"})
    assert env.system_identifier == 42
    empty = load_config(write(tmp_path, 'system_identifier = ""\n' + NODES), {})
    assert empty.system_identifier is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "must be greater than 0 (got 0)"),
        ("-5", "must be greater than 0 (got -5)"),
        ('"18446744073709551616"',
         "must be at most 18446744073709551615 (got '18446744073709551616')"),
        ('"abc"', "must be a whole number (got 'abc')"),
        ("1.5", "must be a whole number (got 1.5)"),
    ],
)
def test_system_identifier_problems(tmp_path: Path, value: str, expected: str) -> None:
    line = one_problem(tmp_path, f"system_identifier = {value}\n" + NODES)
    assert line == f"{tmp_path / LABEL}: system_identifier: {expected}"


def test_drivers_are_built_with_the_dsn_port_and_the_pinned_identifier(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "system_identifier = 99\n" + DRIVERS), {})
    drivers = config.build_drivers()
    assert drivers["pg1"].expected_port == 5432
    assert all(d.pinned_system_identifier == 99 for d in drivers.values())
    assert drivers["pg3"].describe() == "no driver (SQL only)"


# ---------------------------------------------------------------- local data directories


def fake_pgdata(path: Path, port: int, slot_wal: str = "'1GB'") -> Path:
    path.mkdir(parents=True)
    (path / "PG_VERSION").write_text("15\n")
    (path / "postgresql.conf").write_text(f"port = {port}\nmax_slot_wal_keep_size = {slot_wal}\n")
    return path


def local_nodes(*nodes: tuple[str, int, Path]) -> str:
    return "".join(
        f'[[nodes]]\nname = "{name}"\ndsn = "host=127.0.0.1 port={port} user=postgres"\n'
        f'[nodes.driver]\nkind = "local"\ndata_dir = "{data}"\n\n'
        for name, port, data in nodes
    )


def test_swapped_data_dirs_fail_check_config_with_one_line_naming_both(tmp_path: Path) -> None:
    a, b = fake_pgdata(tmp_path / "a", 5432), fake_pgdata(tmp_path / "b", 5433)
    good = write(tmp_path, local_nodes(("pg1", 5432, a), ("pg2", 5433, b)), "good.toml")
    code, text = check_config(good, {})
    assert code == 0, text
    assert "nodes[0].driver.data_dir" not in text
    bad = write(tmp_path, local_nodes(("pg1", 5432, b), ("pg2", 5433, a)), "bad.toml")
    # The file itself is valid: only this host shows the swap.
    assert load_config(bad, {}).nodes[0].driver is not None
    code, text = check_config(bad, {})
    assert code == 2
    assert text == (
        f"{bad}: nodes[0].driver.data_dir: pg1 and pg2 have their data directories swapped: "
        f"pg1's data_dir {b}: its server would run on port 5433 ({b / 'postgresql.conf'}, "
        f"line 1), the port of pg2's dsn; pg2's data_dir {a}: its server would run on port 5432"
        f" ({a / 'postgresql.conf'}, line 1), the port of pg1's dsn; exchange the two "
        "data_dir values"
    )


def test_unlimited_slot_wal_is_a_warning_where_the_data_dir_shows_it(tmp_path: Path) -> None:
    a = fake_pgdata(tmp_path / "a", 5432, slot_wal="-1")
    b = fake_pgdata(tmp_path / "b", 5433)
    (b / "postgresql.auto.conf").write_text("max_slot_wal_keep_size = '-1'\n")
    path = write(tmp_path, local_nodes(("pg1", 5432, a), ("pg2", 5433, b)))
    code, text = check_config(path, {})
    assert code == 0, text
    assert f"nodes[0].driver.data_dir (pg1): max_slot_wal_keep_size is unlimited for pg1" \
        f" ({a / 'postgresql.conf'}, line 2 sets -1)" in text
    assert f"({b / 'postgresql.auto.conf'}, line 1 sets -1)" in text
    off = write(tmp_path, local_nodes(("pg1", 5432, a), ("pg2", 5433, b))
                + "[replication]\nslots = false\n", "off.toml")
    assert "max_slot_wal_keep_size" not in check_config(off, {})[1]


def test_a_data_dir_on_another_nodes_port_or_none(tmp_path: Path) -> None:
    a, b = fake_pgdata(tmp_path / "a", 5433), fake_pgdata(tmp_path / "b", 5433)
    path = write(tmp_path, local_nodes(("pg1", 5432, a), ("pg2", 5433, b)))
    code, text = check_config(path, {})
    assert code == 2
    assert text == (
        f"{path}: nodes[0].driver.data_dir: {a} is pg2's data directory, not pg1's: its server "
        f"would run on port 5433 ({a / 'postgresql.conf'}, line 1), the port of pg2's dsn, but "
        "pg1's dsn names port 5432; fix pg1's data_dir"
    )
    c = fake_pgdata(tmp_path / "c", 6000)
    path = write(tmp_path, local_nodes(("pg1", 5432, c), ("pg2", 5433, b)))
    code, text = check_config(path, {})
    assert code == 2 and text.endswith(
        "but pg1's dsn names port 5432; fix pg1's data_dir (or its dsn) so both name the same "
        "server"
    )


def test_a_missing_data_dir_is_a_warning_and_a_non_data_dir_an_error(tmp_path: Path) -> None:
    b = fake_pgdata(tmp_path / "b", 5433)
    missing = tmp_path / "gone"
    code, text = check_config(write(tmp_path, local_nodes(("pg1", 5432, missing),
                                                          ("pg2", 5433, b))), {})
    assert code == 0
    assert f"nodes[0].driver.data_dir (pg1): {missing} does not exist on this host" in text
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes").write_text("x")
    path = write(tmp_path, local_nodes(("pg1", 5432, other), ("pg2", 5433, b)))
    assert check_config(path, {}) == (2, (
        f"{path}: nodes[0].driver.data_dir: {other} is not a PostgreSQL data directory (no "
        "PG_VERSION); pg1's data_dir must be its PostgreSQL data directory"
    ))


def test_an_unknown_port_is_a_warning(tmp_path: Path) -> None:
    a, b = fake_pgdata(tmp_path / "a", 5432), fake_pgdata(tmp_path / "b", 5433)
    (a / "postgresql.conf").write_text("port = 5432\ninclude 'elsewhere.conf'\n")
    code, text = check_config(write(tmp_path, local_nodes(("pg1", 5432, a),
                                                          ("pg2", 5433, b))), {})
    assert code == 0
    assert (f"nodes[0].driver.data_dir (pg1): cannot tell which port {a}'s server would run on "
            f"({a / 'elsewhere.conf'} does not exist); the driver refuses to stop, start, "
            "rewind or re-clone pg1 until it can") in text


def test_a_data_dir_of_another_cluster_fails_a_pinned_identifier(tmp_path: Path) -> None:
    a, b = fake_pgdata(tmp_path / "a", 5432), fake_pgdata(tmp_path / "b", 5433)
    for data, identifier in ((a, 7), (b, 8)):
        (data / "global").mkdir()
        (data / "global" / "pg_control").write_bytes(identifier.to_bytes(8, sys.byteorder))
    path = write(tmp_path, "system_identifier = 7\n" + local_nodes(("pg1", 5432, a),
                                                                    ("pg2", 5433, b)))
    code, text = check_config(path, {})
    assert code == 2
    assert text == (
        f"{path}: nodes[1].driver.data_dir: {b} is not pg2's data directory: its control file "
        "names system identifier 8, but the cluster's is 7 (pinned by system_identifier); fix "
        "data_dir in pg2's [nodes.driver] table, or re-clone pg2 if its data belongs to another"
        " cluster"
    )


def test_local_driver_nodes_need_a_port_and_their_own_data_dir(tmp_path: Path) -> None:
    text = local_nodes(("pg1", 5432, Path("/srv/a")), ("pg2", 5433, Path("/srv/a/")))
    services = tmp_path / "services.conf"
    services.write_text("[pg1]\nhost=127.0.0.1\nport=5432\n")
    found = problems(tmp_path, text.replace("host=127.0.0.1 port=5432", "service=pg1"),
                     {"PGSERVICEFILE": str(services)})
    assert [p.split(": ", 1)[1] for p in found] == [
        "nodes[0].dsn (pg1): names no single numeric port of its own (the local driver does "
        "not read service files); a node with a local driver needs one, e.g. port=5432: its "
        "data directory must show that port before the driver acts on it",
        "nodes[1].driver.data_dir: the same data directory as nodes[0] ('pg1'); each node has "
        "its own",
    ]


def test_command_driver_without_identity_is_warned_about(tmp_path: Path) -> None:
    out = explain(load_config(write(tmp_path, DRIVERS), {}))
    assert ("nodes[1].driver (pg2): a command driver without an identity command cannot check"
            " that its commands act on pg2's data directory") in out
    with_identity = DRIVERS.replace('stop = "ssh', 'identity = "ssh pg2 pg-identity"\nstop = "ssh')
    out = explain(load_config(write(tmp_path, with_identity), {}))
    assert "without an identity command" not in out and "command: stop, identity" in out


# ---------------------------------------------------------------- docs stay true

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_example_file_is_valid_and_shows_the_defaults() -> None:
    config = load_config(DOCS / "example.toml", {})
    minimal = config_from_mapping({"nodes": [n.model_dump() for n in config.nodes]})
    assert config.decision_settings() == minimal.decision_settings()
    for section in ("timing", "failover", "postgres", "hooks", "api"):
        assert getattr(config, section) == getattr(minimal, section), section
    assert [n.priority for n in config.nodes] == [100, 100, 0]


def test_reference_documents_every_key_and_env_var() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    example = (DOCS / "example.toml").read_text(encoding="utf-8")
    for name, field in Config.model_fields.items():
        sub = field.annotation
        # An optional section ([dcs]) changes what runs when present: the example
        # shows it commented out.
        optional = typing.get_origin(sub) in (types.UnionType, typing.Union)
        if optional:
            sub = next(a for a in typing.get_args(sub) if a is not type(None))
        if not (isinstance(sub, type) and issubclass(sub, Section)):
            assert f"`{name}`" in text and f"HACONTROL_{name.upper()}" in text, name
        else:
            assert f"## `[{name}]`" in text, name
            for key in sub.model_fields:
                assert f"`{key}`" in text, (name, key)
                assert f"HACONTROL_{name.upper()}__{key.upper()}" in text, (name, key)
                assert f"\n{'# ' if optional else ''}{key} = " in example, (name, key)
    for key in NodeConfig.model_fields:
        assert f"`{key}`" in text and f"\n{key} = " in example, key


def test_top_level_keys_are_case_sensitive_like_toml(tmp_path: Path) -> None:
    found = problems(tmp_path, 'MODE = "manual"\n' + NODES + "[timing]\nprobe_interval = 0\n")
    assert found == [
        f"{tmp_path / LABEL}: MODE: unknown key; allowed keys: mode, journal, nodes, timing, "
        "failover, postgres, replication, slots, hooks, rejoin, switchover, api, dcs,"
        " system_identifier",
        f"{tmp_path / LABEL}: timing.probe_interval: must be at least 0.01 (got 0)",
    ]


def test_too_few_nodes_is_reported_even_when_the_node_is_invalid(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[nodes]]\nname = "pg1"\n')
    assert found == [
        f"{tmp_path / LABEL}: nodes: at least 2 nodes are required, a primary and a replica "
        "(got 1)",
        f"{tmp_path / LABEL}: nodes[0].dsn: required key is missing",
    ]


# ---------------------------------------------------------------- [api]

TOKEN = "s3cr3t-t0ken-0123456789abcdef"


def test_api_defaults_bind_loopback_without_a_token(tmp_path: Path) -> None:
    api = load_config(write(tmp_path, NODES), {}).api
    assert api.enabled and api.listen == "127.0.0.1:8008"
    assert api.address() == ("127.0.0.1", 8008)
    assert api.bearer_token() == "" and api.token_file is None


@pytest.mark.parametrize(
    ("listen", "address"),
    [("[::1]:8008", ("::1", 8008)), ("localhost:9000", ("localhost", 9000)),
     (" 10.0.0.5:0 ", ("10.0.0.5", 0))],
)
def test_api_listen_forms(tmp_path: Path, listen: str, address: tuple[str, int]) -> None:
    config = load_config(write(tmp_path, NODES + f'[api]\nlisten = "{listen}"\n'), {})
    assert config.api.address() == address


@pytest.mark.parametrize("listen", ["8008", "127.0.0.1", "host:", "host:70000", "a b:1", "::1:80"])
def test_api_listen_must_be_host_port(tmp_path: Path, listen: str) -> None:
    found = one_problem(tmp_path, NODES + f'[api]\nlisten = "{listen}"\n')
    assert found == (
        f"{tmp_path / LABEL}: api.listen: must be host:port, e.g. '127.0.0.1:8008' or "
        f"'[::1]:8008', with a port from 0 to 65535 (got {listen!r})"
    )


def test_api_token_from_env_is_never_shown(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {"HACONTROL_API__TOKEN": TOKEN})
    assert config.api.bearer_token() == TOKEN
    out = explain(config)
    assert "commands need the configured bearer token" in out
    for text in (out, repr(config), str(config), config.model_dump_json()):
        assert TOKEN not in text


def test_api_token_problems_never_quote_the_token(tmp_path: Path) -> None:
    found = one_problem(tmp_path, NODES, {"HACONTROL_API__TOKEN": "hunter2"})
    assert found == (
        f"{tmp_path / LABEL}: api.token (set by HACONTROL_API__TOKEN): too short (7 characters);"
        " use at least 16 random characters, e.g. the output of 'openssl rand -hex 32'"
    )
    found = one_problem(tmp_path, NODES + '[api]\ntoken = "abcdefgh ijklmnopq"\n')
    assert "api.token: must not contain spaces or control characters" in found
    assert "ijklmnopq" not in found
    found = one_problem(tmp_path, NODES + "[api]\ntoken = 12345678901234567\n")
    assert found == f"{tmp_path / LABEL}: api.token: must be a string"


def test_api_token_file_relative_to_the_config_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "api.token").write_text(TOKEN + "\n", encoding="utf-8")
    (tmp_path / "api.token").chmod(0o600)
    config = load_config(write(tmp_path, QUIET + '[api]\ntoken_file = "api.token"\n'), {})
    assert config.api.bearer_token() == TOKEN
    assert config.api.token_file == tmp_path.resolve() / "api.token"
    out = explain(config)
    assert f"commands need the bearer token from {tmp_path.resolve() / 'api.token'}" in out
    assert "warnings:" not in out and TOKEN not in out


def test_api_token_file_readable_by_others_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "api.token").write_text(TOKEN, encoding="utf-8")
    (tmp_path / "api.token").chmod(0o644)
    config = load_config(write(tmp_path, NODES + '[api]\ntoken_file = "api.token"\n'), {})
    assert "is readable by other users (mode 644); make it chmod 600" in explain(config)


def test_api_token_file_problems(tmp_path: Path) -> None:
    text = NODES + '[api]\ntoken_file = "api.token"\n'
    where = f"{tmp_path / LABEL}: api.token_file: {tmp_path.resolve() / 'api.token'}"
    assert one_problem(tmp_path, text) == f"{where}: file not found"
    (tmp_path / "api.token").write_text("\n", encoding="utf-8")
    assert one_problem(tmp_path, text) == f"{where}: the file is empty; write the token in it"
    (tmp_path / "api.token").write_text("hunter2\n", encoding="utf-8")
    found = one_problem(tmp_path, text)
    assert found.startswith(f"{where}: the token: too short (7 characters)")
    assert "hunter2" not in found


def test_api_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    found = one_problem(
        tmp_path, NODES + '[api]\ntoken_file = "api.token"\n', {"HACONTROL_API__TOKEN": TOKEN}
    )
    assert found == f"{tmp_path / LABEL}: api: set either api.token or api.token_file, not both"
    assert TOKEN not in found


def test_api_empty_token_file_means_unset(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES + '[api]\ntoken_file = ""\n'), {})
    assert config.api.token_file is None


def test_api_explain_disabled_and_public_listen(tmp_path: Path) -> None:
    out = explain(load_config(write(tmp_path, QUIET + "[api]\nenabled = false\n"), {}))
    assert "api: disabled" in out and "warnings:" not in out
    out = explain(load_config(write(tmp_path, NODES + '[api]\nlisten = "0.0.0.0:8008"\n'), {}))
    assert "api: http://0.0.0.0:8008 (status, health checks and metrics open;" in out
    assert "api.listen (0.0.0.0:8008) is not a loopback address" in out
    out = explain(load_config(write(tmp_path, QUIET + '[api]\nlisten = "[::1]:8008"\n'), {}))
    assert "api: http://[::1]:8008" in out and "warnings:" not in out


# ---------------------------------------------------------------- [replication]

THREE_NODES = NODES + """
[[nodes]]
name = "pg3"
dsn = "host=10.0.0.3 port=5432 user=hacontrol dbname=postgres"
"""


def test_replication_defaults_to_off(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODES), {})
    assert config.replication.synchronous == "off"
    settings = config.decision_settings()
    assert (settings.synchronous, settings.sync_quorum, settings.sync_strict) == ("off", 1, False)
    assert "synchronous_standby_names is left alone" in explain(config)


def test_replication_quorum_maps_to_decision_settings(tmp_path: Path) -> None:
    text = THREE_NODES + '[replication]\nsynchronous = "Quorum"\nquorum = 2\nstrict = true\n'
    config = load_config(write(tmp_path, text), {})
    settings = config.decision_settings()
    assert (settings.synchronous, settings.sync_quorum, settings.sync_strict) == (
        "quorum", 2, True
    )
    text = explain(config)
    assert "ANY 2 of the healthy replicas" in text
    assert "writes block until they return" in text
    assert "strict with quorum 2 of 2 replicas" in text  # the warning


def test_replication_env_overrides(tmp_path: Path) -> None:
    env = {"HACONTROL_REPLICATION__SYNCHRONOUS": "quorum", "HACONTROL_REPLICATION__QUORUM": "2"}
    config = load_config(write(tmp_path, THREE_NODES), env)
    assert (config.replication.synchronous, config.replication.quorum) == ("quorum", 2)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            'synchronous = "sync"',
            "replication.synchronous: must be one of: off, quorum (got 'sync')",
        ),
        ("quorum = 0", "replication.quorum: must be at least 1 (got 0)"),
        (
            "quorum = 2",
            "replication.quorum: must be at most the number of nodes - 1 = 1 (a primary never"
            " waits for itself, so at most every replica can acknowledge) (got 2)",
        ),
        ("strict = 3", "replication.strict: must be true or false (got 3)"),
        ("sync = 1", "replication.sync: unknown key; allowed keys: synchronous, quorum,"
         " strict, slots, slot_retention"),
    ],
)
def test_replication_validation_messages(tmp_path: Path, section: str, message: str) -> None:
    found = one_problem(tmp_path, NODES + f"[replication]\n{section}\n")
    assert found == f"{tmp_path / LABEL}: {message}"


def test_replication_warnings(tmp_path: Path) -> None:
    strict_off = load_config(write(tmp_path, NODES + "[replication]\nstrict = true\n"), {})
    assert "replication.strict has no effect" in explain(strict_off)
    never = THREE_NODES.replace("priority = 50", "priority = 0")
    config = load_config(write(tmp_path, never + '[replication]\nsynchronous = "quorum"\n'), {})
    assert "pg2 (priority 0) acknowledge commits but are never promoted" in explain(config)


# ---------------------------------------------------------------- drivers, rejoin, switchover

DRIVERS = """
[[nodes]]
name = "pg1"
dsn = "host=10.0.0.1 port=5432 user=hacontrol dbname=postgres"
[nodes.driver]
kind = "local"
data_dir = "/nonexistent/hacontrol-test/main"

[[nodes]]
name = "pg2"
dsn = "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres"
[nodes.driver]
kind = "command"
stop = "ssh pg2 pg_ctl stop -D {data_dir:ssh} -m {mode:ssh}"

[[nodes]]
name = "pg3"
dsn = "host=10.0.0.3 port=5432 user=hacontrol dbname=postgres"
"""


def test_driver_tables_per_node(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DRIVERS), {})
    drivers = config.node_drivers()
    assert drivers["pg1"] is not None and drivers["pg1"].kind == "local"
    assert drivers["pg2"] is not None and drivers["pg2"].kind == "command"
    assert drivers["pg3"] is None
    text = explain(config)
    assert "local: pg_ctl/pg_rewind/pg_basebackup on this host" in text
    assert "command: stop" in text and "none (SQL only: rejoin by hand)" in text
    assert "pg1: by the driver (rewind), automatically after a failover" in text
    assert "pg2, pg3: no driver that can: rejoin by hand" in text
    assert "does not exist on this host" in text  # the local data_dir (a warning)


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        ('data_dir = "/x"',
         "nodes[0].driver: the table needs a kind: one of local, command (docs/drivers.md)"),
        ('kind = "ssh"', "nodes[0].driver: kind must be one of: local, command (got 'ssh')"),
        ('kind = "local"\ndata_dir = "main"',
         "nodes[0].driver.data_dir: must be an absolute path, got 'main'"),
        ('kind = "local"', "nodes[0].driver.data_dir: required key is missing"),
        ('kind = "command"\nstop = "ssh {host} stop"',
         "nodes[0].driver.stop: unknown placeholder {host}; allowed: {data_dir}, {mode}, "
         "{node}, {primary_conninfo}, {primary_slot_name}, {source_dsn}"),
    ],
)
def test_driver_problems_name_the_key(tmp_path: Path, driver: str, expected: str) -> None:
    table = f'dbname=postgres"\n[nodes.driver]\n{driver}\n\n[[nodes]]'
    text = NODES.replace('dbname=postgres"\n\n[[nodes]]', table, 1)
    assert one_problem(tmp_path, text) == f"{tmp_path / LABEL}: {expected}"


def test_unknown_driver_key_lists_the_keys_of_its_kind(tmp_path: Path) -> None:
    text = NODES.replace(
        'dbname=postgres"\n\n[[nodes]]',
        'dbname=postgres"\n[nodes.driver]\nkind = "command"\nstpo = "x"\n\n[[nodes]]', 1,
    )
    line = one_problem(tmp_path, text)
    assert line.startswith(f"{tmp_path / LABEL}: nodes[0].driver.stpo: unknown key; allowed keys:")
    assert "standby_config" in line and "bindir" not in line


def test_rejoin_and_switchover_settings_reach_the_core(tmp_path: Path) -> None:
    text = NODES + (
        "[failover]\ncandidate_backoff = 7.5\n"
        "[rejoin]\nautomatic = false\nallow_basebackup = true\ntimeout = 20\n"
        "[switchover]\ncatchup_timeout = 3\ntimeout = 45\n"
    )
    config = load_config(write(tmp_path, text), {})
    settings = config.decision_settings()
    assert settings.candidate_backoff_s == 7.5
    assert settings.switchover_timeout_s == 45
    assert settings.rejoin_automatic is False
    assert config.rejoin.allow_basebackup and config.switchover.catchup_timeout == 3
    assert "reported overdue after 45 s, abandoned after 90 s" in explain(config)


def test_switchover_timeout_must_cover_catchup_and_rejoin(tmp_path: Path) -> None:
    line = one_problem(tmp_path, NODES + "[switchover]\ntimeout = 20\n")
    assert line.startswith(
        f"{tmp_path / LABEL}: switchover.timeout: must be at least switchover.catchup_timeout"
        " + rejoin.timeout = 40 s"
    )
    assert line.endswith("(got 20)")


def test_warnings_for_an_unfenced_automatic_setup_and_for_two_nodes(tmp_path: Path) -> None:
    hung = "a hung old primary that wakes up after a failover can take writes"
    pair = "2 nodes: an automatic failover needs a strict majority"
    out = explain(load_config(write(tmp_path, NODES), {}))
    assert hung in out and "set a fence or pre_promote hook" in out and pair in out
    assert 'replication.synchronous = "quorum"' in out
    assert "needs 2 of the 2 nodes' replicas confirming" in out
    manual = explain(load_config(write(tmp_path, 'mode = "manual"\n' + NODES), {}))
    assert hung not in manual and pair not in manual
    hooked = explain(load_config(write(tmp_path, NODES + '[hooks]\npre_promote = "x"\n'), {}))
    assert hung not in hooked and pair in hooked
    quiet = load_config(write(tmp_path, QUIET), {})
    assert quiet.decision_settings().fence_before_promote is True
    assert "fenced (fence hook) before a promote" in explain(quiet)
    assert load_config(write(tmp_path, NODES), {}).decision_settings().fence_before_promote is False


# ---------------------------------------------------------------- libpq parameters


def node_dsn(text: str, dsn: str) -> str:
    """``text`` with pg2's dsn replaced."""
    return text.replace('dsn = "host=10.0.0.2 port=5432 user=hacontrol dbname=postgres"',
                        f'dsn = "{dsn}"')


def test_a_libpq_parameter_the_controller_cannot_honour_is_refused(tmp_path: Path) -> None:
    text = node_dsn(NODES, "host=10.0.0.2 port=5432 user=hacontrol channel_binding=require")
    line = one_problem(tmp_path, text)
    assert line.startswith(
        f"{tmp_path / LABEL}: nodes[1].dsn (pg2): channel_binding=require (in the DSN): "
        "asyncpg cannot do SCRAM channel binding"
    )
    assert "remove channel_binding" in line
    code, out = check_config(tmp_path / LABEL, {})
    assert (code, out) == (2, line)


@pytest.mark.parametrize(
    ("dsn", "start"),
    [
        ("host=10.0.0.2 port=notaport", "port=notaport (in the DSN): must be a port number"),
        ("host=10.0.0.2 require_auth=password", "require_auth=password (in the DSN): "),
        ("host=10.0.0.2 gssencmode=require", "gssencmode=require (in the DSN): "),
        ("host=10.0.0.2 target_session_attrs=read-write", "target_session_attrs=read-write"),
        ("host=10.0.0.2 keepalives_idle=0", "keepalives_idle=0 (in the DSN): must be at least"),
        ("host=db2.example hostaddr=10.0.0.2 sslmode=verify-full", "hostaddr=10.0.0.2 (in "),
    ],
)
def test_refused_libpq_parameters_are_one_line_each(
    tmp_path: Path, dsn: str, start: str
) -> None:
    line = one_problem(tmp_path, node_dsn(NODES, dsn))
    assert line.startswith(f"{tmp_path / LABEL}: nodes[1].dsn (pg2): {start}")


def test_libpq_parameters_from_the_environment_are_refused_too(tmp_path: Path) -> None:
    found = problems(tmp_path, NODES, {"PGCHANNELBINDING": "require"})
    assert [p.split(": ", 2)[1] for p in found] == ["nodes[0].dsn (pg1)", "nodes[1].dsn (pg2)"]
    assert all("channel_binding=require (from PGCHANNELBINDING in the environment)" in p
               for p in found)


def test_libpq_parameters_the_controller_honours_are_accepted(tmp_path: Path) -> None:
    dsn = ("host=db2.example hostaddr=10.0.0.2 port=5432 channel_binding=prefer "
           "keepalives_idle=30 tcp_user_timeout=5000 connect_timeout=2 sslmode=verify-ca "
           "options='-c search_path=ha' fallback_application_name=ha")
    config = load_config(write(tmp_path, node_dsn(NODES, dsn)), {})
    assert config.nodes[1].dsn == dsn


def service_nodes(first: str, second: str) -> str:
    return (f'[[nodes]]\nname = "pg1"\ndsn = "{first}"\n'
            f'[[nodes]]\nname = "pg2"\ndsn = "{second}"\n')


def test_service_dsns_are_compared_after_reading_the_service(tmp_path: Path) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text("[hac1]\nhost=127.0.0.1\nport=5432\n[hac2]\nhost=127.0.0.1\nport=5433\n"
                        "[same]\nhost=127.0.0.1\nport=5432\n")
    env = {"PGSERVICEFILE": str(services)}
    config = load_config(write(tmp_path, service_nodes("service=hac1", "service=hac2")), env)
    assert [n.dsn for n in config.nodes] == ["service=hac1", "service=hac2"]
    line = one_problem(tmp_path, service_nodes("service=hac1", "service=same"), env)
    assert line == (
        f"{tmp_path / LABEL}: nodes[1].dsn (pg2): points at the same server (127.0.0.1:5432, "
        "from service 'same') as nodes[0] ('pg1', from service 'hac1'); each node is one server"
    )
    mixed = one_problem(tmp_path, service_nodes("service=hac2", "host=127.0.0.1 port=5433"), env)
    assert "nodes[1].dsn (pg2): points at the same server (127.0.0.1:5433)" in mixed


def test_a_service_that_cannot_be_found_is_refused(tmp_path: Path) -> None:
    env = {"PGSERVICEFILE": str(tmp_path / "none.conf"), "PGSYSCONFDIR": str(tmp_path)}
    line = one_problem(tmp_path, service_nodes("service=hac1", "host=10.0.0.2"), env)
    assert line.startswith(
        f"{tmp_path / LABEL}: nodes[0].dsn (pg1): service=hac1: definition of service 'hac1' "
        "not found"
    )


def test_a_service_dsn_without_replication_dsn_is_warned_about(tmp_path: Path) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text("[hac1]\nhost=10.0.0.1\n[hac2]\nhost=10.0.0.2\n")
    text = service_nodes("service=hac1", "service=hac2") + 'replication_dsn = "host=10.0.0.2"\n'
    out = explain(load_config(write(tmp_path, text), {"PGSERVICEFILE": str(services)}))
    assert ("nodes[0].dsn (pg1): names service 'hac1' and there is no replication_dsn" in out)
    assert "nodes[1].dsn (pg2): names service" not in out


# ---------------------------------------------------------------- misspelt variables


def test_misspelt_environment_variables_are_warned_about_without_their_values(
    tmp_path: Path,
) -> None:
    env = {
        "HACONTROL_TIMNG__PROBE_INTERVAL": "0.5",
        "HACONTROL_API_TOKEN": "s3cr3t-t0ken-0123456789abcdef",
        "hacontrol_journl": "/var/lib/x",
        "HACONTROL_XYZZY": "1",
        "HACONTROL_CONFIG": "/etc/hacontrol.toml",  # the CLI's: fine
        "HACONTROL_OLD_PRIMARY": "pg1",  # set for hooks: fine
    }
    config = load_config(write(tmp_path, QUIET), env)
    assert config.timing.probe_interval == 0.2
    warnings = config_warnings(config)
    assert warnings[:4] == [
        "environment: HACONTROL_API_TOKEN is not a hacontrol setting and is ignored; did you "
        "mean HACONTROL_API__TOKEN?",
        "environment: HACONTROL_TIMNG__PROBE_INTERVAL is not a hacontrol setting and is "
        "ignored; did you mean HACONTROL_TIMING__PROBE_INTERVAL?",
        "environment: HACONTROL_XYZZY is not a hacontrol setting and is ignored; settings are "
        "HACONTROL_KEY or HACONTROL_SECTION__KEY (docs/configuration.md)",
        "environment: hacontrol_journl is not a hacontrol setting and is ignored; did you mean "
        "HACONTROL_JOURNAL?",
    ]
    code, out = check_config(tmp_path / LABEL, env)
    assert code == 0
    assert "  - environment: HACONTROL_API_TOKEN is not a hacontrol setting" in out
    assert "s3cr3t" not in out and "0.5" not in out.split("warnings:")[1]
    assert config_warnings(load_config(write(tmp_path, QUIET), {})) == []


def test_misspelt_variables_are_shown_next_to_the_problems_they_cause(tmp_path: Path) -> None:
    env = {"HACONTROL_NOEDS": '[{"name": "x", "dsn": "host=h1"}]'}
    code, out = check_config(write(tmp_path, ""), env)
    assert code == 2
    assert out.splitlines()[-1] == (
        "warning: environment: HACONTROL_NOEDS is not a hacontrol setting and is ignored; did "
        "you mean HACONTROL_NODES?"
    )
    assert "host=h1" not in out


def test_every_setting_variable_is_valid_and_none_is_warned_about(tmp_path: Path) -> None:
    names = setting_env_names()
    assert "HACONTROL_TIMING__PROBE_INTERVAL" in names and "HACONTROL_API__TOKEN" in names
    assert env_warnings(dict.fromkeys(names, "x")) == []


# ---------------------------------------------------------------- journal path


def test_check_config_refuses_a_journal_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for journal, reason in [
        (blocker / "state" / "journal.jsonl", f"cannot be created: {blocker} is not a directory"),
        (tmp_path, "is a directory; journal must name a file in it"),
    ]:
        path = write(tmp_path, f'journal = "{journal}"\n' + QUIET)
        code, out = check_config(path, {})
        assert (code, out) == (2, f"{path}: journal: {journal}: {reason}")
    assert not (blocker / "state").exists()


def test_check_config_accepts_a_journal_in_a_directory_it_can_create(tmp_path: Path) -> None:
    journal = tmp_path / "not" / "yet" / "journal.jsonl"
    code, out = check_config(write(tmp_path, f'journal = "{journal}"\n' + QUIET), {})
    assert code == 0, out
    assert not (tmp_path / "not").exists()  # checked, not created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_config_refuses_a_journal_in_a_directory_it_may_not_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        path = write(tmp_path, f'journal = "{locked / "j.jsonl"}"\n' + QUIET)
        code, out = check_config(path, {})
        assert code == 2 and f"may not create entries in {locked}" in out
    finally:
        locked.chmod(0o700)


def test_check_config_refuses_a_journal_on_a_read_only_filesystem(tmp_path: Path) -> None:
    # Where /proc/sys is mounted read-only (containers), os.access says so even to root.
    if os.access("/proc/sys", os.W_OK | os.X_OK):
        pytest.skip("/proc/sys is writable here")
    journal = Path("/proc/sys/hacontrol/journal.jsonl")
    path = write(tmp_path, f'journal = "{journal}"\n' + QUIET)
    code, out = check_config(path, {})
    assert code == 2 and out.startswith(f"{path}: journal: {journal}: cannot be created")


def test_a_service_dsn_gives_its_node_the_address_replicas_stream_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hacontrol.core.model import Endpoint
    from hacontrol.core.topology import node_endpoints

    services = tmp_path / "pg_service.conf"
    services.write_text("[hac1]\nhost=127.0.0.1\nport=5432\n[hac2]\nhost=127.0.0.1\nport=5433\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    env = {"PGSERVICEFILE": str(services)}
    config = load_config(write(tmp_path, service_nodes("service=hac1", "service=hac2")), env)
    specs = {s.name: s for s in config.node_specs()}
    assert specs["pg2"].address == "host=127.0.0.1 port=5433"
    # What the replicas' WAL receivers report is matched against it, not port 5432.
    assert node_endpoints(specs["pg2"]) == (Endpoint("loopback", 5433),)
    plain = load_config(write(tmp_path, NODES), {})
    assert all(s.address is None for s in plain.node_specs())
