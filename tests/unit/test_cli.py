import json
import os
import pty
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hacontrol.cli import confirm, render
from hacontrol.cli.exit_codes import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from hacontrol.cli.main import main
from tests.proxy_support import proxy_listener
from tests.terminal_support import on_terminal

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
    result = CliRunner().invoke(main, ["history", "--journal", "--config", str(path)])
    assert result.exit_code == 0
    assert "no events recorded" in result.output


# ---------------------------------------------------------------- commands through the API

TOKEN = "unit-test-token-0123456789abcdef"


class FakeApi:
    """Answers from a table of (method, path) -> (status, body); records requests."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def answer(self, method: str, path: str, *replies: tuple[int, Any]) -> None:
        self.answers[(method, path)] = list(replies)

    def reply(self, method: str, path: str) -> tuple[int, Any]:
        replies = self.answers.get((method, path.split("?")[0]))
        if not replies:
            return 404, {"error": "not found"}
        return replies.pop(0) if len(replies) > 1 else replies[0]


@contextmanager
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            api.requests.append((self.command, self.path, dict(self.headers), body))
            status, reply = api.reply(self.command, self.path)
            raw = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def config_with_token(tmp_path: Path) -> Path:
    path = tmp_path / "ok.toml"
    path.write_text(f'[api]\ntoken = "{TOKEN}"\n' + GOOD)
    return path


def snap(primary: str | None, in_flight: str | None = None) -> dict[str, Any]:
    nodes = [{"name": n, "reachable": True, "role": "primary" if n == primary else "replica",
              "timeline": 2, "health": "ok"} for n in ("pg1", "pg2")]
    return {"primary": primary, "mode": "automatic", "paused": False,
            "failover_in_flight": in_flight, "rounds": 7, "last_round_ms": 1.0, "nodes": nodes,
            "events": [{"ts": 0, "kind": "primary_adopted", "node": "pg1", "message": "hi"}]}


def test_pause_sends_the_token_and_prints_the_result(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("POST", "/pause", (200, {"ok": True, "message": "paused: observing"}))
        result = CliRunner().invoke(main, ["pause", "--config", str(config), "--api", address])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "done: paused: observing"
    method, path, headers, _ = api.requests[0]
    assert (method, path, headers["Authorization"]) == ("POST", "/pause", f"Bearer {TOKEN}")
    assert TOKEN not in result.output


def test_refusal_exits_1_and_bad_input_or_token_exits_2(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("POST", "/maintenance", (409, {"ok": False, "message": "in flight"}))
        refused = CliRunner().invoke(
            main, ["maintenance", "pg1", "on", "--config", str(config), "--api", address]
        )
        api.answer("POST", "/rejoin", (400, {"error": "node: unknown node 'pg9'"}))
        bad = CliRunner().invoke(main, ["rejoin", "pg9", "--config", str(config), "--api", address])
        api.answer("POST", "/resume", (401, {"error": "invalid bearer token"}))
        denied = CliRunner().invoke(main, ["resume", "--config", str(config), "--api", address])
    assert refused.exit_code == EXIT_FAILED and "refused: in flight" in refused.output
    assert api.requests[0][3] == {"node": "pg1", "on": True}
    assert bad.exit_code == EXIT_USAGE and "unknown node 'pg9'" in bad.output
    assert denied.exit_code == EXIT_USAGE and "HACONTROL_API__TOKEN" in denied.output


def test_unreachable_controller_exits_3(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    result = CliRunner().invoke(main, ["pause", "--config", str(config), "--api", "127.0.0.1:1"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "no controller answering at 127.0.0.1:1" in result.output


def test_failover_waits_for_the_new_primary(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("GET", "/status", (200, snap("pg1")), (200, snap("pg1", "pg2")),
                   (200, snap("pg2")))
        api.answer("POST", "/failover",
                   (202, {"ok": True, "message": "promoting pg2",
                          "in_flight": {"candidate": "pg2"}}))
        result = CliRunner().invoke(
            main, ["failover", "--to", "pg2", "--force", "--config", str(config), "--api", address]
        )
    assert result.exit_code == 0, result.output
    assert "accepted: promoting pg2" in result.output
    assert "done: pg2 is the primary (timeline 2)" in result.output
    posted = [r for r in api.requests if r[0] == "POST"]
    assert posted[0][3] == {"to": "pg2", "force": True}


def test_switchover_that_fails_exits_1(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("GET", "/status", (200, snap("pg1")))
        api.answer("POST", "/switchover",
                   (500, {"ok": False, "message": "Switchover of pg2 failed: not available"}))
        result = CliRunner().invoke(main, ["switchover", "--config", str(config), "--api", address])
    assert result.exit_code == EXIT_FAILED
    assert "failed (500): Switchover of pg2 failed: not available" in result.output


def test_status_and_history_read_the_controller_and_say_so(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("GET", "/status", (200, snap("pg1")))
        api.answer("GET", "/history", (200, {"events": snap("pg1")["events"]}))
        shown = CliRunner().invoke(main, ["status", "--config", str(config), "--api", address])
        as_json = CliRunner().invoke(
            main, ["status", "--json", "--config", str(config), "--api", address]
        )
        watched = CliRunner().invoke(main, ["status", "--watch", "--count", "3", "--interval",
                                            "0.1", "--config", str(config), "--api", address])
        history = CliRunner().invoke(main, ["history", "--config", str(config), "--api", address])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"(from the controller at {address}) primary pg1")
    assert json.loads(as_json.output)["source"] == "controller"
    assert watched.exit_code == 0 and watched.output.count("from the controller") == 3
    assert history.exit_code == 0 and "from the controller" in history.output
    assert "primary_adopted" in history.output


def test_status_probes_directly_when_no_controller_answers(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    result = CliRunner().invoke(main, ["status", "--config", str(config), "--api", "127.0.0.1:1"])
    # Nothing listens on port 1 or 2 either: no node is reachable.
    assert result.exit_code == EXIT_FAILED
    assert result.output.startswith("(probed directly: no controller answering at 127.0.0.1:1)")


def test_every_operator_command_is_there() -> None:
    result = CliRunner().invoke(main, ["--help"])
    for command in ("run", "status", "history", "pause", "resume", "maintenance", "switchover",
                    "failover", "rejoin", "demo", "check-config", "cluster"):
        assert f"  {command} " in result.output or f"  {command}\n" in result.output, command


# ---------------------------------------------------------------- never through a proxy

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "https_proxy", "HTTPS_PROXY")


def proxy_env(url: str) -> dict[str, str | None]:
    env: dict[str, str | None] = {name: url for name in PROXY_VARS}
    env.update(no_proxy=None, NO_PROXY=None)
    return env


def test_commands_never_send_the_token_through_an_environment_proxy(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with proxy_listener() as (proxy, contacted), fake_api() as (api, address):
        api.answer("POST", "/pause", (200, {"ok": True, "message": "paused"}))
        api.answer("GET", "/status", (200, snap("pg1")))
        api.answer("GET", "/history", (200, {"events": []}))
        inline = CliRunner().invoke(main, ["pause", "--config", str(config), "--api", address],
                                    env=proxy_env(proxy))
        # A fresh process, as an operator runs it (urllib reads the proxies at start).
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        env.update({name: proxy for name in PROXY_VARS})
        runs = [
            subprocess.run([sys.executable, "-m", "hacontrol", *args, "--config", str(config),
                            "--api", address], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
            for args in (["pause"], ["status"], ["history"])
        ]
    assert inline.exit_code == 0, inline.output
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert contacted == []
    posted = [r for r in api.requests if r[0] == "POST"]
    assert len(posted) == 2 and all(r[2]["Authorization"] == f"Bearer {TOKEN}" for r in posted)


def test_use_proxy_goes_through_the_proxy_when_asked(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with proxy_listener() as (proxy, contacted), fake_api() as (api, address):
        result = CliRunner().invoke(
            main, ["pause", "--use-proxy", "--config", str(config), "--api", address],
            env=proxy_env(proxy),
        )
        by_env = CliRunner().invoke(
            main, ["resume", "--config", str(config), "--api", address],
            env={**proxy_env(proxy), "HACONTROL_USE_PROXY": "1"},
        )
    assert result.exit_code == EXIT_FAILED and "failed (502)" in result.output
    assert by_env.exit_code == EXIT_FAILED
    assert len(contacted) == 2 and contacted[0].startswith(f"POST http://{address}/pause".encode())
    assert api.requests == []


# ---------------------------------------------------------------- check-config like the others


def test_check_config_takes_the_file_like_every_command(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    runner = CliRunner()
    for args, env in ((["-c", str(path)], {}), (["--config", str(path)], {}),
                      ([], {"HACONTROL_CONFIG": str(path)}),
                      ([str(path)], {"HACONTROL_CONFIG": str(tmp_path / "other.toml")})):
        result = runner.invoke(main, ["check-config", *args], env=env)
        assert result.exit_code == 0, (args, env, result.output)
        assert "pg1" in result.output
    none = runner.invoke(main, ["check-config"], env={"HACONTROL_CONFIG": None})
    assert none.exit_code == EXIT_USAGE
    assert "no configuration file given" in none.output and "HACONTROL_CONFIG" in none.output
    both = runner.invoke(main, ["check-config", str(path), "-c", str(tmp_path / "x.toml")])
    assert both.exit_code == EXIT_USAGE and "two configuration files" in both.output
    bad = runner.invoke(main, ["check-config", "-c", str(tmp_path / "missing.toml")])
    assert bad.exit_code == EXIT_USAGE and "Traceback" not in bad.output


# ---------------------------------------------------------------- history filters and UTC


def test_history_filters_through_the_api_and_marks_utc(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    events = [
        {"seq": 1, "ts": 1_764_625_212.5, "kind": "failover_started", "node": "pg2",
         "message": "promoting pg2"},
        # What a controller that ignores the filters would also send.
        {"seq": 2, "ts": 1_764_625_213.0, "kind": "paused", "node": None, "message": "x"},
    ]
    with fake_api() as (api, address):
        api.answer("GET", "/history", (200, {"events": events}))
        result = CliRunner().invoke(main, [
            "history", "--kind", "failover_started,node_fenced", "--kind", "failover_completed",
            "--node", "pg2", "--since", "2025-12-01T21:00:00Z", "-n", "20",
            "--config", str(config), "--api", address,
        ])
    assert result.exit_code == 0, result.output
    path = api.requests[0][1]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert query["kind"] == ["failover_completed,failover_started,node_fenced"]
    assert query["node"] == ["pg2"] and query["limit"] == ["20"]
    assert float(query["since"][0]) == 1_764_622_800.0
    lines = result.output.splitlines()
    assert "times are UTC" in lines[0] and "from the controller" in lines[0]
    assert lines[1].startswith("2025-12-01 21:40:12.500Z  failover_started")
    assert len(lines) == 2  # the paused record does not match


def test_history_filters_the_journal_file(tmp_path: Path) -> None:
    from hacontrol.io.journal import Journal

    config = tmp_path / "ok.toml"
    config.write_text(f'journal = "{tmp_path / "journal.jsonl"}"\n' + GOOD)
    journal = Journal(tmp_path / "journal.jsonl")
    for i in range(12):
        journal.append(["node_unreachable", "node_recovered", "paused"][i % 3],
                       node=f"pg{i % 2 + 1}", message=f"event {i}")
    runner = CliRunner()
    shown = runner.invoke(main, ["history", "--journal", "--config", str(config),
                                 "--kind", "node_unreachable", "--node", "pg2"])
    assert shown.exit_code == 0, shown.output
    assert [line.split()[-1] for line in shown.output.splitlines()[1:]] == ["3", "9"]
    recent = runner.invoke(main, ["history", "--journal", "--config", str(config),
                                  "--since", "1h", "--json"])
    assert len(recent.stdout.splitlines()) == 12 and "times are UTC" in recent.stderr
    none = runner.invoke(main, ["history", "--journal", "--config", str(config),
                                "--since", "2000-01-01T00:00:00Z", "--kind", "nothing"])
    assert none.exit_code == 0 and "no events recorded matching kind nothing" in none.output
    bad = runner.invoke(main, ["history", "--journal", "--config", str(config), "--since", "x"])
    assert bad.exit_code == EXIT_USAGE and "duration back from now" in bad.output


# ---------------------------------------------------------------- confirmations


def test_switchover_and_failover_ask_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_with_token(tmp_path)
    monkeypatch.setattr(confirm, "_interactive", lambda: True)
    status = snap("pg1")
    status["nodes"][1]["lag_bytes"] = 3 * 1024 * 1024
    with fake_api() as (api, address):
        api.answer("GET", "/status", (200, status))
        api.answer("POST", "/switchover", (200, {"ok": True, "message": "switched"}))
        api.answer("POST", "/failover", (200, {"ok": True, "message": "promoted"}))
        base = ["--config", str(config), "--api", address]
        declined = CliRunner().invoke(main, ["switchover", "--to", "pg2", *base], input="n\n")
        assert [r for r in api.requests if r[0] == "POST"] == []
        accepted = CliRunner().invoke(main, ["switchover", "--to", "pg2", *base], input="y\n")
        asked_failover = CliRunner().invoke(main, ["failover", "--to", "pg2", "--force", *base],
                                            input="\n")
        forced = CliRunner().invoke(main, ["failover", "--to", "pg2", "-y", *base])
    assert declined.exit_code == EXIT_FAILED
    assert "switchover: the primary moves from pg1 to pg2." in declined.output
    assert "Writes pause briefly" in declined.output and "Proceed? [y/N]" in declined.output
    assert "not done: nothing was changed" in declined.output
    assert accepted.exit_code == 0 and "done: switched" in accepted.output
    assert asked_failover.exit_code == EXIT_FAILED  # the default answer is no
    text = asked_failover.output
    assert "failover: promote pg2 now; the primary is pg1 (ok)" not in text
    assert "failover: promote pg2 now; the primary is pg1 (writable)." in text
    assert "can lose writes" in text and "pg2 was 3.0 MiB behind" in text
    assert "--force: the candidate checks" in text
    assert forced.exit_code == 0 and "Proceed?" not in forced.output
    posted = [r[1] for r in api.requests if r[0] == "POST"]
    assert posted == ["/switchover", "/failover"]


def test_the_prompt_needs_a_real_terminal_on_stdin(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("GET", "/status", (200, snap("pg1")))
        api.answer("POST", "/switchover", (200, {"ok": True, "message": "switched"}))
        command = [sys.executable, "-m", "hacontrol", "switchover", "--to", "pg2", "--config",
                   str(config), "--api", address]
        code, out, err = on_terminal(command, b"n\n")
        assert [r for r in api.requests if r[0] == "POST"] == []
        scripted = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=60, check=False)
        # A terminal on stdin alone: nobody would see the question (stderr is captured).
        master, slave = pty.openpty()
        try:
            piped = subprocess.run(command, stdin=slave, capture_output=True, text=True,
                                   timeout=60, check=False)
        finally:
            os.close(slave)
            os.close(master)
    assert code == EXIT_FAILED, out + err
    assert "Proceed? [y/N]" in err and "not done: nothing was changed" in err
    assert piped.returncode == 0 and "Proceed?" not in piped.stdout + piped.stderr
    assert scripted.returncode == 0, scripted.stdout + scripted.stderr
    assert "Proceed?" not in scripted.stdout + scripted.stderr
    assert [r[1] for r in api.requests if r[0] == "POST"] == ["/switchover", "/switchover"]


# ---------------------------------------------------------------- the status view


def row(name: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name, "dsn": f"host=10.0.0.{name[-1]} port=5432 user=hacontrol password=***",
        "priority": 100, "reachable": True, "role": "replica", "timeline": 2,
        "lsn": "16/B374D848", "replay_lsn": "16/B374D848", "lag_bytes": 0, "replay_lag_s": 0.2,
        "upstream": "10.0.0.2:5432", "receiver_status": "streaming", "read_only": True,
        "health": "ok", "fenced": False, "maintenance": False, "breaker": "closed",
        "error": None,
    }
    base.update(over)
    return base


def primary_row(name: str, **over: Any) -> dict[str, Any]:
    return row(name, **{"role": "primary", "replay_lsn": "-", "lag_bytes": None,
                        "replay_lag_s": None, "upstream": None, "receiver_status": None,
                        "read_only": False, **over})


def after_failover() -> dict[str, Any]:
    """pg2 promoted; pg1 restarted and fenced; pg3 streams; pg4 unreachable now."""
    return {
        "source": "controller", "api": "127.0.0.1:8008", "primary": "pg2",
        "mode": "semi-automatic", "paused": True, "failover_in_flight": None, "rounds": 51234,
        "last_round_ms": 12.4,
        "nodes": [
            primary_row("pg1", timeline=1, lsn="16/B3000000", health="fenced", fenced=True),
            primary_row("pg2", lsn="16/B374D000"),
            row("pg3", replay_lsn="16/B3700000", replay_lag_s=1.5, breaker="half_open"),
            # Stale values from an earlier round must not be shown.
            row("pg4", reachable=False, role="unknown", timeline=1, lsn="16/A0000000",
                health="unreachable", breaker="open",
                error="connection refused (host=10.0.0.4 port=5432 password=***)"),
            row("pg5", receiver_status=None, upstream=None, timeline=1, health="not-streaming",
                lsn="16/B0000000", replay_lsn="16/B0000000", lag_bytes=1),
        ],
        "events": [{"ts": 1_764_625_212.5, "kind": "failover_completed", "node": "pg2",
                    "message": "pg2 is the primary on timeline 2 (was pg1) " * 3}],
        "failover_blocked": {"reason": "paused", "message": "pg2 is unreachable and the"
                             " controller is paused: no failover", "way_out": "hacontrol resume"},
    }


def cells_by_node(lines: list[str]) -> dict[str, dict[str, str]]:
    header_index = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    header = lines[header_index]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    table = {}
    for line in lines[header_index + 1:]:
        if not line or line.startswith(" "):
            break
        values = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        table[values[0]] = dict(zip(names, values, strict=True))
    return table


def test_the_status_view_fits_80_columns_and_uses_more_only_when_there_is_room() -> None:
    result = after_failover()
    narrow = render.render_status(result, width=80).splitlines()
    assert max(len(line) for line in narrow) <= 80, "\n".join(narrow)
    header = next(i for i, line in enumerate(narrow) if line.startswith("NODE "))
    assert narrow[0].startswith("(from the controller at 127.0.0.1:8008) primary pg2")
    assert "failover BLOCKED: pg2 is unreachable and the controller is paused" in narrow[header - 2]
    assert "way out: hacontrol resume" in narrow[header - 1]
    assert "PAUSED" in narrow[0] + narrow[1]
    for column in ("NODE", "ROLE", "TL", "LSN", "LAG", "HEALTH"):
        assert column in narrow[header].split()
    assert "  pg3: breaker half_open" in narrow  # its column did not fit
    assert any(line.startswith("  pg4: breaker open; connection refused") for line in narrow)
    wide = render.render_status(result, width=140).splitlines()
    columns = next(line for line in wide if line.startswith("NODE ")).split()
    assert {"BREAKER", "PRIO", "DELAY", "REPLAY", "UPSTREAM"} <= set(columns)
    assert max(len(line) for line in wide) <= 140


def test_the_status_view_shows_unknown_as_unknown_and_one_primary() -> None:
    lines = render.render_status(after_failover(), width=140).splitlines()
    table = cells_by_node(lines)
    assert [n for n, c in table.items() if c["ROLE"] == "primary"] == ["pg2"]
    assert table["pg1"]["ROLE"] == "primary (fenced)" and table["pg1"]["HEALTH"] == "fenced"
    unreachable = table["pg4"]
    assert (unreachable["TL"], unreachable["LSN"], unreachable["LAG"]) == ("?", "?", "?")
    # A replica that does not stream reports its last checkpoint's timeline: not shown.
    assert table["pg5"]["TL"] == "?" and table["pg5"]["UPSTREAM"] == "-"
    assert table["pg3"]["UPSTREAM"] == "pg2"
    assert table["pg3"]["REPLAY"] == "310 KiB"  # 16/B374D848 - 16/B3700000
    assert table["pg2"]["LAG"] == "-"


def test_a_replica_never_reads_as_ahead_of_its_primary() -> None:
    result = after_failover()
    lines = render.render_status(result, width=140).splitlines()
    table = cells_by_node(lines)
    # The primary was probed a moment before pg3 received more: it has at least that.
    assert table["pg2"]["LSN"] == "16/B374D848" == table["pg3"]["LSN"]
    assert table["pg3"]["LAG"] == "0 B"
    # A replica further behind shows its own position and its lag.
    result["nodes"][2]["lsn"] = "16/B3740000"
    table = cells_by_node(render.render_status(result, width=140).splitlines())
    assert (table["pg2"]["LSN"], table["pg3"]["LSN"]) == ("16/B374D000", "16/B3740000")
    assert table["pg3"]["LAG"] == "52 KiB"


def test_status_json_has_null_never_a_dash(tmp_path: Path) -> None:
    config = config_with_token(tmp_path)
    with fake_api() as (api, address):
        api.answer("GET", "/status", (200, after_failover()))
        shown = CliRunner().invoke(main, ["status", "--json", "--config", str(config),
                                          "--api", address])
        table = CliRunner().invoke(main, ["status", "--config", str(config), "--api", address])
    assert shown.exit_code == 0, shown.output
    assert '"-"' not in shown.output
    nodes = {n["name"]: n for n in json.loads(shown.output)["nodes"]}
    assert nodes["pg1"]["replay_lsn"] is None
    assert nodes["pg4"]["timeline"] is None and nodes["pg4"]["lsn"] is None
    assert table.exit_code == 0 and max(len(x) for x in table.output.splitlines()) <= 80


def test_terminal_width_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "132")
    assert render.terminal_width() == 132
    monkeypatch.delenv("COLUMNS")
    assert render.terminal_width() == 80  # stdout is not a terminal here


def test_the_demo_prints_the_rejoin_command_for_a_fenced_old_primary() -> None:
    from hacontrol.cli.demo import view_hints

    status = after_failover()
    hints = view_hints(status, primary_pid=4242, stopped=[], tty=True, prog="hacontrol",
                       config_path="/tmp/demo/hacontrol.toml")
    assert "  hacontrol rejoin pg1 --config /tmp/demo/hacontrol.toml" in hints
    assert any("pg1 came back fenced; rejoin it as a replica of pg2" in h for h in hints)
    assert any("kill -9 4242" in h for h in hints)
    stopped = view_hints(status, primary_pid=None, stopped=["pg1"], tty=True, prog="hacontrol",
                         config_path="/tmp/demo/hacontrol.toml")
    assert not any("rejoin pg1" in h for h in stopped)  # restart it first
    assert any("press r to restart" in h for h in stopped)
