"""Network namespaces for fault tests: every node on its own address behind a bridge.

A :class:`NetLab` claims one private /24 that no route but the default covers
(checked with ``ip route``). The bridge lives in a "switch" namespace of its
own, so the host's firewall (e.g. Docker's FORWARD policy DROP, which
br_netfilter applies to bridged frames) never sees traffic between members and
nothing is added to the host's rules. The host joins the bridge through one
veth holding the first address of the /24 (the host side, where controller and
harness run); each member namespace joins through a veth of its own. IP
forwarding is not touched and no namespace has a default route, so no packet
can leave the machine.

Partitions are iptables DROP rules inside a member's namespace (silent, like a
cut cable): they vanish with the namespace. Everything the lab creates is
removed by :meth:`NetLab.close` (also from ``atexit``) and, should this process
die outright, by a watchdog process that runs ``python -m
hacontrol.testing.netns cleanup STATE`` when our end of its pipe closes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hacontrol.testing.deadman import DeadManSwitch

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
STATE_DIR = Path("/run")
# Candidate third octets of 10.200.X.0/24; the first one not routed and not
# claimed by another lab (its switch namespace exists) is used.
SUBNET_PREFIX = "10.200"
NS_IFNAME = "eth0"
BRIDGE = "br0"
PART_IN, PART_OUT = "hac-part-in", "hac-part-out"
NETEM_IN, NETEM_OUT = "hac-netem-in", "hac-netem-out"

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace, link or rule could not be created or removed."""


