"""The namespace harness itself: it cleans up after itself, partitions cut exactly
the links they name, and the link emulator delays and drops what it should."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from hacontrol.testing import LocalCluster
from hacontrol.testing.netem import Impairment, LinkEmulator
from hacontrol.testing.netns import Namespace, NetLab, in_netns, routed_networks

pytestmark = [pytest.mark.netns, pytest.mark.integration]

PORT = 7777


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {str(link["ifname"]) for link in json.loads(out.stdout)}


class Listener:
    """A TCP server inside a namespace that accepts and closes connections."""

    def __init__(self, ns: Namespace) -> None:
        with in_netns(ns.name):
            self.sock = socket.create_server(("0.0.0.0", PORT), backlog=64)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def connect_time(address: str, netns: str | None = None, timeout: float = 1.0) -> float | None:
    """Seconds a TCP connect to ``address`` takes from ``netns`` (host when None);
    None when it does not complete within ``timeout``."""

    def attempt() -> float | None:
        started = time.monotonic()
        try:
            socket.create_connection((address, PORT), timeout=timeout).close()
        except OSError:
            return None
        return time.monotonic() - started

    if netns is None:
        return attempt()
    with in_netns(netns):
        return attempt()


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with NetLab() as lab:
        yield lab


def test_lab_removes_everything_it_created() -> None:
    before_ns, before_links = _namespaces(), _links()
    taken = routed_networks()
    with pytest.raises(RuntimeError, match="boom"), NetLab() as lab:
        members = [lab.add("a"), lab.add("b")]
        assert lab.network is not None
        # The /24 was not routed before the lab claimed it.
        assert not any(lab.network.overlaps(net) for net in taken)
        assert {m.name for m in members} | {lab.switch} <= _namespaces()
        assert lab.host_veth in _links()
        assert lab.state_path.exists()
        raise RuntimeError("boom")  # cleanup must happen on failure too
    assert lab.leftovers() == []
    assert _namespaces() == before_ns
    assert _links() == before_links
    assert not lab.state_path.exists()


def test_watchdog_cleans_up_after_a_killed_owner() -> None:
    code = (
        "import sys, time\n"
        "from hacontrol.testing.netns import NetLab\n"
        "lab = NetLab().start(); lab.add('a')\n"
        "print(lab.switch, lab.member('a').name, lab.host_veth, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        names = proc.stdout.readline().split()
        assert len(names) == 3 and set(names[:2]) <= _namespaces()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (set(names[:2]) & _namespaces()
                                           or names[2] in _links()):
        time.sleep(0.1)
    assert not set(names[:2]) & _namespaces()
    assert names[2] not in _links()


def test_partitions_cut_only_the_named_links(lab: NetLab) -> None:
    a, b, cli = lab.add("a"), lab.add("b"), lab.add("cli")
    server = Listener(a)
    try:
        assert connect_time(a.address) is not None
        a.partition([lab.gateway])  # from the host (controller) only
        assert connect_time(a.address, timeout=0.5) is None
        assert connect_time(a.address, cli.name) is not None
        assert connect_time(a.address, b.name) is not None
        a.partition()  # from everyone on the bridge
        assert connect_time(a.address, cli.name, timeout=0.5) is None
        assert connect_time(a.address, b.name, timeout=0.5) is None
        assert connect_time(a.address, a.name) is not None  # clients inside still reach it
        a.heal()
        assert connect_time(a.address) is not None
        assert connect_time(a.address, cli.name) is not None
        assert "DROP" not in a.rules()
    finally:
        server.close()


def test_link_emulator_delays_and_drops_only_the_chosen_peer(lab: NetLab) -> None:
    a, cli = lab.add("a"), lab.add("cli")
    server = Listener(a)
    try:
        with LinkEmulator(seed=7) as emulator:
            emulator.apply(a, lab.gateway, Impairment(delay=0.2, jitter=0.05))
            host = [connect_time(a.address) for _ in range(5)]
            assert all(t is not None and 0.14 <= t <= 0.4 for t in host), host
            other = connect_time(a.address, cli.name)
            assert other is not None and other < 0.1
            emulator.apply(a, lab.gateway, Impairment(loss=1.0))
            assert connect_time(a.address, timeout=0.5) is None
            seen, dropped = emulator.stats()["a"]
            assert seen >= 6 and dropped >= 1
        assert "NFQUEUE" not in a.rules()
        fast = connect_time(a.address)
        assert fast is not None and fast < 0.1
    finally:
        server.close()


def test_cluster_nodes_listen_in_their_own_namespaces() -> None:
    with LocalCluster(nodes=2, netns=True) as cluster:
        lab = cluster.netlab
        assert lab is not None and lab.network is not None
        for node in cluster.nodes:
            assert node.netns is not None
            addr = node.query("SELECT inet_server_addr()::text")[0][0]
            assert addr.split("/")[0] == node.host
            assert ipaddress.ip_address(node.host) in lab.network
        cluster.wait_streaming("pg2", timeout=10, upstream="pg1")
        pids = [p for n in cluster.nodes for p in n.all_pids()]
        names = [m.name for m in lab.members.values()]
    assert pids and not [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert lab.leftovers() == [] and not set(names) & _namespaces()
