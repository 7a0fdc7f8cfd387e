"""Shared fixtures: a manual clock and a private breaker registry per test."""

from __future__ import annotations

import pytest

from hacontrol.resilience import BreakerRegistry, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def registry() -> BreakerRegistry:
    return BreakerRegistry()