def _run(argv: Sequence[str], *, timeout: float = 15.0, stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def iptables_commands() -> tuple[str, str] | None:
    """The iptables and iptables-restore programs to use, or None when there are none."""
    for name in ("iptables", "iptables-nft", "iptables-legacy"):
        main, restore = shutil.which(name), shutil.which(f"{name}-restore")
        if main and restore:
            return main, restore
    return None


def unavailable_reason() -> str | None:
    """None when this machine can run the namespace harness, otherwise why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces, veth pairs and a bridge"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if iptables_commands() is None:
        return "iptables (iptables-nft or iptables-legacy) is not installed"
    probe = f"hacprobe{os.getpid()}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        veth = _run(["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name",
                     "p1"], check=False)
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
        bridge = _run(["ip", "-n", probe, "link", "add", "b0", "type", "bridge"], check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge: {bridge.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination some route or address already covers, except the default."""
    found: list[ipaddress.IPv4Network] = []
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for route in routes:
        dst = str(route.get("dst", ""))
        if dst in ("", "default", "0.0.0.0/0"):
            continue
        with contextlib.suppress(ValueError):
            found.append(ipaddress.IPv4Network(dst, strict=False))
    links = json.loads(_run(["ip", "-j", "-4", "addr"]).stdout or "[]")
    for link in links:
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                found.append(
                    ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                )
    return found


def free_subnets() -> Iterator[tuple[int, ipaddress.IPv4Network]]:
    """(octet, network) of every 10.200.X.0/24 that nothing routes yet."""
    taken = routed_networks()
    for octet in range(1, 255):
        net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{octet}.0/24")
        if not any(net.overlaps(t) for t in taken):
            yield octet, net


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the calling thread inside namespace ``name`` for the block (network
    namespaces are per thread, so other threads are unaffected). Sockets created
    inside stay in that namespace after the block."""
    with open("/proc/thread-self/ns/net", "rb") as home, open(NETNS_RUN_DIR / name, "rb") as ns:
        _setns(ns.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace ``name`` for good (for worker threads)."""
    with open(NETNS_RUN_DIR / name, "rb") as ns:
        _setns(ns.fileno())


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


@dataclass
class Namespace:
    """One member of a :class:`NetLab`: a namespace with one address on the bridge."""

    lab: NetLab
    label: str
    name: str
    address: str
    switch_port: str
    chains: bool = field(default=False)

    def exec_argv(self) -> list[str]:
        """Prefix that runs a program inside this namespace (root only)."""
        return ["ip", "netns", "exec", self.name]

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this namespace to completion."""
        return _run([*self.exec_argv(), *argv], stdin=stdin, check=check)

    def iptables_restore(self, rules: Sequence[str]) -> None:
        """Apply filter-table ``rules`` atomically, keeping the others."""
        self._ensure_chains()
        body = "*filter\n" + "".join(f"{r}\n" for r in rules) + "COMMIT\n"
        self.run([self.lab.iptables[1], "-w", "--noflush"], stdin=body)

    def _ensure_chains(self) -> None:
        if self.chains:
            return
        # Partition chains come first: a dropped packet never reaches the emulator.
        body = (
            "*filter\n"
            f":{PART_IN} - [0:0]\n:{PART_OUT} - [0:0]\n:{NETEM_IN} - [0:0]\n:{NETEM_OUT} - [0:0]\n"
            f"-A INPUT -j {PART_IN}\n-A INPUT -j {NETEM_IN}\n"
            f"-A OUTPUT -j {PART_OUT}\n-A OUTPUT -j {NETEM_OUT}\n"
            "COMMIT\n"
        )
        self.run([self.lab.iptables[1], "-w", "--noflush"], stdin=body)
        self.chains = True

    def rules(self) -> str:
        """The namespace's filter rules (``iptables -S``), for tests and reports."""
        return self.run([self.lab.iptables[0], "-w", "-S"]).stdout

    def partition(self, peers: Sequence[str] | None = None) -> None:
        """Drop every packet between this namespace and ``peers`` (addresses), or
        between it and everyone on the bridge when ``peers`` is None. Loopback
        stays open, so clients inside the namespace keep reaching the node."""
        if peers is None:
            rules = [
                f"-A {PART_IN} -i {NS_IFNAME} -j DROP",
                f"-A {PART_OUT} -o {NS_IFNAME} -j DROP",
            ]
        else:
            rules = []
            for peer in peers:
                rules += [f"-A {PART_IN} -s {peer}/32 -j DROP",
                          f"-A {PART_OUT} -d {peer}/32 -j DROP"]
        self.iptables_restore(rules)

    def heal(self) -> None:
        """Remove every partition rule of this namespace."""
        self.iptables_restore([f"-F {PART_IN}", f"-F {PART_OUT}"])


class NetLab:
    """A bridge on a private /24 and namespaces attached to it. Context manager."""

    def __init__(self, tag: str = "hac") -> None:
        self.tag = tag
        self.octet: int | None = None
        self.network: ipaddress.IPv4Network | None = None
        self.switch = ""
        self.host_veth = ""
        self.members: dict[str, Namespace] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._watchdog: DeadManSwitch | None = None
        tools = iptables_commands()
        self.iptables: tuple[str, str] = tools or ("iptables", "iptables-restore")

    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gateway(self) -> str:
        """The host's address on the bridge (where the controller runs)."""
        assert self.network is not None
        return str(self.network.network_address + 1)

    @property
    def state_path(self) -> Path:
        """Where the watchdog finds what to remove should this process die."""
        return STATE_DIR / f"hacontrol-netlab-{self.switch}.json"

    def _names(self) -> list[str]:
        return [m.name for m in self.members.values()] + ([self.switch] if self.switch else [])

    def start(self) -> NetLab:
        """Claim a free /24 and bring the switch namespace and the host link up."""
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsError(reason)
        atexit.register(self.close)
        for octet, net in free_subnets():
            switch = f"{self.tag}{octet}-sw"
            # Creating the switch namespace is the claim: a second lab gets "File exists".
            if _run(["ip", "netns", "add", switch], check=False).returncode:
                continue
            self.octet, self.network, self.switch = octet, net, switch
            self.host_veth = f"{self.tag}{octet}h"
            break
        else:
            raise NetnsError(f"no free {SUBNET_PREFIX}.X.0/24 subnet for a test bridge")
        try:
            self._write_state()
            self._start_watchdog()
            sw = ["ip", "-n", self.switch]
            _run([*sw, "link", "add", BRIDGE, "type", "bridge"])
            _run([*sw, "link", "set", BRIDGE, "up"])
            _run(["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", "up0",
                  "netns", self.switch])
            _run([*sw, "link", "set", "up0", "master", BRIDGE])
            _run([*sw, "link", "set", "up0", "up"])
            _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.host_veth])
            _run(["ip", "link", "set", self.host_veth, "up"])
        except BaseException:
            self.close()
            raise
        return self

    def add(self, label: str) -> Namespace:
        """A new namespace ``label`` with the next address on the bridge."""
        assert self.network is not None and self.octet is not None
        index = len(self.members)
        address = str(self.network.network_address + 10 + index)
        name = f"{self.tag}{self.octet}-{label}"
        port = f"v{index}"
        ns = Namespace(self, label, name, address, port)
        with self._lock:
            self.members[label] = ns
            self._write_state()
        sw = ["ip", "-n", self.switch]
        _run(["ip", "netns", "add", name])
        _run([*sw, "link", "add", port, "type", "veth", "peer", "name", NS_IFNAME,
              "netns", name])
        _run([*sw, "link", "set", port, "master", BRIDGE])
        _run([*sw, "link", "set", port, "up"])
        _run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", NS_IFNAME])
        _run(["ip", "-n", name, "link", "set", NS_IFNAME, "up"])
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        return ns

    def member(self, label: str) -> Namespace:
        """The namespace added as ``label``."""
        return self.members[label]

    def close(self) -> None:
        """Remove every namespace, veth and the bridge. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        try:
            if self.switch:
                remove(self._names(), [self.host_veth])
        finally:
            with contextlib.suppress(OSError):
                self.state_path.unlink()
            self._stop_watchdog()

    def leftovers(self) -> list[str]:
        """Names of this lab's namespaces and links that still exist (for tests)."""
        return leftovers(self._names(), [self.host_veth])

    # -- crash cleanup ---------------------------------------------------------------

    def _write_state(self) -> None:
        state = {
            "owner_pid": os.getpid(),
            "namespaces": self._names(),
            "veths": [self.host_veth],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state) + "\n")
        tmp.replace(self.state_path)

    def _start_watchdog(self) -> None:
        # When this process dies the pipe closes, `read` returns and the cleanup runs;
        # after close() the state file is gone and the watchdog just exits.
        script = 'read _ignored; [ -e "$1" ] && exec "$2" -m hacontrol.testing.netns cleanup "$1"'
        self._watchdog = DeadManSwitch(script, str(self.state_path), sys.executable)

    def _stop_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is not None:
            dog.release(wait_s=10)


