"""One PostgreSQL server of a :class:`~hacontrol.testing.local_cluster.LocalCluster`:
its settings, its addresses, its postmaster started by PID (also inside a network
namespace), stopped, killed, frozen and thawed, and its log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from hacontrol.io.host.pgbin import PgBin
from hacontrol.io.host.runas import Owner
from hacontrol.testing import processes
from hacontrol.testing.cluster_queries import ClusterError, NodeQueries
from hacontrol.testing.netns import Namespace

HOST = "127.0.0.1"
NODE_CONF = "postgresql.node.conf"

# Defaults for every node; ``settings=`` overrides or extends them.
DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    # pg_rewind of a failed primary needs the WAL since the fork on the new primary.
    "wal_keep_size": "512MB",
    # The controller's member slots keep what a replica away needs, up to this.
    "max_slot_wal_keep_size": "1GB",
    "wal_log_hints": "on",
    "hot_standby": "on",
    "hot_standby_feedback": "off",
    "max_connections": "50",
    "shared_buffers": "32MB",
    "logging_collector": "off",
    # Faults here are process deaths, never host crashes, so the page cache keeps
    # every write; without fsync, setup and checkpoints are several times faster.
    "fsync": "off",
    "log_line_prefix": "%m [%p] %q%a ",
    "log_checkpoints": "off",
}


def conf_quote(value: str) -> str:
    """A postgresql.conf string value."""
    return "'" + value.replace("'", "''") + "'"


STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False



class NodeHost(Protocol):
    """What a node needs of its cluster (:class:`~hacontrol.testing.LocalCluster`)."""

    @property
    def base_dir(self) -> Path:
        """The directory with every node's data, sockets and log."""

    @property
    def owner(self) -> Owner:
        """The OS user that runs the servers."""

    @property
    def pgbin(self) -> PgBin:
        """The PostgreSQL binaries."""

    def _record_pid(self, node: Node, pid: int) -> None:
        """Remember a postmaster the harness started (for teardown and the reaper)."""


