"""The controller faults of the matrix: two controllers on a real etcd, and the leader
killed, frozen or cut off from etcd while the primary dies.

The etcd cluster (3 members) and both controllers run on the host side, like the
single controller of the other faults; the first controller (``ctl-a``, the trial's
own journal and configuration) is started first and leads, the second (``ctl-b``,
``journal-b.jsonl``) stands by. ``ctl-a`` reaches etcd through one
:class:`~hacontrol.testing.proxy.TcpProxy` per member, so that it alone can be cut
off. Every process and proxy is stopped by the trial's exit stack.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hacontrol.testing.etcd_cluster import EtcdCluster
from hacontrol.testing.processes import ControllerProcess
from hacontrol.testing.proxy import TcpProxy

if TYPE_CHECKING:
    from hacontrol.testing.fault_watch import TrialWatch
    from hacontrol.testing.local_cluster import LocalCluster

__all__ = [
    "CONTROLLER_FAULTS",
    "ControllerPair",
    "inject_controller_fault",
    "standby_following",
    "wait_leading",
]

# The leader lease of these trials: short, so a takeover fits the trial's bounds.
TTL_S = 3.0
CONTROLLER_FAULTS = ("leader-kill", "leader-freeze", "leader-cut-etcd")


class ControllerPair:
    """etcd, its proxies for ``ctl-a``, and the standby ``ctl-b``."""

    def __init__(self, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.etcd = stack.enter_context(EtcdCluster(3, base_dir=workdir / "etcd"))
        self.proxies = [stack.enter_context(TcpProxy(int(e.rsplit(":", 1)[1])))
                        for e in self.etcd.endpoints]
        self.journal_b = workdir / "journal-b.jsonl"
        self.journal_b.unlink(missing_ok=True)
        self.config_b = workdir / "hacontrol-b.toml"
        self.standby: ControllerProcess | None = None
        self._stack = stack
        self._workdir = workdir

    def dcs_table(self, name: str) -> dict[str, Any]:
        """The ``[dcs]`` table of controller ``name``."""
        endpoints = (
            [f"http://127.0.0.1:{p.port}" for p in self.proxies] if name == "ctl-a"
            else self.etcd.endpoints
        )
        return {"endpoints": endpoints, "scope": "chaos", "name": name, "ttl": TTL_S}

    def start_standby(self, config_a: str, journal_a: Path) -> ControllerProcess:
        """``ctl-b``: ``ctl-a``'s configuration with its own name, journal and etcd path."""
        text = config_a.replace(f'"{journal_a}"', f'"{self.journal_b}"')
        text = text.replace('name = "ctl-a"', 'name = "ctl-b"')
        for proxy, direct in zip(self.proxies, self.etcd.endpoints, strict=True):
            text = text.replace(f"http://127.0.0.1:{proxy.port}", direct)
        self.config_b.write_text(text)
        standby = ControllerProcess(self.config_b, self._workdir / "controller-b.log",
                                    stop_timeout=15)
        self._stack.callback(standby.stop)
        standby.start()
        self.standby = standby
        return standby


def inject_controller_fault(trial: TrialWatch, pair: ControllerPair, cluster: LocalCluster,
                            leader: ControllerProcess, fault_at: float,
                            stack: contextlib.ExitStack) -> None:
    """Carry out one of :data:`CONTROLLER_FAULTS` (the primary dies in each)."""
    pg1 = cluster.node("pg1")
    name = trial.fault.name
    if name == "leader-kill":
        leader.kill()
        pg1.kill()
    elif name == "leader-freeze":
        leader.signal(signal.SIGSTOP)
        stack.callback(leader.signal, signal.SIGCONT)
        pg1.kill()
    elif name == "leader-cut-etcd":
        for proxy in pair.proxies:
            proxy.cut("blackhole")
        pg1.kill()
    else:
        raise ValueError(f"unknown controller fault {name!r}")
    failed_over = trial._wait_failover(fault_at)
    if name == "leader-kill":
        # As systemd would: the killed controller comes back, as a standby now.
        leader.start()
    elif name == "leader-freeze":
        # Woken past its ttl: it must find its term over and take no action.
        time.sleep(1.0)
        leader.signal(signal.SIGCONT)
    elif name == "leader-cut-etcd":
        time.sleep(1.0)
        for proxy in pair.proxies:
            proxy.heal()
    time.sleep(TTL_S)  # a second promotion, if any, would show by now
    if failed_over:
        pg1.start()
        trial._wait_fence("pg1", fault_at)


def wait_leading(trial: TrialWatch, timeout: float = 30.0) -> None:
    """Wait until ``ctl-a`` leads; RuntimeError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.get("kind") == "term_taken_up" for r in trial.records()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ctl-a did not lead within {timeout:g} s")


def standby_following(pair: ControllerPair, timeout: float = 15.0) -> None:
    """Wait until ``ctl-b`` runs and has had time to read the leader's facts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = pair.standby.stdout_path if pair.standby is not None else None
        if log is not None and log.exists() and "controller_started" in log.read_text(
            errors="replace"
        ):
            time.sleep(1.5)  # a few polls of the scope
            return
        time.sleep(0.1)
    raise RuntimeError(f"ctl-b did not start within {timeout:g} s")
