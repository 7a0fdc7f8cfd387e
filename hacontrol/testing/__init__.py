"""Test support: real local PostgreSQL clusters, real etcd clusters, a fault-injecting
TCP proxy, a write workload with its checker, and (with Docker) containerised clusters."""

from typing import TYPE_CHECKING, Any

from hacontrol.io.host.pgbin import PgBin, PgBinError, find_pgbin
from hacontrol.testing.cluster_queries import ClusterError
from hacontrol.testing.etcd_cluster import EtcdCluster
from hacontrol.testing.local_cluster import LocalCluster
from hacontrol.testing.local_node import Node
from hacontrol.testing.proxy import TcpProxy

if TYPE_CHECKING:
    from hacontrol.testing.docker_cluster import DockerCluster

__all__ = [
    "ClusterError",
    "DockerCluster",
    "EtcdCluster",
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