class Node(NodeQueries):
    """One PostgreSQL server of a :class:`LocalCluster`."""

    def __init__(
        self, cluster: NodeHost, name: str, port: int, netns: Namespace | None = None
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.port = port
        self.netns = netns
        self.host = netns.address if netns is not None else HOST
        self.data_dir = cluster.base_dir / name
        self.log_path = cluster.base_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen: list[int] = []

    def __repr__(self) -> str:
        return f"Node({self.name!r}, port={self.port})"

    # -- addresses -------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq key/value DSN of this node."""
        return f"host={self.host} port={self.port} user=postgres dbname=postgres"

    @property
    def replication_dsn(self) -> str:
        """How a replica reaches this node (primary_conninfo without application_name)."""
        return f"host={self.host} port={self.port} user=postgres"

    @property
    def bindir(self) -> Path:
        """The PostgreSQL ``bin`` directory this node runs from."""
        return self.cluster.pgbin.bindir

    @property
    def owner(self) -> Owner:
        """The OS user that owns the data directory and runs the server."""
        return self.cluster.owner

    # -- processes -------------------------------------------------------------------

    def pid(self) -> int | None:
        """The postmaster's PID, or None when it is not running. Read from
        postmaster.pid and checked against /proc, so a server restarted by other
        means (pg_ctl) is found too."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        if not processes.alive(pid) or not processes.is_postgres(pid):
            return None
        where = processes.cwd(pid)
        if where is not None and os.path.realpath(where) != os.path.realpath(self.data_dir):
            return None
        return pid

    def child_pids(self) -> list[int]:
        """PIDs of the postmaster's live descendants."""
        pid = self.pid()
        return processes.children(pid) if pid is not None else []

    def all_pids(self) -> list[int]:
        """The postmaster and its descendants."""
        pid = self.pid()
        return [pid, *processes.children(pid)] if pid is not None else []

    def is_running(self) -> bool:
        """True while the postmaster exists (a frozen one counts as running)."""
        return self.pid() is not None

    @property
    def frozen(self) -> bool:
        """True between :meth:`freeze` and :meth:`thaw`."""
        return bool(self._frozen)

    def start(self, timeout: float = 30.0) -> int:
        """Start the server and wait until it accepts connections; returns its PID."""
        if self.pid() is not None:
            raise ClusterError(f"{self.name} is already running")
        # A SIGKILLed postmaster leaves its pid file; its PID may since belong to
        # another process, which would make postgres refuse to start.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        argv = [self.cluster.pgbin.path("postgres"), "-D", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            if self.netns is None:
                self._proc = self.owner.popen(
                    argv, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT,
                    new_session=True,
                )
            else:
                self._proc = self._popen_in_netns(argv, log)
        self._wait_ready(self._proc, timeout)
        self.cluster._record_pid(self, self._proc.pid)
        return self._proc.pid

    def _popen_in_netns(self, argv: list[str], log: Any) -> subprocess.Popen[bytes]:
        # `ip netns exec` needs root, so the switch to the data directory's owner
        # happens after it (setpriv). Both exec without forking: the PID we get is
        # the postmaster's.
        assert self.netns is not None
        owner = self.owner
        drop = [] if owner.is_current else [
            "setpriv", f"--reuid={owner.uid}", f"--regid={owner.gid}", "--clear-groups", "--"
        ]
        return subprocess.Popen(
            [*self.netns.exec_argv(), *drop, *argv],
            cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=owner.env(), start_new_session=True,
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(
                    f"{self.name} exited with {proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            # Line 8 is the postmaster's status: "ready" (primary) or "standby".
            if (
                len(lines) >= 8
                and lines[0] == str(proc.pid)
                and lines[7].strip() in ("ready", "standby")
            ):
                return
            time.sleep(0.01)
        processes.kill_tree(proc.pid)
        raise ClusterError(
            f"{self.name} did not accept connections within {timeout:g} s:\n{self.log_tail()}"
        )

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut the server down (``smart``, ``fast`` or ``immediate``) and wait until
        every process of it is gone. A frozen server is thawed first."""
        if mode not in STOP_SIGNALS:
            raise ValueError(f"unknown stop mode {mode!r}; use one of {sorted(STOP_SIGNALS)}")
        if self._frozen:
            self.thaw()
        pids = self.all_pids()
        if not pids:
            return
        processes.send(pids[:1], STOP_SIGNALS[mode])
        left = processes.wait_gone(pids, timeout)
        self._reap()
        if left:
            raise ClusterError(f"{self.name} did not stop ({mode}) within {timeout:g} s: {left}")

    def kill(self) -> list[int]:
        """SIGKILL the postmaster and every child at once, as a host death; returns
        the PIDs killed."""
        pid = self.pid()
        if pid is None:
            return []
        self._frozen = []
        killed = processes.kill_tree(pid)
        self._reap()
        return killed

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster and every child (a hung server); returns the PIDs.
        Connections are still accepted by the kernel but never answered."""
        pid = self.pid()
        if pid is None:
            raise ClusterError(f"{self.name} is not running")
        # Stop the postmaster first so it cannot fork while its children are listed.
        processes.send([pid], signal.SIGSTOP)
        processes.wait_stopped(pid, 1.0)
        kids = processes.children(pid)
        processes.send(kids, signal.SIGSTOP)
        self._frozen = [pid, *kids]
        # Signal delivery is asynchronous: return only once every process is stopped.
        for p in kids:
            processes.wait_stopped(p, 1.0)
        return list(self._frozen)

    def freeze_backends(self) -> list[int]:
        """SIGSTOP the postmaster and every client backend, but not the WAL senders: a
        server whose sessions all hang (a lock pile-up, a stuck extension) while its
        replicas still stream from it. Nothing can connect, query or write; the
        replicas keep hearing it. :meth:`thaw` undoes it."""
        pid = self.pid()
        if pid is None:
            raise ClusterError(f"{self.name} is not running")
        processes.send([pid], signal.SIGSTOP)
        processes.wait_stopped(pid, 1.0)
        kids = [k for k in processes.children(pid) if _client_backend(k)]
        processes.send(kids, signal.SIGSTOP)
        self._frozen = [pid, *kids]
        for p in kids:
            processes.wait_stopped(p, 1.0)
        return list(self._frozen)

    def thaw(self) -> None:
        """SIGCONT everything :meth:`freeze` stopped."""
        frozen, self._frozen = self._frozen, []
        pid = self.pid()
        kids = processes.children(pid) if pid is not None else []
        rest = [p for p in dict.fromkeys([*frozen[1:], *kids])]
        processes.send(rest, signal.SIGCONT)
        processes.send(frozen[:1] or ([pid] if pid else []), signal.SIGCONT)

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(0)
            if self._proc.returncode is not None:
                self._proc = None

    # -- SQL (connect, query, is_primary, replay_lsn in NodeQueries) ------------------

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of this node's server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _client_backend(pid: int) -> bool:
    """A session's backend (its title names the client's address), not a WAL sender."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return False
    return ("(" in title or "[local]" in title) and "walsender" not in title

