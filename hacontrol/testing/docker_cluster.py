"""Dockerised PostgreSQL streaming-replication clusters for tests (testcontainers).

``DockerCluster(nodes=3)`` runs ``pg1`` (primary) and ``pg2`` ... (replicas cloned
by the node image's entrypoint) as containers of the ``hacontrol-node`` image on a
network it creates, and optionally the controller (``hacontrol`` image) on the same
network with its API. It has the interface of
:class:`~hacontrol.testing.local_cluster.LocalCluster` (DSNs, multi-host DSN,
``node(name).kill()/freeze()/thaw()/start()/stop()``, ``primary_name()``,
``wait_streaming()``, ``config_toml()``), so scenario code runs on both, plus
:meth:`DockerNode.partition` / :meth:`DockerNode.heal`, which disconnect a node
from the cluster network and connect it again.

Build the images first (``compose/build-images``): the harness never pulls from a
registry. Published ports are bound to 127.0.0.1. Every container and the network
are removed by ID in :meth:`DockerCluster.close`, by an ``atexit`` hook, and by a
watchdog process if the harness is killed outright.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, cast

import psycopg
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient
from testcontainers.core.network import Network

from hacontrol.testing.cluster_queries import (
    ClusterError,
    ClusterQueries,
    QueryableNode,
)
from hacontrol.testing.deadman import DeadManSwitch
from hacontrol.testing.docker_members import API_PORT as API_PORT
from hacontrol.testing.docker_members import PG_PORT as PG_PORT
from hacontrol.testing.docker_members import DockerController as DockerController
from hacontrol.testing.docker_members import DockerNode as DockerNode
from hacontrol.testing.local_node import HOST, free_port

# Ryuk (testcontainers' reaper) is an image from Docker Hub, which may be out of
# reach; this harness removes what it creates itself (TESTCONTAINERS_RYUK_DISABLED).
testcontainers_config.ryuk_disabled = True

NODE_IMAGE = os.environ.get("HACONTROL_NODE_IMAGE", "hacontrol-node:dev")
CONTROLLER_IMAGE = os.environ.get("HACONTROL_IMAGE", "hacontrol:dev")
CONFIG_PATH = "/etc/hacontrol/hacontrol.toml"
JOURNAL_PATH = "/var/lib/hacontrol/journal.jsonl"

# Test clusters: the same trade-offs as LocalCluster (no fsync: faults are process
# deaths, never host crashes).
DEFAULT_SETTINGS: dict[str, str] = {"fsync": "off", "log_checkpoints": "off"}


def docker_unavailable_reason(timeout: float = 3.0) -> str | None:
    """Why no Docker daemon can be used from here, or None when one answers a ping.
    Cheap when there is none: no socket means no connection attempt."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not os.path.exists("/var/run/docker.sock"):
        return "no Docker daemon: /var/run/docker.sock does not exist and DOCKER_HOST is unset"
    try:
        client = DockerClient(timeout=timeout)
        client.client.ping()
        client.client.close()
    except Exception as exc:  # any failure means "not usable", with its reason
        return f"Docker daemon not reachable ({host or 'unix:///var/run/docker.sock'}): {exc}"
    return None


def missing_images(images: Iterable[str] = (NODE_IMAGE, CONTROLLER_IMAGE)) -> list[str]:
    """The images among ``images`` that the daemon does not have."""
    api = DockerClient().client.api
    missing = []
    for image in images:
        try:
            api.inspect_image(image)
        except Exception:
            missing.append(image)
    return missing



def _published(port: int) -> dict[str, int | None]:
    # docker-py takes (host_ip, host_port) for a binding; testcontainers' own
    # annotation only allows a port, which would bind every interface.
    return cast("dict[str, int | None]", {f"{PG_PORT}/tcp": (HOST, port)})


