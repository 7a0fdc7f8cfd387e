"""Fault-suite fixtures. Tests marked ``netns`` need root and working network
namespaces; elsewhere they are skipped with the reason."""

from __future__ import annotations

import functools

import pytest

from hacontrol.testing.netns import unavailable_reason


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: needs root, iproute2 and iptables (network namespaces)"
    )


@functools.cache
def _reason() -> str | None:
    return unavailable_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("netns") is None:
            continue
        reason = _reason()
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"network namespaces unavailable: {reason}"))
