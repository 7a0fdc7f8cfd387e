"""Real PostgreSQL streaming-replication clusters on this machine, for tests and demos.

``LocalCluster(nodes=3)`` makes ``pg1`` a primary with initdb and every other node a
replica with ``pg_basebackup -R``; all listen on 127.0.0.1 only, with their unix
sockets and data in one directory. Servers are started with the ``postgres``
binary directly (no pg_ctl), so the harness knows each postmaster's PID; the
fault helpers signal PIDs, never process names.

The cluster trusts every connection from 127.0.0.1, normal and replication:
test clusters only.

With ``netns=True`` every node runs in a network namespace of its own with its
own address on a private bridge (:mod:`hacontrol.testing.netns`), so faults can
cut, slow or isolate single links; the harness, controller and clients stay on
the host side. That needs root; by default nothing changes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import psycopg

from hacontrol.core.slot_names import member_slot_name
from hacontrol.io.host.pgbin import PgBin, find_pgbin
from hacontrol.io.host.runas import Owner, data_owner
from hacontrol.testing import processes
from hacontrol.testing.cluster_config import controller_toml
from hacontrol.testing.cluster_queries import ClusterError as ClusterError
from hacontrol.testing.cluster_queries import ClusterQueries
from hacontrol.testing.deadman import DeadManSwitch
from hacontrol.testing.local_node import DEFAULT_SETTINGS, NODE_CONF, conf_quote, port_in_use
from hacontrol.testing.local_node import HOST as HOST
from hacontrol.testing.local_node import Node as Node
from hacontrol.testing.local_node import free_port as free_port
from hacontrol.testing.netns import Namespace, NetLab
from hacontrol.testing.sysv import remove_stale_segment

STATE_FILE = "cluster.json"

class LocalCluster(ClusterQueries):
    """A primary (``pg1``) and ``nodes - 1`` streaming replicas (``pg2`` ...).

    Use as a context manager (sync or async) or call :meth:`start` and
    :meth:`close`. Unless ``keep`` is set, :meth:`close`, an ``atexit`` hook and a
    watchdog process (for a harness killed outright) stop every server by PID and
    remove ``base_dir``.
    """

    def __init__(
        self,
        nodes: int = 3,
        base_port: int | None = None,
        sync: bool = False,
        settings: Mapping[str, str] | None = None,
        *,
        base_dir: str | Path | None = None,
        keep: bool = False,
        os_user: str = "postgres",
        pgbin: PgBin | None = None,
        netns: bool = False,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = nodes
        self.base_port = base_port
        self.sync = sync
        self.settings = dict(settings or {})
        self.keep = keep
        self._given_dir = Path(base_dir) if base_dir is not None else None
        self._os_user = os_user
        self._pgbin = pgbin
        self.use_netns = netns
        self.netlab: NetLab | None = None
        self._nodes: dict[str, Node] = {}
        self._base: Path | None = None
        self._owns_dir = False
        self._watchdog: DeadManSwitch | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.started_pids: set[int] = set()
        self.startup_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The directory holding data directories, logs and sockets."""
        if self._base is None:
            raise ClusterError("the cluster is not started")
        return self._base

    @property
    def nodes(self) -> list[Node]:
        """Every node, pg1 first."""
        return list(self._nodes.values())

    @property
    def client_netns(self) -> Namespace | None:
        """With ``netns=True``: the namespace for clients (``cli``), outside every node's."""
        return self.netlab.member("cli") if self.netlab is not None else None

    @property
    def host_address(self) -> str:
        """The address the harness and controller reach the nodes from."""
        return self.netlab.gateway if self.netlab is not None else HOST

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self._nodes)}") from None

    def start(self) -> LocalCluster:
        """Create and start every node; returns self. On failure everything started
        so far is stopped and removed before the error propagates."""
        t0 = time.monotonic()
        self.pgbin = self._pgbin or find_pgbin()
        self.owner = data_owner(self._os_user)
        self._make_base_dir()
        atexit.register(self.close)
        try:
            ports = self._ports()
            names = [f"pg{i + 1}" for i in range(self.size)]
            spaces: list[Namespace | None] = [None] * self.size
            if self.use_netns:
                self.netlab = NetLab().start()
                spaces = [self.netlab.add(n) for n in names]
                self.netlab.add("cli")
            self._nodes = {
                n: Node(self, n, p, ns) for n, p, ns in zip(names, ports, spaces, strict=True)
            }
            if not self.keep:
                self._start_watchdog()
            self._write_state()
            primary = self.nodes[0]
            self._initdb(primary)
            primary.start()
            replicas = self.nodes[1:]
            if replicas:
                with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
                    list(pool.map(self._make_replica, replicas))
            self._write_state()
        except BaseException:
            self.keep = False  # a half-built cluster is never worth keeping
            self.close()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Stop every server of the cluster by PID and (unless ``keep``) remove its
        directory. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        if self._base is None:
            return
        try:
            self._stop_all()
        finally:
            try:
                if not self.keep:
                    self._remove_dir()
                self._stop_watchdog()
            finally:
                if self.netlab is not None:
                    self.netlab.close()

    def _remove_dir(self) -> None:
        base = self.base_dir
        if self._owns_dir:
            shutil.rmtree(base, ignore_errors=True)
            return
        # A directory the caller gave us stays; only what we put in it goes.
        for entry in base.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @classmethod
    def attach(cls, base_dir: str | Path) -> LocalCluster:
        """The cluster described by ``base_dir``'s state file (left running by
        ``hacontrol cluster up``), to inspect or stop it. It is kept by default:
        :meth:`close` stops its servers but removes nothing unless ``keep`` is unset."""
        base = Path(base_dir).resolve()
        path = base / STATE_FILE
        try:
            state = json.loads(path.read_text())
            nodes = [(str(n["name"]), int(n["port"])) for n in state["nodes"]]
            bindir = Path(state["bindir"])
            owner = str(state["owner"])
        except FileNotFoundError:
            raise ClusterError(f"no cluster in {base} ({STATE_FILE} is missing)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClusterError(f"{path} is not a valid cluster state file: {exc}") from None
        cluster = cls(len(nodes), sync=bool(state.get("sync")), keep=True, base_dir=base)
        cluster.pgbin = PgBin(bindir, 0)
        cluster.owner = data_owner(owner, create=False) if os.geteuid() == 0 else data_owner()
        cluster._base = base
        cluster._owns_dir = bool(state.get("created_dir"))
        cluster._nodes = {name: Node(cluster, name, port) for name, port in nodes}
        return cluster

    def running(self) -> dict[str, int]:
        """Postmaster PID of every running node, by name."""
        return {n.name: pid for n in self.nodes if (pid := n.pid()) is not None}

    def detach(self) -> None:
        """Leave the servers running after this process exits (``cluster up``)."""
        self.keep = True
        atexit.unregister(self.close)
        self._stop_watchdog()
        self._closed = True

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> LocalCluster:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    # -- building --------------------------------------------------------------------

    def _make_base_dir(self) -> None:
        if self._given_dir is None:
            self._base = Path(tempfile.mkdtemp(prefix="hacontrol-cluster-"))
            self._owns_dir = True
        else:
            base = self._given_dir.resolve()
            if base.exists() and not base.is_dir():
                raise ClusterError(f"{base} exists and is not a directory")
            if base.exists() and any(base.iterdir()):
                raise ClusterError(f"{base} is not empty")
            blocked = _unreachable_parent(base, self.owner)
            if blocked is not None:
                raise ClusterError(
                    f"the {self.owner.name!r} OS user, which runs the servers, cannot enter "
                    f"{blocked}; choose a directory it can reach (e.g. under /tmp)"
                )
            self._owns_dir = not base.exists()
            base.mkdir(parents=True, exist_ok=True)
            self._base = base
        # The servers write sockets here and own their data directories below it.
        self.owner.chown(self._base)
        os.chmod(self._base, 0o755 if self.keep else 0o700)

    def _ports(self) -> list[int]:
        if self.base_port is None:
            ports: list[int] = []
            while len(ports) < self.size:
                port = free_port()
                if port not in ports:
                    ports.append(port)
            return ports
        ports = [self.base_port + i for i in range(self.size)]
        busy = [p for p in ports if port_in_use(p)]
        if busy:
            raise ClusterError(f"port(s) {', '.join(map(str, busy))} on {HOST} already in use")
        return ports

    def _common_settings(self) -> dict[str, str]:
        conf = dict(DEFAULT_SETTINGS)
        conf["unix_socket_directories"] = str(self.base_dir)
        if self.sync and self.size > 1:
            # Every node lists every node: a node never waits for itself, so the same
            # setting keeps commits synchronous on whichever node is primary.
            conf["synchronous_standby_names"] = f"ANY 1 ({', '.join(self._nodes)})"
        conf.update(self.settings)
        return conf

    def _initdb(self, node: Node) -> None:
        self.owner.run(
            [
                self.pgbin.path("initdb"), "-D", str(node.data_dir), "-U", "postgres",
                "--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
            ],
            timeout=120,
            cwd=self.base_dir,
        )
        conf = "".join(f"{k} = {conf_quote(v)}\n" for k, v in self._common_settings().items())
        with (node.data_dir / "postgresql.conf").open("a") as f:
            f.write(f"\n# hacontrol test cluster\n{conf}include_if_exists = '{NODE_CONF}'\n")
        hba = (
            "# hacontrol test cluster: trusts loopback; never use outside tests\n"
            "local all all trust\n"
            "local replication all trust\n"
            f"host all all {HOST}/32 trust\n"
            f"host replication all {HOST}/32 trust\n"
        )
        if self.netlab is not None and self.netlab.network is not None:
            net = self.netlab.network
            hba += f"host all all {net} trust\nhost replication all {net} trust\n"
        (node.data_dir / "pg_hba.conf").write_text(hba)
        self._write_node_conf(node)

    def _write_node_conf(self, node: Node) -> None:
        path = node.data_dir / NODE_CONF
        text = f"port = {node.port}\ncluster_name = {conf_quote(node.name)}\n"
        if node.netns is not None:
            text += f"listen_addresses = {conf_quote(node.host)}\n"
        path.write_text(text)
        self.owner.chown(path)

    def _make_replica(self, node: Node) -> None:
        primary = self.nodes[0]
        self.owner.run(
            [
                self.pgbin.path("pg_basebackup"),
                "-d", f"{primary.replication_dsn} application_name={node.name}",
                "-D", str(node.data_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync",
                # Its member slot, as the controller keeps it (docs/slots.md): a
                # controller started on the cluster finds every replica set up.
                "-C", "-S", member_slot_name(node.name),
            ],
            timeout=120,
            cwd=self.base_dir,
        )
        self._write_node_conf(node)
        node.start()

    # -- teardown --------------------------------------------------------------------

    def _stop_all(self) -> None:
        base = self.base_dir
        postmasters = [p for p in (n.pid() for n in self.nodes) if p is not None]
        everything = list(dict.fromkeys([*postmasters, *processes.postgres_under(base)]))
        # Frozen processes must run to act on a signal; immediate shutdown also
        # removes each server's shared memory.
        processes.send(everything, signal.SIGCONT)
        processes.send(postmasters, signal.SIGQUIT)
        left = processes.wait_gone(everything, 10.0)
        stray = list(dict.fromkeys([*left, *processes.postgres_under(base)]))
        if stray:
            processes.send(stray, signal.SIGKILL)
            processes.wait_gone(stray, 10.0)
        for node in self.nodes:
            node._reap()
            node._frozen = []
            remove_stale_segment(node.data_dir)
        survivors = processes.postgres_under(base)
        if survivors:
            raise ClusterError(f"postgres processes survived teardown: {survivors}")

    def _start_watchdog(self) -> None:
        # If this process dies without running close() (SIGKILL, os._exit), the pipe
        # closes, `read` returns and the watchdog stops the servers and removes the
        # directory; after a normal close() the state file is gone and it just exits.
        state = self.base_dir / STATE_FILE
        script = 'read _ignored; [ -e "$1" ] && exec "$2" -m hacontrol.testing.reaper "$3"'
        self._watchdog = DeadManSwitch(script, str(state), sys.executable, str(self.base_dir))

    def _stop_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is not None:
            dog.release()

    def _record_pid(self, node: Node, pid: int) -> None:
        self.started_pids.add(pid)
        with contextlib.suppress(OSError):
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "harness_pid": os.getpid(),
            "keep": self.keep,
            "created_dir": self._owns_dir,
            "bindir": str(self.pgbin.bindir),
            "owner": self.owner.name,
            "sync": self.sync,
            "nodes": [
                {
                    "name": n.name,
                    "port": n.port,
                    "host": n.host,
                    "data_dir": str(n.data_dir),
                    "log": str(n.log_path),
                    "pid": n.pid(),
                    "dsn": n.dsn,
                }
                for n in self.nodes
            ],
            "multi_host_dsn": self.multi_host_dsn() if self._nodes else None,
        }
        path = self.base_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)

    # -- addresses and queries (shared ones in ClusterQueries) -------------------------

    def wait_streaming(
        self, replica: str, timeout: float = 10.0, upstream: str | None = None
    ) -> None:
        """Wait until ``replica``'s WAL receiver is streaming (from ``upstream`` when
        given); :class:`TimeoutError` otherwise."""
        node = self.node(replica)
        want_port = self.node(upstream).port if upstream is not None else None
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                rows = node.query("SELECT status, sender_port FROM pg_stat_wal_receiver")
                last = rows
                if (
                    rows
                    and rows[0][0] == "streaming"
                    and (want_port is None or rows[0][1] == want_port)
                ):
                    return
            except psycopg.Error as exc:
                last = exc
            time.sleep(0.02)
        raise TimeoutError(f"{replica} not streaming after {timeout:g} s (last: {last})")

    # -- controller configuration ----------------------------------------------------

    def config_toml(
        self,
        *,
        dsns: Mapping[str, str] | None = None,
        drivers: bool = False,
        **extra: str | int | float | bool,
    ) -> str:
        """Controller configuration text: ``extra`` top-level keys, then one
        ``[[nodes]]`` table per node. ``dsns`` replaces some nodes' DSNs (e.g. by a
        :class:`~hacontrol.testing.proxy.TcpProxy`'s). ``drivers`` adds a local
        ``[nodes.driver]`` per node (data directory, binaries, owner, log), so the
        controller can rejoin nodes and stop an old primary in a switchover; not for
        nodes in network namespaces, whose servers the local driver cannot start."""
        return controller_toml(self.nodes, dsns=dsns, drivers=drivers, extra=extra)


def _unreachable_parent(path: Path, owner: Owner) -> Path | None:
    """The first existing ancestor of ``path`` that ``owner`` may not search, if any."""
    if owner.is_current:
        return None
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == owner.uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == owner.gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return parent
    return None
