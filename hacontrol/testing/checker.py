"""What the acknowledged writes of a run say: lost writes, split brain, recovery time.

Every function works on :class:`Ack` records (one per write the server
acknowledged, with the node and timeline that acknowledged it and the client's
monotonic time) and is pure, so it is tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged write: row id, server port, monotonic time of the
    acknowledgement, the node's name (its cluster_name), its timeline, and which
    writer saw it."""

    id: int
    port: int
    at: float
    node: str = ""
    timeline: int = 0
    writer: str = ""

    @property
    def server(self) -> str:
        """The node name, or the port when the server has no cluster_name."""
        return self.node or f"port {self.port}"


@dataclass(frozen=True, slots=True)
class Epoch:
    """A stretch in which one node, on one timeline, acknowledged writes."""

    node: str
    timeline: int
    first: float
    last: float
    count: int


@dataclass(frozen=True, slots=True)
class Window:
    """A time interval in which two different nodes both acknowledged writes."""

    start: float
    end: float
    node_a: str
    node_b: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


def lost_writes(acks: Iterable[Ack], present: set[int]) -> list[int]:
    """Acknowledged ids that are not present afterwards."""
    return sorted(a.id for a in acks if a.id not in present)


def epochs(acks: Iterable[Ack]) -> list[Epoch]:
    """One epoch per (node, timeline), in order of its first acknowledgement."""
    spans: dict[tuple[str, int], list[float]] = {}
    for ack in acks:
        span = spans.setdefault((ack.server, ack.timeline), [ack.at, ack.at, 0])
        span[0] = min(span[0], ack.at)
        span[1] = max(span[1], ack.at)
        span[2] += 1
    found = [Epoch(n, tl, s[0], s[1], int(s[2])) for (n, tl), s in spans.items()]
    return sorted(found, key=lambda e: e.first)


def brain_windows(acks: Iterable[Ack]) -> list[Window]:
    """Intervals in which two different nodes both acknowledged writes.

    A node's writes on one timeline form an epoch [first, last]; two epochs of
    different nodes that overlap in time are a split-brain window. A legitimate
    failover or switchover never overlaps: the old primary's last acknowledgement
    comes before the new one's first, and a node that becomes primary again does
    so on a new timeline, hence in a new epoch.
    """
    found: list[Window] = []
    spans = epochs(acks)
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if a.node != b.node and b.first <= a.last:
                found.append(Window(b.first, min(a.last, b.last), a.node, b.node))
    return found


def windows_after(windows: Iterable[Window], at: float) -> list[Window]:
    """The parts of ``windows`` that lie after ``at`` (e.g. a fence)."""
    return [
        Window(max(w.start, at), w.end, w.node_a, w.node_b) for w in windows if w.end > at
    ]


def split_brain_windows(acks: Iterable[Ack]) -> list[tuple[float, float, int, int]]:
    """Intervals in which two different servers (by port) both acknowledged writes.

    Returns (start, end, port_a, port_b) for every place where acknowledgements
    from two ports interleave: a later ack from the earlier server after the
    first ack from the newer one. (The older, port-only form of
    :func:`brain_windows`.)
    """
    ordered = sorted(acks, key=lambda a: a.at)
    first_seen: dict[int, float] = {}
    last_seen: dict[int, float] = {}
    for ack in ordered:
        first_seen.setdefault(ack.port, ack.at)
        last_seen[ack.port] = ack.at
    windows = []
    ports = sorted(first_seen, key=lambda p: first_seen[p])
    for i, older in enumerate(ports):
        for newer in ports[i + 1 :]:
            if last_seen[older] > first_seen[newer]:
                windows.append((first_seen[newer], last_seen[older], older, newer))
    return windows


def recovery_time(acks: Iterable[Ack], fault_at: float, old_port: int) -> float | None:
    """Seconds from the fault to the first acknowledgement by another server."""
    for ack in sorted(acks, key=lambda a: a.at):
        if ack.at >= fault_at and ack.port != old_port:
            return ack.at - fault_at
    return None


def takeover_time(acks: Iterable[Ack], fault_at: float, old_node: str) -> float | None:
    """Seconds from the fault to the first acknowledgement by a node other than
    ``old_node`` (the new primary taking writes); None if none did."""
    for ack in sorted(acks, key=lambda a: a.at):
        if ack.at >= fault_at and ack.server != old_node:
            return ack.at - fault_at
    return None


def outage_time(acks: Iterable[Ack], fault_at: float, until: float, min_gap: float) -> float:
    """How long after the fault writes stopped being acknowledged: the end of the
    first gap of at least ``min_gap`` seconds that starts in [fault_at, until),
    counted from ``fault_at``; 0.0 when writes never stalled that long.
    The time from ``fault_at`` to the first acknowledgement counts as a gap."""
    times = sorted(a.at for a in acks if a.at >= fault_at)
    previous = fault_at
    for t in times:
        if t - previous >= min_gap and previous < until:
            return t - fault_at
        previous = t
    if previous < until and until - previous >= min_gap:
        return until - fault_at  # still stalled at the end of the observation
    return 0.0
