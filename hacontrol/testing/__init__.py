"""Test support: real local PostgreSQL clusters, a fault-injecting TCP proxy and a
write workload with its checker."""

from hacontrol.testing.local_cluster import ClusterError, LocalCluster, Node
from hacontrol.testing.pgbin import PgBin, PgBinError, find_pgbin
from hacontrol.testing.proxy import TcpProxy

__all__ = [
    "ClusterError",
    "LocalCluster",
    "Node",
    "PgBin",
    "PgBinError",
    "TcpProxy",
    "find_pgbin",
]