def remove(namespaces: Sequence[str], veths: Sequence[str]) -> None:
    """Delete the namespaces (their links, bridge and rules go with them) and any
    host veth still there; things already gone are fine. Raises
    :class:`NetnsError` when something survives."""
    for name in namespaces:
        _run(["ip", "netns", "del", name], check=False)
    for veth in veths:
        _run(["ip", "link", "del", veth], check=False)
    left = leftovers(namespaces, veths)
    if left:
        raise NetnsError(f"left behind after cleanup: {', '.join(left)}")


def leftovers(namespaces: Sequence[str], veths: Sequence[str]) -> list[str]:
    """Which of the given namespaces and host links still exist."""
    existing = set(_run(["ip", "netns", "list"]).stdout.split())
    links = {str(link.get("ifname")) for link in
             json.loads(_run(["ip", "-j", "link"]).stdout or "[]")}
    return [f"netns {n}" for n in namespaces if n in existing] + [
        f"link {v}" for v in veths if v and v in links
    ]


def _cleanup(state_path: Path) -> int:
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return 0
    with contextlib.suppress(NetnsError):
        remove(list(state["namespaces"]), list(state["veths"]))
    with contextlib.suppress(OSError):
        state_path.unlink()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "cleanup":
        print("usage: python -m hacontrol.testing.netns cleanup STATE_FILE", file=sys.stderr)
        return 2
    return _cleanup(Path(argv[1]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
