"""Latency, jitter and loss on chosen links, netem-style, in user space.

``tc qdisc ... netem`` needs the kernel's sch_netem, which not every kernel has
(this project's CI machine has none). This module gets the same effect with
NFQUEUE, which only needs nfnetlink_queue: an iptables rule inside a node's
namespace sends the packets of one link (e.g. those from the controller's
address) to a queue, and a thread here holds each packet for ``delay`` ±
``jitter`` (uniform, as netem does without a distribution table) or drops it
with probability ``loss`` before giving the kernel its verdict. Rules use
``--queue-bypass``, so traffic flows untouched if the emulator is not running.

The netlink protocol is spoken directly (struct packing), so nothing beyond the
standard library is needed.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from hacontrol.testing.netns import NETEM_IN, NETEM_OUT, Namespace, in_netns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_DROP, NF_ACCEPT = 0, 1
QUEUE_NUM = 0


@dataclass(frozen=True, slots=True)
class Impairment:
    """What happens to each packet: held ``delay`` ± ``jitter`` seconds, or lost."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0

    def __str__(self) -> str:
        return (f"{self.delay * 1000:.0f}ms ±{self.jitter * 1000:.0f}ms "
                f"loss {self.loss * 100:.0f}%")


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    pad = (4 - len(payload) % 4) % 4
    return head + payload + b"\0" * pad


def _message(msg: int, flags: int, queue: int, attrs: bytes, seq: int = 0) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def _packet_ids(data: bytes) -> list[int]:
    """Packet ids of every NFQNL_MSG_PACKET in one netlink datagram."""
    ids: list[int] = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos, end = offset + 20, offset + length
            while pos + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from(">I", data, pos + 4)[0])
                pos += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return ids


class _Queue:
    """One bound NFQUEUE socket (inside one namespace) and its impairment."""

    def __init__(self, ns: Namespace, impairment: Impairment) -> None:
        self.ns = ns
        self.impairment = impairment
        with in_netns(ns.name):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self._config(_attr(NFQA_CFG_CMD, struct.pack("=BB", NFQNL_CFG_CMD_BIND, 0)
                           + struct.pack(">H", socket.AF_INET)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))
                     + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", 8192)))
        self.sock.setblocking(False)
        self.seen = 0
        self.dropped = 0

    def _config(self, attrs: bytes) -> None:
        self.sock.settimeout(2.0)
        self.sock.send(_message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, QUEUE_NUM, attrs))
        reply = self.sock.recv(65536)
        _length, kind = struct.unpack_from("=IH", reply, 0)
        if kind == NLMSG_ERROR:
            code = struct.unpack_from("=i", reply, 16)[0]
            if code != 0:
                name = errno.errorcode.get(-code)
                raise OSError(-code, f"NFQUEUE config in {self.ns.name}: {name}")

    def verdict(self, packet_id: int, verdict: int) -> None:
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack(">II", verdict, packet_id))
        with contextlib.suppress(OSError):
            self.sock.send(_message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, QUEUE_NUM, attrs))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(_message(NFQNL_MSG_CONFIG, NLM_F_REQUEST, QUEUE_NUM, _attr(
                NFQA_CFG_CMD, struct.pack("=BB", NFQNL_CFG_CMD_UNBIND, 0)
                + struct.pack(">H", socket.AF_INET))))
        with contextlib.suppress(OSError):
            self.sock.close()


class LinkEmulator:
    """Applies :class:`Impairment` to the links between namespaces and one peer
    address. Start with :meth:`start` (or as a context manager); :meth:`close`
    removes every rule it added and releases every held packet."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._queues: dict[int, _Queue] = {}
        self._held: list[tuple[float, int, int, int]] = []  # (due, seq, fd, packet id)
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="link-emulator", daemon=True)

    def __enter__(self) -> LinkEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> LinkEmulator:
        """Start the packet thread."""
        return self.__enter__()

    def apply(self, ns: Namespace, peer: str, impairment: Impairment,
              direction: str = "in") -> None:
        """Impair the packets between ``ns`` and address ``peer``: those arriving
        from it (``in``, like netem on the peer's egress) or both ways (``both``)."""
        if direction not in ("in", "both"):
            raise ValueError("direction is 'in' or 'both'")
        with self._lock:
            queue = next((q for q in self._queues.values() if q.ns is ns), None)
            if queue is not None:
                # Re-binding a queue right after closing it can fail with EPERM
                # while the kernel lets go of the old socket: keep the socket.
                queue.impairment = impairment
        if queue is None:
            queue = _Queue(ns, impairment)
            with self._lock:
                self._queues[queue.sock.fileno()] = queue
        target = f"-j NFQUEUE --queue-num {QUEUE_NUM} --queue-bypass"
        rules = [f"-F {NETEM_IN}", f"-F {NETEM_OUT}", f"-A {NETEM_IN} -s {peer}/32 {target}"]
        if direction == "both":
            rules.append(f"-A {NETEM_OUT} -d {peer}/32 {target}")
        ns.iptables_restore(rules)
        self._wake()

    def clear(self, ns: Namespace) -> None:
        """Remove the impairment of ``ns``: rules first, then held packets pass."""
        with self._lock:
            mine = [q for q in self._queues.values() if q.ns is ns]
        if not mine:
            return
        ns.iptables_restore([f"-F {NETEM_IN}", f"-F {NETEM_OUT}"])
        with self._lock:
            for q in mine:
                fd = q.sock.fileno()
                for _due, _seq, _fd, pid in [h for h in self._held if h[2] == fd]:
                    q.verdict(pid, NF_ACCEPT)
                self._held = [h for h in self._held if h[2] != fd]
                heapq.heapify(self._held)
                del self._queues[fd]
                q.close()

    def stats(self) -> dict[str, tuple[int, int]]:
        """(packets seen, packets dropped) per namespace label."""
        with self._lock:
            return {q.ns.label: (q.seen, q.dropped) for q in self._queues.values()}

    def close(self) -> None:
        """Remove every impairment and stop the thread."""
        with self._lock:
            spaces = list({id(q.ns): q.ns for q in self._queues.values()}.values())
        for ns in spaces:
            with contextlib.suppress(Exception):
                self.clear(ns)
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = list(self._queues)
                due = self._held[0][0] if self._held else None
            wait = 0.5 if due is None else max(0.0, due - time.monotonic())
            try:
                wake = self._wake_r.fileno()
                readable, _, _ = select.select([wake, *fds], [], [], min(wait, 0.5))
            except (OSError, ValueError):
                readable = []  # a queue closed under us; the next round lists fresh fds
            for fd in readable:
                if fd == wake:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                self._receive(fd)
            self._release_due()

    def _receive(self, fd: int) -> None:
        with self._lock:
            queue = self._queues.get(fd)
            if queue is None:
                return
            for _ in range(64):
                try:
                    data = queue.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:  # the kernel dropped some: keep going
                        continue
                    break
                now = time.monotonic()
                imp = queue.impairment
                for pid in _packet_ids(data):
                    queue.seen += 1
                    if imp.loss and self._rng.random() < imp.loss:
                        queue.dropped += 1
                        queue.verdict(pid, NF_DROP)
                        continue
                    hold = max(0.0, imp.delay + self._rng.uniform(-imp.jitter, imp.jitter))
                    self._seq += 1
                    heapq.heappush(self._held, (now + hold, self._seq, fd, pid))

    def _release_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            while self._held and self._held[0][0] <= now:
                _due, _seq, fd, pid = heapq.heappop(self._held)
                queue = self._queues.get(fd)
                if queue is not None:
                    queue.verdict(pid, NF_ACCEPT)
