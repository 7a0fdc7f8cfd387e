"""Node drivers: host-level steps (stop, start, rewind, base backup) the SQL
connection cannot do. See docs/drivers.md."""

from hacontrol.io.drivers.base import DriverResult, NodeDriver, NullDriver, Step
from hacontrol.io.drivers.command import CommandDriver
from hacontrol.io.drivers.config import CommandDriverConfig, LocalDriverConfig
from hacontrol.io.drivers.factory import build_driver
from hacontrol.io.drivers.local import LocalDriver

__all__ = [
    "CommandDriver",
    "CommandDriverConfig",
    "DriverResult",
    "LocalDriver",
    "LocalDriverConfig",
    "NodeDriver",
    "NullDriver",
    "Step",
    "build_driver",
]
