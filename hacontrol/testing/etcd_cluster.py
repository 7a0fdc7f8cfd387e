"""Real etcd clusters on this machine, for tests: members on 127.0.0.1 ports, each
started and stopped by its PID, with single members killed, stopped and started again.

Uses the ``etcd`` binary (Debian's ``etcd-server``; ``$HACONTROL_ETCD`` names another)::

    with EtcdCluster(3) as etcd:
        etcd.endpoints                  # ["http://127.0.0.1:P1", ...]
        etcd.kill("e1")                 # SIGKILL by PID: the others keep a quorum
        etcd.start_member("e1")         # back, with its data directory
        etcd.put("k", "v"); etcd.get("k")   # through the members' v3 JSON gateway

Every member listens on loopback only; nothing is left running or on disk after
``close()`` (also on failure, as a context manager).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from hacontrol.testing.local_node import HOST, free_port
from hacontrol.testing.processes import ChildProcess

__all__ = ["EtcdCluster", "EtcdError", "EtcdMember", "find_etcd"]

# A member of a fresh cluster answers /health within about 2 s on a quiet machine.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class EtcdError(RuntimeError):
    """The etcd binary is missing, or a cluster did not come up."""


def find_etcd() -> str:
    """The etcd server binary: ``$HACONTROL_ETCD``, else ``etcd`` on the PATH."""
    named = os.environ.get("HACONTROL_ETCD")
    found = named or shutil.which("etcd")
    if not found or not os.access(found, os.X_OK):
        raise EtcdError(
            f"no etcd server binary ({'HACONTROL_ETCD=' + named if named else 'etcd on the PATH'});"
            " install it with: apt-get install -y etcd-server"
        )
    return found


@dataclass
class EtcdMember:
    """One etcd server of the cluster."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: ChildProcess

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def pid(self) -> int | None:
        """The running server's PID (None when it is not running)."""
        return self.process.pid

    def healthy(self, timeout: float = 1.0) -> bool:
        """Whether the member answers ``/health`` as part of a cluster with a leader."""
        try:
            answer = _request(f"{self.client_url}/health", None, timeout)
        except (OSError, ValueError):
            return False
        return str(answer.get("health")) == "true"


class EtcdCluster:
    """A real ``size``-member etcd cluster on loopback ports."""

    def __init__(self, size: int = 3, base_dir: Path | None = None) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.binary = find_etcd()
        self._own_dir = base_dir is None
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="hacontrol-etcd-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.token = f"hacontrol-{os.getpid()}-{time.monotonic_ns()}"
        self.members: list[EtcdMember] = []
        for i in range(1, size + 1):
            name = f"e{i}"
            data = self.base_dir / name
            member = EtcdMember(name, free_port(), free_port(), data,
                                ChildProcess([], self.base_dir / f"{name}.log",
                                             stop_timeout=STOP_TIMEOUT_S))
            self.members.append(member)

    # -- life cycle

    def start(self) -> Self:
        """Start every member and wait until each reports a healthy cluster."""
        for member in self.members:
            self._launch(member, state="new")
        self.wait_healthy(self.members)
        return self

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every member by PID and remove what the cluster wrote."""
        for member in self.members:
            member.process.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- members

    def member(self, name: str) -> EtcdMember:
        """The member called ``name`` (``e1``, ``e2``, ...)."""
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"no etcd member {name!r}; members: {[m.name for m in self.members]}")

    @property
    def endpoints(self) -> list[str]:
        """Every member's client URL."""
        return [m.client_url for m in self.members]

    def kill(self, name: str) -> None:
        """SIGKILL one member by its PID (a crashed host)."""
        self.member(name).process.kill()

    def stop_member(self, name: str) -> None:
        """Stop one member cleanly (SIGTERM by its PID)."""
        self.member(name).process.stop()

    def start_member(self, name: str, timeout: float = START_TIMEOUT_S) -> None:
        """Start a stopped or killed member again, with its data directory, and wait
        until it is healthy (it needs a quorum of the others to be)."""
        member = self.member(name)
        if member.process.alive():
            return
        self._launch(member, state="existing")
        self.wait_healthy([member], timeout)

    def wait_healthy(self, members: list[EtcdMember], timeout: float = START_TIMEOUT_S) -> None:
        """Wait until every one of ``members`` is healthy; EtcdError with its log if not."""
        deadline = time.monotonic() + timeout
        waiting = list(members)
        while waiting and time.monotonic() < deadline:
            waiting = [m for m in waiting if not m.healthy()]
            dead = [m for m in waiting if not m.process.alive()]
            if dead:
                raise EtcdError(f"etcd member {dead[0].name} exited:\n"
                                f"{dead[0].process.output_tail()}")
            if waiting:
                time.sleep(0.1)
        if waiting:
            raise EtcdError(f"etcd member {waiting[0].name} not healthy within {timeout:g} s:\n"
                            f"{waiting[0].process.output_tail()}")

    def _launch(self, member: EtcdMember, *, state: str) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        member.process.argv = [
            self.binary,
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            # Tests kill members on purpose: elect a new leader quickly.
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
        ]
        member.process.start()

    # -- a little client, for the harness's own checks

    def put(self, key: str, value: str, timeout: float = 2.0) -> int:
        """Put ``key`` through the first healthy member; the revision it got."""
        answer = self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, timeout)
        return int(answer.get("header", {}).get("revision", 0))

    def get(self, key: str, timeout: float = 2.0) -> str | None:
        """The value of ``key`` (None: no such key), read linearizably."""
        answer = self._call("/v3/kv/range", {"key": _b64(key)}, timeout)
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def _call(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        errors: list[str] = []
        for member in self.members:
            if not member.process.alive():
                continue
            try:
                return _request(member.client_url + path, body, timeout)
            except (OSError, ValueError) as exc:
                errors.append(f"{member.name}: {exc}")
        raise EtcdError("no etcd member answered: " + "; ".join(errors or ["none running"]))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _request(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """One JSON request to etcd, never through an environment proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with opener.open(request, timeout=timeout) as resp:
            answer = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise ValueError(f"HTTP {exc.code}: {exc.read()[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ValueError(f"unexpected answer: {answer!r}"[:200])
    return answer
