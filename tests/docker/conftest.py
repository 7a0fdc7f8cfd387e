"""Docker tests: selection and skipping.

They run only when selected — ``pytest tests/docker`` (or a path below it), or
``HACONTROL_DOCKER_TESTS=1`` — so a plain ``pytest`` of the whole tree never
spends time on Docker, even on a machine where a daemon runs. Selected, they skip
with the reason when no daemon answers or the images are not built;
``HACONTROL_DOCKER_REQUIRED=1`` (set by .ci/docker-suite) turns that into an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.testing.docker_cluster import (
    DockerCluster,
    docker_unavailable_reason,
    missing_images,
)

HERE = Path(__file__).resolve().parent


def _selected(config: pytest.Config) -> bool:
    flag = os.environ.get("HACONTROL_DOCKER_TESTS", "")
    if flag in ("0", "1"):
        return flag == "1"
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def _unavailable() -> str | None:
    reason = docker_unavailable_reason()
    if reason is not None:
        return reason
    missing = missing_images()
    if missing:
        return f"image(s) {', '.join(missing)} not built: run compose/build-images"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if not ours:
        return
    if not _selected(config):
        reason = (
            "docker tests run only when selected: pytest tests/docker or "
            "HACONTROL_DOCKER_TESTS=1"
        )
    else:
        why = _unavailable()
        if why is None:
            return
        if os.environ.get("HACONTROL_DOCKER_REQUIRED") == "1":
            raise pytest.UsageError(f"docker tests required but cannot run: {why}")
        reason = f"skipped: {why}"
    skip = pytest.mark.skip(reason=reason)
    for item in ours:
        item.add_marker(skip)


@pytest.fixture
def docker_cluster() -> Iterator[DockerCluster]:
    """A fresh 3-node cluster with the controller in a container; removed after."""
    with DockerCluster(nodes=3, controller=True) as cluster:
        yield cluster
