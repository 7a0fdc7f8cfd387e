"""Node drivers: host-level steps (stop, start, rewind, base backup) the SQL
connection cannot do. See docs/drivers.md."""

from hacontrol.drivers.base import DriverResult, NodeDriver, NullDriver, Step
from hacontrol.drivers.command import CommandDriver
from hacontrol.drivers.config import CommandDriverConfig, LocalDriverConfig, build_driver
from hacontrol.drivers.local import LocalDriver

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
