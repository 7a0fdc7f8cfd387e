"""The controller configuration for a local test cluster: one ``[[nodes]]`` table per
node, with a local driver table when asked for."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from hacontrol.testing.cluster_queries import ClusterError
from hacontrol.testing.local_node import Node


def controller_toml(
    nodes: Sequence[Node],
    *,
    dsns: Mapping[str, str] | None = None,
    drivers: bool = False,
    extra: Mapping[str, str | int | float | bool] | None = None,
) -> str:
    """Configuration text: ``extra`` top-level keys, then each node's table (see
    :meth:`hacontrol.testing.LocalCluster.config_toml`)."""
    if drivers and any(n.netns is not None for n in nodes):
        raise ClusterError("local drivers cannot start servers inside network namespaces")
    lines = [f"{k} = {toml_value(v)}" for k, v in (extra or {}).items()]
    for n in nodes:
        dsn = (dsns or {}).get(n.name, n.dsn)
        lines += [
            "",
            "[[nodes]]",
            f"name = {toml_value(n.name)}",
            f"dsn = {toml_value(dsn)}",
            f"replication_dsn = {toml_value(n.replication_dsn)}",
        ]
        if drivers:
            lines += [
                "[nodes.driver]",
                'kind = "local"',
                f"data_dir = {toml_value(str(n.data_dir))}",
                f"bindir = {toml_value(str(n.bindir))}",
                f"os_user = {toml_value(n.owner.name)}",
                f"log_file = {toml_value(str(n.log_path))}",
                "timeout = 30.0",
            ]
    return "\n".join(lines) + "\n"


def toml_value(value: str | int | float | bool) -> str:
    """One TOML value (strings JSON-quoted, which TOML accepts for basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)
