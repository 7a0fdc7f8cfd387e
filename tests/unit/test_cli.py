import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from hacontrol.cli import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, main

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
