"""Test support: real local PostgreSQL clusters, a fault-injecting TCP proxy, a
write workload with its checker, and (with Docker) containerised clusters."""

from typing import TYPE_CHECKING, Any

from hacontrol.testing.local_cluster import ClusterError, LocalCluster, Node
from hacontrol.testing.pgbin import PgBin, PgBinError, find_pgbin
from hacontrol.testing.proxy import TcpProxy

if TYPE_CHECKING:
    from hacontrol.testing.docker_cluster import DockerCluster

__all__ = [
    "ClusterError",
    "DockerCluster",
    "LocalCluster",
    "Node",
    "PgBin",
    "PgBinError",
    "TcpProxy",
    "find_pgbin",
]


def __getattr__(name: str) -> Any:
    # DockerCluster pulls in testcontainers and the Docker client: load it only
    # when someone asks for it.
    if name == "DockerCluster":
        from hacontrol.testing.docker_cluster import DockerCluster

        return DockerCluster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
