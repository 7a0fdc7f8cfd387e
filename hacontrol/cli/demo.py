"""``hacontrol demo``: a local cluster, the controller and a failover to watch.

Interactive (default): a 3-node :class:`~hacontrol.testing.LocalCluster`, the
controller in this process with its API on 127.0.0.1, and a status view redrawn
every second. Press ``k`` (or run the printed ``kill -9``) to kill the primary
and watch the failover; ``r`` restarts the killed node to show it fenced, and the
view then prints the exact ``hacontrol rejoin`` command that brings it back as a
replica; ``q`` or Ctrl-C stops everything the demo started (the servers by PID).

``--scenario failover``: the same without a terminal — a writer runs through
the multi-host DSN, the primary is killed, the failover is awaited (bounded),
the old primary is restarted to show the fence, and a timeline with timings
relative to the kill is printed. Exit 0 when the failover happened, else 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hacontrol.cli.exit_codes import EXIT_FAILED, EXIT_OK
from hacontrol.cli.render import DEFAULT_WIDTH, render_status
from hacontrol.config import ConfigError, load_config
from hacontrol.core.events import EventKind
from hacontrol.service.sdnotify import Notifier
from hacontrol.service.service import Service
from hacontrol.testing import ClusterError, LocalCluster, PgBinError
from hacontrol.testing.local_node import free_port

ADOPT_TIMEOUT_S = 30.0
FAILOVER_TIMEOUT_S = 30.0
FIRST_WRITE_TIMEOUT_S = 15.0
FENCE_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
CONFIG_NAME = "hacontrol.toml"
LOG_NAME = "controller.log"


def run_demo(scenario: str | None = None, size: int = 3, out: TextIO | None = None) -> int:
    """Run the demo; returns the exit code."""
    stream = out if out is not None else sys.stdout
    if scenario == "failover":
        return asyncio.run(_Demo(size, stream).scenario_failover())
    if scenario is not None:
        raise ValueError(f"unknown scenario {scenario!r}")
    return asyncio.run(_Demo(size, stream).interactive())


@dataclass
class _Timeline:
    """Moments relative to the kill, in seconds."""

    kill_wall: float = 0.0
    kill_mono: float = 0.0
    marks: list[tuple[float, str]] = field(default_factory=list)

    def wall(self, ts: float, text: str) -> None:
        self.marks.append((ts - self.kill_wall, text))

    def mono(self, at: float, text: str) -> None:
        self.marks.append((at - self.kill_mono, text))

    def lines(self) -> list[str]:
        return [f"  {t:+8.3f} s  {text}" for t, text in sorted(self.marks, key=lambda m: m[0])]


# Journal kinds shown in the scenario's timeline, and how to say them.
_TIMELINE_KINDS: dict[str, str] = {
    EventKind.NODE_UNREACHABLE: "controller: {node} unreachable",
    EventKind.PRIMARY_FAILED: "detected: {message}",
    EventKind.FAILURE_CONFIRMED: "confirmed: {message}",
    EventKind.FAILOVER_STARTED: "decided: {message}",
    EventKind.FAILOVER_COMPLETED: "promoted: {message}",
    EventKind.NODE_FENCED: "marked fenced: {message}",
}


class _Demo:
    def __init__(self, size: int, out: TextIO) -> None:
        self.size = size
        self.out = out
        self.cluster: LocalCluster | None = None
        self.service: Service | None = None
        self.task: asyncio.Task[int] | None = None
        self.config_path: Path | None = None
        self.log_file: TextIO | None = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # -- set-up and tear-down

    async def start(self) -> bool:
        """Start the cluster and the controller; False (after saying why) on failure."""
        started = time.monotonic()
        self.say(f"starting a {self.size}-node PostgreSQL cluster on 127.0.0.1 "
                 "(initdb, pg_basebackup; about 10 s)...")
        cluster = LocalCluster(self.size)
        try:
            await asyncio.to_thread(cluster.start)
        except (ClusterError, PgBinError, OSError) as exc:
            self.say(f"error: cannot start the cluster: {exc}")
            return False
        self.cluster = cluster
        self.say(f"cluster up in {time.monotonic() - started:.1f} s in {cluster.base_dir}")
        for node in cluster.nodes:
            self.say(f"  {node.name}  pid {node.pid()}  {node.dsn}")
        self.config_path = self._write_config(cluster)
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self.say("error: " + "; ".join(exc.problems))
            return False
        from hacontrol.service.logs import configure_logging

        self.log_file = (cluster.base_dir / LOG_NAME).open("a", encoding="utf-8")
        configure_logging("info", json=True, stream=self.log_file)
        # The demo is never the service systemd waits for, whatever the environment says.
        self.service = Service(config, config_path=self.config_path, notifier=Notifier(None))
        self.task = asyncio.create_task(self.service.run(install_signals=False))
        deadline = time.monotonic() + 10
        while self.service.api_address is None and time.monotonic() < deadline:
            if self.task.done():
                self.say(f"error: the controller stopped at once (exit {self.task.result()}); "
                         f"see {cluster.base_dir / LOG_NAME}")
                return False
            await asyncio.sleep(0.05)
        self.say(f"controller running in this process; API on http://{self.service.api_address}")
        self.say(f"dashboard: http://{self.service.api_address}/  (open it in a browser and"
                 " watch the failover live)")
        return True

    def _write_config(self, cluster: LocalCluster) -> Path:
        path = cluster.base_dir / CONFIG_NAME
        token = secrets.token_hex(16)
        text = (
            "# hacontrol demo: the controller's configuration for this local cluster\n"
            f'journal = "{cluster.base_dir / "journal.jsonl"}"\n\n'
            "[api]\n"
            f'listen = "127.0.0.1:{free_port()}"\n'
            f'token = "{token}"\n\n'
            # Local drivers make 'hacontrol rejoin' and switchovers work; the demo
            # shows the old primary fenced on its return, so no automatic rejoin.
            "[rejoin]\n"
            "automatic = false\n"
            + cluster.config_toml(drivers=True)
        )
        # The token is a secret: readable by this user only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return path

    async def stop(self) -> None:
        """Stop the controller, then every server of the cluster (by PID)."""
        if self.service is not None and self.task is not None:
            self.service.request_stop("demo finished")
            try:
                code = await asyncio.wait_for(asyncio.shield(self.task), STOP_TIMEOUT_S)
                self.say(f"controller stopped (exit {code})")
            except (TimeoutError, Exception) as exc:
                self.task.cancel()
                self.say(f"controller did not stop cleanly: {type(exc).__name__}")
        if self.cluster is not None:
            pids = self.cluster.running()
            base = self.cluster.base_dir
            await asyncio.to_thread(self.cluster.close)
            stopped = ", ".join(f"{n} pid {p}" for n, p in pids.items()) or "none running"
            self.say(f"cluster stopped ({stopped}); removed {base}")
        if self.log_file is not None:
            self.log_file.close()

    # -- helpers

    def _log_tail(self, count: int = 8) -> list[str]:
        """The controller log's last ``count`` records, one short line each."""
        if self.cluster is None:
            return []
        if self.log_file is not None:
            self.log_file.flush()
        try:
            lines = (self.cluster.base_dir / LOG_NAME).read_text(errors="replace").splitlines()
        except OSError as exc:
            return [f"(cannot read it: {exc.strerror or type(exc).__name__})"]
        tail = []
        for line in lines[-count:]:
            try:
                record = json.loads(line)
            except ValueError:
                tail.append(line[:200])
                continue
            fields = {k: v for k, v in record.items() if k not in ("event", "level", "timestamp")}
            tail.append(f"{record.get('level', '?')} {record.get('event', '?')} {fields}"[:200])
        return tail

    def _records(self, since_wall: float = 0.0) -> list[dict[str, Any]]:
        assert self.service is not None
        return [r for r in self.service.journal.recent if float(r.get("ts", 0)) >= since_wall]

    async def _wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        started = time.monotonic()
        while True:
            value = check()
            if value:
                return value
            if self.task is not None and self.task.done():
                return None
            if time.monotonic() - started > timeout:
                self.say(f"  timed out after {timeout:g} s waiting for {what}")
                return None
            await asyncio.sleep(0.02)

    def _adopted(self) -> bool:
        assert self.service is not None
        snap = self.service.controller.snapshot()
        return snap["primary"] == "pg1" and all(n["health"] == "ok" for n in snap["nodes"])

    def _tail_log(self, lines: int = 15) -> None:
        if self.cluster is None:
            return
        path = self.cluster.base_dir / LOG_NAME
        with contextlib.suppress(OSError):
            self.say(f"last lines of {path}:")
            for line in path.read_text(errors="replace").splitlines()[-lines:]:
                self.say("  " + line[:300])

    # -- the non-interactive scenario

    async def scenario_failover(self) -> int:
        """Kill the primary under a write load; print what happened when. 0: failed over."""
        try:
            if not await self.start():
                return EXIT_FAILED
            return await self._failover_steps()
        finally:
            await self.stop()

    async def _failover_steps(self) -> int:
        from hacontrol.testing.checker import lost_writes
        from hacontrol.testing.workload import Writer, create_table, read_ids

        assert self.cluster is not None and self.service is not None
        cluster, service = self.cluster, self.service
        t0 = time.monotonic()
        self.say("waiting for the controller to adopt pg1 as the primary and see the replicas"
                 " streaming...")
        if not await self._wait("the controller to adopt pg1", self._adopted, ADOPT_TIMEOUT_S):
            self._tail_log()
            return EXIT_FAILED
        self.say(f"  ok after {time.monotonic() - t0:.1f} s")
        dsn = cluster.multi_host_dsn()
        await asyncio.to_thread(create_table, dsn)
        writer = Writer(dsn, interval=0.01, max_duration=120)
        writer.start()
        try:
            await asyncio.sleep(1.0)
            old = cluster.node("pg1")
            timeline = _Timeline()
            timeline.kill_wall, timeline.kill_mono = time.time(), time.monotonic()
            killed = await asyncio.to_thread(old.kill)
            timeline.mono(timeline.kill_mono, f"killed pg1: SIGKILL to {len(killed)} processes")
            self.say(f"killed the primary pg1 (SIGKILL, {len(killed)} processes);"
                     " waiting for the failover...")

            def completed() -> dict[str, Any] | None:
                done = [r for r in self._records(timeline.kill_wall)
                        if r.get("kind") == EventKind.FAILOVER_COMPLETED]
                return done[0] if done else None

            record = await self._wait("the failover", completed, FAILOVER_TIMEOUT_S)
            if record is None:
                self.say("FAILED: no failover happened")
                self._tail_log()
                return EXIT_FAILED
            new = str(record["node"])
            new_port = cluster.node(new).port
            self.say(f"  {new} is the new primary")

            def first_write() -> Any:
                return next((a for a in writer.acks_since(timeline.kill_mono)
                             if a.port == new_port), None)

            ack = await self._wait(f"a write on {new}", first_write, FIRST_WRITE_TIMEOUT_S)
            if ack is not None:
                timeline.mono(ack.at, f"first acknowledged write on {new} (id {ack.id})")
            restart_wall = time.time()
            await asyncio.to_thread(old.start)
            timeline.wall(time.time(), "pg1 restarted: back as a writable primary on the old"
                                       " timeline")
            self.say("restarted pg1 to show it fenced; waiting for the controller...")

            def fenced() -> dict[str, Any] | None:
                done = [r for r in self._records(restart_wall)
                        if r.get("kind") == "action_finished" and r.get("action") == "Fence"
                        and r.get("node") == "pg1" and r.get("status") == "succeeded"]
                return done[0] if done else None

            fence = await self._wait("pg1 to be fenced", fenced, FENCE_TIMEOUT_S)
            if fence is not None:
                timeline.wall(float(fence["ts"]), f"old primary pg1 fenced: {fence.get('detail')}")
            await asyncio.sleep(0.5)
        finally:
            stats = await asyncio.to_thread(writer.stop)
        for record in self._records(timeline.kill_wall):
            kind = str(record.get("kind"))
            if kind in _TIMELINE_KINDS:
                text = _TIMELINE_KINDS[kind].format(node=record.get("node"),
                                                    message=record.get("message", ""))
                timeline.wall(float(record["ts"]), text)
            elif kind == "action_finished" and record.get("action") in ("Promote", "Repoint"):
                timeline.wall(float(record["ts"]),
                              f"{record['action'].lower()} {record.get('node')}:"
                              f" {record.get('status')} ({record.get('detail')})")
        try:
            present = await asyncio.to_thread(read_ids, dsn)
            lost: list[int] | None = lost_writes(stats.acks, present)
        except Exception as exc:  # report, do not crash the summary
            self.say(f"could not read the written ids back: {type(exc).__name__}: {exc}")
            lost = None
        self.say("")
        self.say("timeline (seconds relative to the kill):")
        for line in timeline.lines():
            self.say(line)
        self.say("")
        rto = f"{ack.at - timeline.kill_mono:.3f} s" if ack is not None else "no write seen"
        self.say(f"failover pg1 -> {new}: first acknowledged write on the new primary {rto}"
                 " after the kill")
        self.say(f"writes acknowledged: {len(stats.acks)}, failed attempts: {stats.errors}")
        if lost is not None:
            self.say(
                f"acknowledged writes lost: {len(lost)}"
                + (" (asynchronous replication: what pg1 acknowledged but had not yet sent"
                   " is gone; synchronous replication makes this 0)" if lost else "")
            )
        self.say(f"old primary fenced after restart: {'yes' if fence is not None else 'NO'}")
        snap = service.controller.snapshot()
        self.say(f"controller now: primary {snap['primary']}, "
                 f"{sum(1 for n in snap['nodes'] if n['health'] == 'ok')}/{len(snap['nodes'])}"
                 " nodes ok")
        return EXIT_OK

    # -- the interactive demo

    async def interactive(self) -> int:
        """The live view until q or Ctrl-C."""
        loop = asyncio.get_running_loop()
        quit_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, quit_event.set)
        try:
            if not await self.start():
                return EXIT_FAILED
            with _keys(loop, lambda key: self._on_key(key, quit_event)) as tty:
                await self._view(quit_event, tty)
            return EXIT_OK
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self.say("")
            self.say("stopping everything the demo started...")
            await self.stop()

    def _on_key(self, key: str, quit_event: asyncio.Event) -> None:
        key = key.lower()
        if key == "q":
            quit_event.set()
        elif key == "k":
            asyncio.get_running_loop().create_task(self._kill_primary())
        elif key == "r":
            asyncio.get_running_loop().create_task(self._restart_stopped())

    async def _kill_primary(self) -> None:
        assert self.cluster is not None and self.service is not None
        primary = self.service.controller.state.primary
        if primary is None:
            return
        node = self.cluster.node(primary)
        self._notice = f"killed {primary} (pids {await asyncio.to_thread(node.kill)})"

    async def _restart_stopped(self) -> None:
        assert self.cluster is not None
        for node in self.cluster.nodes:
            if not node.is_running():
                try:
                    await asyncio.to_thread(node.start)
                    self._notice = (f"restarted {node.name} (pid {node.pid()}); an old primary"
                                    " is fenced by the controller, then rejoined with the"
                                    " command shown")
                except ClusterError as exc:
                    self._notice = f"cannot restart {node.name}: {str(exc).splitlines()[0]}"

    _notice = ""

    async def _view(self, quit_event: asyncio.Event, tty: bool) -> None:
        assert self.service is not None and self.cluster is not None
        redraw = self.out.isatty()
        while not quit_event.is_set():
            if self.task is not None and self.task.done():
                # The log goes with the cluster's directory when the demo ends: say
                # what it says about the stop first.
                self.say(f"the controller stopped (exit {self.task.result()}); its log ends:")
                for line in self._log_tail():
                    self.say(f"  {line}")
                return
            snap = self.service.snapshot()
            primary = snap.get("primary")
            hints = view_hints(
                snap,
                primary_pid=self.cluster.node(primary).pid() if primary else None,
                stopped=[n.name for n in self.cluster.nodes if not n.is_running()],
                tty=tty, prog=_prog(), config_path=self.config_path,
            )
            if self._notice:
                hints.append(self._notice)
            result = {"source": "controller", "api": self.service.api_address, **snap}
            if redraw:
                # The whole view fits the terminal, so its header never scrolls away.
                size = shutil.get_terminal_size((DEFAULT_WIDTH, 24))
                width, rows = size.columns or DEFAULT_WIDTH, size.lines or 24
                used = _rows(render_status(result, width, max_events=0), width)
                spare = rows - 1 - used - _rows("\n".join(hints), width) - 3
                text = render_status(result, width, max_events=max(0, min(5, spare)))
            else:
                text = render_status(result, DEFAULT_WIDTH)
            text = "\n".join([text, "", *hints])
            if redraw:
                self.out.write("\x1b[H\x1b[2J" + text + "\n")
                self.out.flush()
            else:
                self.say(text + "\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(quit_event.wait(), 1.0 if redraw else 5.0)


def _rows(text: str, width: int) -> int:
    """Terminal rows ``text`` takes at ``width`` columns (long lines wrap)."""
    return sum(max(1, -(-len(line) // max(1, width))) for line in text.splitlines())


def view_hints(
    snap: Mapping[str, Any],
    *,
    primary_pid: int | None,
    stopped: Sequence[str],
    tty: bool,
    prog: str,
    config_path: Path | str | None,
) -> list[str]:
    """What the live view suggests doing next, commands given in full (to paste)."""
    lines = []
    primary = snap.get("primary")
    config = f" --config {config_path}" if config_path else ""
    if primary_pid is not None:
        lines.append(f"kill the primary {primary} as a crashed host would:  kill -9 {primary_pid}"
                     + ("   (or press k)" if tty else ""))
    if stopped:
        lines.append(f"stopped: {', '.join(stopped)}"
                     + ("; press r to restart (an old primary comes back fenced)" if tty else ""))
    for row in snap.get("nodes") or []:
        name = row.get("name")
        if row.get("fenced") and name not in stopped and name != primary:
            lines.append(f"{name} came back fenced; rejoin it as a replica of"
                         f" {primary or 'the primary'} (pg_rewind, then it streams):")
            lines.append(f"  {prog} rejoin {name}{config}")
    lines.append(f"from another shell:  {prog} status --watch{config}")
    lines.append("q or Ctrl-C stops everything the demo started" if tty
                 else "Ctrl-C stops everything the demo started")
    return lines


def _prog() -> str:
    """How this program was started, for commands the user can paste."""
    if Path(sys.argv[0]).name == "hacontrol":
        return sys.argv[0]
    return f"{sys.executable} -m hacontrol"


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, on_key: Callable[[str], None]) -> Iterator[bool]:
    """Deliver single key presses from a terminal stdin to ``on_key``; yields whether
    there is such a terminal (without one, keys are simply not read)."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def readable() -> None:
        data = os.read(fd, 32).decode(errors="ignore")
        for key in data:
            on_key(key)

    loop.add_reader(fd, readable)
    try:
        yield True
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
