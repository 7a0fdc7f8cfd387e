"""Shared fixtures: fresh real PostgreSQL clusters (see hacontrol.testing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hacontrol.testing import LocalCluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """A fresh 3-node asynchronous cluster (pg1 primary), torn down after the test."""
    with LocalCluster(nodes=3) as c:
        yield c


@pytest.fixture
def cluster_sync() -> Iterator[LocalCluster]:
    """A fresh 3-node cluster with synchronous_standby_names = ANY 1 (pg1, pg2, pg3)."""
    with LocalCluster(nodes=3, sync=True) as c:
        yield c
