"""The members of a :class:`~hacontrol.testing.docker_cluster.DockerCluster`: a
PostgreSQL container (:class:`DockerNode`: its state and the faults done to it) and
the controller container (:class:`DockerController`, reached through its API)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Protocol, cast

import psycopg
from testcontainers.core.container import DockerContainer

from hacontrol.testing.cluster_queries import ClusterError, NodeQueries
from hacontrol.testing.local_node import HOST

PG_PORT = 5432
API_PORT = 8008


class ClusterNetwork(Protocol):
    """What a member needs of its cluster: the cluster network."""

    @property
    def network_id(self) -> str:
        """The Docker network's ID."""

    def _network_api(self) -> Any:
        """The Docker client's network API."""


class DockerNode(NodeQueries):
    """One PostgreSQL container of a :class:`DockerCluster`."""

    def __init__(self, cluster: ClusterNetwork, name: str, port: int) -> None:
        self.cluster = cluster
        self.name = name
        # Reached from the host through its published port on the loopback.
        self.host = HOST
        self.port = port
        self.container: DockerContainer | None = None
        self._frozen = False
        self._partitioned = False

    def __repr__(self) -> str:
        return f"DockerNode({self.name!r}, port={self.port})"

    # -- addresses -------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """DSN of this node from the host (its published port on 127.0.0.1)."""
        return f"host={HOST} port={self.port} user=postgres dbname=postgres"

    @property
    def network_dsn(self) -> str:
        """DSN of this node from a container on the cluster network."""
        return f"host={self.name} port={PG_PORT} user=postgres dbname=postgres"

    @property
    def replication_dsn(self) -> str:
        """How replicas on the cluster network reach this node."""
        return f"host={self.name} port={PG_PORT} user=postgres"

    @property
    def id(self) -> str:
        """The container's ID."""
        return self._wrapped().id  # type: ignore[no-any-return]

    def _wrapped(self) -> Any:
        if self.container is None:
            raise ClusterError(f"{self.name} has no container")
        return self.container.get_wrapped_container()

    # -- container state -------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        wrapped = self._wrapped()
        wrapped.reload()
        return cast("dict[str, Any]", wrapped.attrs["State"])

    def pid(self) -> int | None:
        """The host PID of the container's main process (the postmaster), or None."""
        if self.container is None:
            return None
        state = self._state()
        return int(state["Pid"]) if state.get("Running") and state.get("Pid") else None

    def is_running(self) -> bool:
        """True while the container runs (a paused one counts as running)."""
        return self.pid() is not None

    @property
    def frozen(self) -> bool:
        """True between :meth:`freeze` and :meth:`thaw`."""
        return self._frozen

    @property
    def partitioned(self) -> bool:
        """True between :meth:`partition` and :meth:`heal`."""
        return self._partitioned

    # -- faults ----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> int:
        """Start the (stopped or killed) container and wait until the server accepts
        connections; returns the postmaster's host PID."""
        if self.is_running():
            raise ClusterError(f"{self.name} is already running")
        self._wrapped().start()
        self.wait_ready(timeout)
        pid = self.pid()
        assert pid is not None
        return pid

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut the server down: ``fast`` (SIGINT, ``docker stop``), ``smart``
        (SIGTERM) or ``immediate`` (SIGQUIT); wait until the container has exited."""
        signals = {"smart": "SIGTERM", "fast": "SIGINT", "immediate": "SIGQUIT"}
        if mode not in signals:
            raise ValueError(f"unknown stop mode {mode!r}; use one of {sorted(signals)}")
        if self._frozen:
            self.thaw()
        if not self.is_running():
            return
        wrapped = self._wrapped()
        wrapped.kill(signal=signals[mode])
        try:
            wrapped.wait(timeout=timeout)
        except Exception as exc:
            raise ClusterError(f"{self.name} did not stop ({mode}) within {timeout:g} s") from exc

    def kill(self) -> list[int]:
        """``docker kill`` (SIGKILL to every process of the container, as a host
        death); returns the postmaster's host PID ([] when it was not running)."""
        pid = self.pid()
        if pid is None:
            return []
        if self._frozen:
            # A paused container cannot be killed until it is unpaused.
            self.thaw()
        wrapped = self._wrapped()
        wrapped.kill()
        wrapped.wait(timeout=30)
        return [pid]

    def freeze(self) -> list[int]:
        """``docker pause`` (every process frozen; the kernel still accepts TCP
        connections that are never answered); returns the postmaster's host PID."""
        pid = self.pid()
        if pid is None:
            raise ClusterError(f"{self.name} is not running")
        self._wrapped().pause()
        self._frozen = True
        return [pid]

    def thaw(self) -> None:
        """``docker unpause`` what :meth:`freeze` paused."""
        if self._frozen:
            self._frozen = False
            self._wrapped().unpause()

    def partition(self) -> None:
        """Disconnect the node from the cluster network: no other node and no
        controller container reaches it, nor it them; its published port is
        unreachable from the host too."""
        if self._partitioned:
            return
        self.cluster._network_api().disconnect_container_from_network(
            self.id, self.cluster.network_id, force=True
        )
        self._partitioned = True

    def heal(self) -> None:
        """Connect the node to the cluster network again, under its name."""
        if not self._partitioned:
            return
        self.cluster._network_api().connect_container_to_network(
            self.id, self.cluster.network_id, aliases=[self.name]
        )
        self._partitioned = False

    # -- SQL (connect, query, is_primary, replay_lsn in NodeQueries) ------------------

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the server answers a query; fails at once if the container exits."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            state = self._state()
            if not state.get("Running"):
                raise ClusterError(
                    f"{self.name} exited with {state.get('ExitCode')}:\n{self.log_tail()}"
                )
            try:
                self.query("SELECT 1")
                return
            except psycopg.Error as exc:
                last = exc
            time.sleep(0.1)
        raise ClusterError(
            f"{self.name} did not accept connections within {timeout:g} s ({last}):\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the container's output (the server log)."""
        try:
            raw = self._wrapped().logs(tail=lines)
        except Exception as exc:
            return f"(no log: {exc})"
        return bytes(raw).decode(errors="replace").rstrip()


class DockerController:
    """The controller container of a :class:`DockerCluster`, reached through its API."""

    def __init__(self, cluster: ClusterNetwork, api_port: int) -> None:
        self.cluster = cluster
        self.api_port = api_port
        self.container: DockerContainer | None = None

    @property
    def api_url(self) -> str:
        """Base URL of the controller's HTTP API on 127.0.0.1."""
        return f"http://{HOST}:{self.api_port}"

    @property
    def id(self) -> str:
        """The container's ID."""
        if self.container is None:
            raise ClusterError("the controller has no container")
        return self.container.get_wrapped_container().id  # type: ignore[no-any-return]

    def _wrapped(self) -> Any:
        if self.container is None:
            raise ClusterError("the controller has no container")
        return self.container.get_wrapped_container()

    def get(self, path: str, timeout: float = 3.0) -> Any:
        """GET ``path`` from the API and decode its JSON (also for 4xx/5xx answers)."""
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")

    def status(self) -> dict[str, Any]:
        """``GET /status``."""
        return cast("dict[str, Any]", self.get("/status"))

    def primary(self) -> str | None:
        """The primary the controller believes in (None when it has none or cannot
        be asked)."""
        try:
            return cast("str | None", self.status().get("primary"))
        except (OSError, ValueError):
            return None

    def rounds(self) -> int:
        """Completed probe rounds (0 when the API does not answer)."""
        try:
            return int(self.get("/health").get("rounds", 0))
        except (OSError, ValueError):
            return 0

    def journal(self) -> list[dict[str, Any]]:
        """Every journal record so far (``GET /history``)."""
        return cast("list[dict[str, Any]]", self.get("/history?limit=10000")["events"])

    def promotions(self) -> list[str]:
        """Nodes a Promote action was started for, in order."""
        return [
            r["node"] for r in self.journal()
            if r.get("kind") == "action_started" and r.get("action") == "Promote"
        ]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the API answers ``/health`` with at least one completed round."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wrapped = self._wrapped()
            wrapped.reload()
            if not wrapped.attrs["State"].get("Running"):
                raise ClusterError(f"the controller exited:\n{self.log_tail()}")
            if self.rounds() > 0:
                return
            time.sleep(0.1)
        raise ClusterError(f"the controller API did not answer within {timeout:g} s:\n"
                           f"{self.log_tail()}")

    def kill(self) -> None:
        """``docker kill`` the controller (SIGKILL)."""
        wrapped = self._wrapped()
        wrapped.kill()
        wrapped.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> None:
        """``docker stop`` (SIGTERM, then SIGKILL after ``timeout``)."""
        self._wrapped().stop(timeout=int(timeout))

    def start(self, timeout: float = 30.0) -> None:
        """Start the stopped container (journal and configuration kept) and wait
        until it works."""
        self._wrapped().start()
        self.wait_ready(timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """``docker restart``: stop, start, wait until it works."""
        self._wrapped().restart(timeout=10)
        self.wait_ready(timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the controller's output."""
        try:
            raw = self._wrapped().logs(tail=lines)
        except Exception as exc:
            return f"(no log: {exc})"
        return bytes(raw).decode(errors="replace").rstrip()