class DockerCluster(ClusterQueries):
    """A primary (``pg1``) and ``nodes - 1`` streaming replicas in containers, and
    with ``controller=True`` the controller in a container of its own.

    Use as a context manager or call :meth:`start` and :meth:`close`. ``settings``
    are extra PostgreSQL settings (``-c`` options) for every node;
    ``controller_config`` are top-level keys or tables of the controller's
    configuration (e.g. ``{"timing": {"cooldown": 0}}``).
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        controller: bool = False,
        settings: Mapping[str, str] | None = None,
        controller_config: Mapping[str, Any] | None = None,
        node_image: str = NODE_IMAGE,
        controller_image: str = CONTROLLER_IMAGE,
        startup_timeout: float = 120.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = nodes
        self.with_controller = controller
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.controller_config = dict(controller_config or {})
        self.node_image = node_image
        self.controller_image = controller_image
        self.startup_timeout = startup_timeout
        self._nodes: dict[str, DockerNode] = {}
        self._network: Network | None = None
        self._controller: DockerController | None = None
        self._watchdog: DeadManSwitch | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.startup_seconds: float | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def nodes(self) -> list[DockerNode]:
        """Every node, pg1 first."""
        return list(self._nodes.values())

    def node(self, name: str) -> DockerNode:
        """The node called ``name``."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r}; nodes: {', '.join(self._nodes)}") from None

    @property
    def controller(self) -> DockerController:
        """The controller container (``controller=True``)."""
        if self._controller is None:
            raise ClusterError("this cluster was started without a controller")
        return self._controller

    @property
    def network_id(self) -> str:
        """ID of the network the cluster's containers share."""
        if self._network is None or self._network.id is None:
            raise ClusterError("the cluster is not started")
        return self._network.id

    def _network_api(self) -> Any:
        return DockerClient().client.api

    def start(self) -> DockerCluster:
        """Create the network and every container, wait until every replica
        streams (and the controller has completed a round); returns self. On failure
        everything created so far is removed before the error propagates."""
        reason = docker_unavailable_reason()
        if reason is not None:
            raise ClusterError(reason)
        images = [self.node_image] + ([self.controller_image] if self.with_controller else [])
        missing = missing_images(images)
        if missing:
            # Never pull: the images come from compose/build-images.
            raise ClusterError(
                f"image(s) {', '.join(missing)} not present; run compose/build-images"
            )
        t0 = time.monotonic()
        atexit.register(self.close)
        try:
            self._start_watchdog()
            self._network = Network().create()
            self._watch(f"n {self.network_id}")
            names = [f"pg{i + 1}" for i in range(self.size)]
            ports = self._free_ports(self.size + 1)
            self._nodes = {n: DockerNode(self, n, p) for n, p in zip(names, ports, strict=False)}
            primary = self.nodes[0]
            self._run_node(primary, upstream=None)
            primary.wait_ready(self.startup_timeout)
            replicas = self.nodes[1:]
            for node in replicas:
                self._run_node(node, upstream=primary.name)
            if replicas:
                with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
                    list(pool.map(lambda n: self._replica_ready(n, primary), replicas))
            if self.with_controller:
                self._run_controller(ports[-1])
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _replica_ready(self, node: DockerNode, primary: DockerNode) -> None:
        node.wait_ready(self.startup_timeout)
        self.wait_streaming(node.name, timeout=30, upstream=primary.name)

    def _free_ports(self, count: int) -> list[int]:
        ports: list[int] = []
        while len(ports) < count:
            port = free_port()
            if port not in ports:
                ports.append(port)
        return ports

    def _run_node(self, node: DockerNode, upstream: str | None) -> None:
        command = [arg for k, v in self.settings.items() for arg in ("-c", f"{k}={v}")]
        container = (
            DockerContainer(self.node_image)
            .with_network(self._require_network())
            .with_network_aliases(node.name)
            .with_env("NODE_NAME", node.name)
            .with_kwargs(hostname=node.name)
            .with_command(command)
        )
        if upstream is not None:
            container.with_env("PRIMARY_HOST", upstream)
        container.ports = _published(node.port)
        node.container = container
        container.start()
        self._watch(f"c {node.id}")

    def _run_controller(self, api_port: int) -> None:
        ctl = DockerController(self, api_port)
        container = (
            DockerContainer(self.controller_image)
            .with_network(self._require_network())
            .with_network_aliases("controller")
            .with_command(["run", "--config", CONFIG_PATH, "--json-logs"])
            .with_copy_into_container(self.controller_toml().encode(), CONFIG_PATH, 0o644)
        )
        container.ports = cast("dict[str, int | None]", {f"{API_PORT}/tcp": (HOST, api_port)})
        ctl.container = container
        self._controller = ctl
        container.start()
        self._watch(f"c {ctl.id}")
        ctl.wait_ready()

    def _require_network(self) -> Network:
        if self._network is None:
            raise ClusterError("the cluster is not started")
        return self._network

    def close(self) -> None:
        """Remove every container (by ID, with its volumes) and the network;
        idempotent. Raises :class:`ClusterError` if something could not be removed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        api = DockerClient().client.api
        problems: list[str] = []
        containers = [n.container for n in self.nodes]
        if self._controller is not None:
            containers.append(self._controller.container)
        for container in containers:
            if container is None or container._container is None:
                continue
            cid = container._container.id
            try:
                api.remove_container(cid, force=True, v=True)
            except Exception as exc:
                if "No such container" not in str(exc):
                    problems.append(f"container {cid[:12]}: {exc}")
        if self._network is not None and self._network._network is not None:
            try:
                api.remove_network(self._network._network.id)
            except Exception as exc:
                if "No such network" not in str(exc) and "not found" not in str(exc):
                    problems.append(f"network {self._network._network.id[:12]}: {exc}")
        self._stop_watchdog()
        if problems:
            raise ClusterError("cleanup failed: " + "; ".join(problems))

    # A harness killed outright (SIGKILL, os._exit) runs no atexit hook: the
    # watchdog holds the IDs, sees its stdin close, and removes them by ID.
    _WATCHDOG = (
        'cs=""; ns=""\n'
        'while read -r kind id; do\n'
        '  case "$kind" in done) exit 0;; c) cs="$cs $id";; n) ns="$ns $id";; esac\n'
        'done\n'
        '[ -n "$cs" ] && "$1" rm -f -v $cs >/dev/null 2>&1\n'
        '[ -n "$ns" ] && "$1" network rm $ns >/dev/null 2>&1\n'
        'exit 0\n'
    )

    def _start_watchdog(self) -> None:
        cli = shutil.which("docker")
        if cli is None:
            return
        self._watchdog = DeadManSwitch(self._WATCHDOG, cli)

    def _watch(self, line: str) -> None:
        if self._watchdog is not None:
            self._watchdog.say(line)

    def _stop_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is not None:
            dog.release(last="done")

    def __enter__(self) -> DockerCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> DockerCluster:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    # -- addresses and queries (shared ones in ClusterQueries) -------------------------

    _poll_s = 0.05

    def _listed(self, node: QueryableNode) -> bool:
        # A partitioned container is not asked: from the host it cannot answer.
        return node.is_running() and not cast(DockerNode, node).partitioned

    def wait_streaming(
        self, replica: str, timeout: float = 10.0, upstream: str | None = None
    ) -> None:
        """Wait until ``replica``'s WAL receiver is streaming (from ``upstream`` when
        given); :class:`TimeoutError` otherwise."""
        node = self.node(replica)
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                rows = node.query("SELECT status, sender_host FROM pg_stat_wal_receiver")
                last = rows
                if rows and rows[0][0] == "streaming" and upstream in (None, rows[0][1]):
                    return
            except psycopg.Error as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"{replica} not streaming after {timeout:g} s (last: {last})")

    # -- controller configuration ----------------------------------------------------

    def config_toml(
        self, *, dsns: Mapping[str, str] | None = None, **extra: str | int | float | bool
    ) -> str:
        """Controller configuration text for a controller on the host (published
        ports): ``extra`` top-level keys, then one ``[[nodes]]`` table per node.
        Replicas reach each other by name on the cluster network."""
        return _config_text(
            [(n.name, (dsns or {}).get(n.name, n.dsn), n.replication_dsn) for n in self.nodes],
            extra,
        )

    def controller_toml(self) -> str:
        """The configuration of the controller container (DSNs on the cluster
        network, API on port 8008 of the container, plus ``controller_config``)."""
        data: dict[str, Any] = {
            "journal": JOURNAL_PATH,
            "api": {"listen": f"0.0.0.0:{API_PORT}"},
        }
        for key, value in self.controller_config.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return _config_text(
            [(n.name, n.network_dsn, n.replication_dsn) for n in self.nodes], data
        )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _config_text(nodes: Sequence[tuple[str, str, str]], extra: Mapping[str, Any]) -> str:
    scalars = {k: v for k, v in extra.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in extra.items() if isinstance(v, Mapping)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    for name, dsn, replication_dsn in nodes:
        lines += [
            "",
            "[[nodes]]",
            f"name = {_toml_value(name)}",
            f"dsn = {_toml_value(dsn)}",
            f"replication_dsn = {_toml_value(replication_dsn)}",
        ]
    return "\n".join(lines) + "\n"
