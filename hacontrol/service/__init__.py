"""The running controller: loop, executors, status, API, metrics, systemd notification, logs."""

from typing import Any


def __getattr__(name: str) -> Any:
    # ``hacontrol.service.Service`` was the documented path before the package existed;
    # imported lazily so that importing a sibling module does not pull in the whole service.
    if name == "Service":
        from hacontrol.service.service import Service

        return Service
    raise AttributeError(f"module 'hacontrol.service' has no attribute {name!r}")
