"""Who is what and who streams from whom, read from one probe round."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hacontrol.core.model import (
    ClusterView,
    Endpoint,
    NodeSpec,
    Observation,
    Role,
    WalReceiver,
    normal_host,
)
from hacontrol.core.settings import DecisionSettings

__all__ = [
    "is_primary",
    "is_replica",
    "node_endpoints",
    "reachable",
    "receiver_matches",
    "receiver_positively_at",
    "streaming",
    "streaming_problem",
    "writable",
]


def node_endpoints(spec: NodeSpec) -> tuple[Endpoint, ...]:
    """Where replicas connect to ``spec`` (parsed from its DSNs at load)."""
    return spec.endpoints


def receiver_matches(receiver: WalReceiver, targets: Iterable[Endpoint]) -> bool:
    """True when the receiver's upstream is one of ``targets`` (unknown parts match)."""
    host = normal_host(receiver.sender_host)
    for target in targets:
        host_ok = host is None or target.host is None or host == target.host
        port_ok = receiver.sender_port is None or receiver.sender_port == target.port
        if host_ok and port_ok:
            return True
    return False


def receiver_positively_at(receiver: WalReceiver, targets: Iterable[Endpoint]) -> bool:
    """True only when both host and port are known and equal to one of ``targets``."""
    host = normal_host(receiver.sender_host)
    if host is None or receiver.sender_port is None:
        return False
    return any(t.host == host and t.port == receiver.sender_port for t in targets)


def reachable(obs: Observation | None) -> bool:
    """True when the node answered its probe."""
    return obs is not None and obs.reachable


def is_primary(obs: Observation | None) -> bool:
    """True when the node answered as a primary (read-only or not)."""
    return obs is not None and obs.reachable and obs.role is Role.PRIMARY


def writable(obs: Observation | None) -> bool:
    """A reachable primary that does not say it is read-only (unknown counts as writable)."""
    return is_primary(obs) and obs is not None and obs.read_only is not True


def is_replica(obs: Observation | None) -> bool:
    """True when the node answered as a replica."""
    return obs is not None and obs.reachable and obs.role is Role.REPLICA


def streaming(receiver: WalReceiver | None) -> bool:
    """True when the WAL receiver says it streams."""
    return receiver is not None and receiver.status == "streaming"


def streaming_problem(
    name: str,
    primary: str,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
) -> str | None:
    """Why replica ``name`` is not streaming live from ``primary`` (None: it is)."""
    obs = view.get(name)
    receiver = obs.wal_receiver if obs is not None else None
    if receiver is None:
        return f"{name} has no WAL receiver"
    if receiver.status != "streaming":
        return f"{name}'s WAL receiver is {receiver.status}"
    if not receiver_matches(receiver, node_endpoints(specs[primary])):
        return (
            f"{name} streams from {receiver.sender_host}:{receiver.sender_port}, not from {primary}"
        )
    age = receiver.last_msg_age_s
    if age is not None and age > settings.replica_silence_s:
        return f"{name} has heard nothing from {primary} for {age:.1f} s"
    return None
