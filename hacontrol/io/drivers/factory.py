"""Builds a node's driver from its ``[nodes.driver]`` table.

Apart from the models (``drivers/config.py``) so that the models import no driver
and the drivers import only the models: no cycle between them.
"""

from __future__ import annotations

from hacontrol.io.drivers.base import NodeDriver, NullDriver
from hacontrol.io.drivers.command import CommandDriver
from hacontrol.io.drivers.config import CommandDriverConfig, LocalDriverConfig
from hacontrol.io.drivers.local import LocalDriver
from hacontrol.io.dsn import dsn_port


def build_driver(
    cfg: LocalDriverConfig | CommandDriverConfig | None,
    node_name: str,
    *,
    dsn: str | None = None,
    system_identifier: int | None = None,
) -> NodeDriver:
    """The driver for node ``node_name`` (:class:`NullDriver` when ``cfg`` is None).

    ``dsn``: the node's DSN, whose port its data directory must show before the
    driver acts on it; ``system_identifier``: the configuration's pinned one.
    """
    port = dsn_port(dsn) if dsn is not None else None
    if cfg is None:
        driver: NodeDriver = NullDriver(node_name)
    elif isinstance(cfg, LocalDriverConfig):
        if dsn is not None and port is None:
            # The configuration refuses such a node; a caller that skipped it must not
            # get a driver that cannot prove anything.
            raise ValueError(f"{node_name}: the dsn names no single numeric port")
        driver = LocalDriver.from_config(cfg, node_name, expected_port=port)
    else:
        driver = CommandDriver(cfg, node_name, expected_port=port)
    driver.pinned_system_identifier = system_identifier
    return driver
