"""The dashboard's controllers panel with two controllers on a real etcd: a
standby's page shows both and who leads, and shows the standby leading once the
leader is SIGKILLed — without a reload (real PostgreSQL, etcd, controller
processes, headless Chromium)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hacontrol.testing import EtcdCluster, LocalCluster
from tests.browser.support import console_errors, headless_chromium, viewport
from tests.browser.test_dashboard import _shot
from tests.integration.support import wait_until
from tests.integration.test_controllers_on_etcd import Controllers, _one_leader, etcd, running

pytestmark = [pytest.mark.integration, pytest.mark.extended, pytest.mark.browser,
              pytest.mark.timeout(180)]

__all__ = ["etcd"]  # the module-scoped fixture, shared


def _rows(driver: Any) -> dict[str, str]:
    rows: dict[str, str] = driver.execute_script(
        "if (document.getElementById('controllers').hidden) return {};"
        "const out = {};"
        "for (const tr of document.querySelectorAll('#controller-rows tr'))"
        "  out[tr.cells[0].textContent] = tr.dataset.role;"
        "return out;"
    )
    return rows


def test_a_standbys_dashboard_shows_the_controllers_and_the_takeover(
    cluster: LocalCluster, etcd: EtcdCluster, tmp_path: Path
) -> None:
    names = ("ctl-a", "ctl-b")
    with running(Controllers(cluster, etcd, tmp_path, "dashboard", names=names)) as ctl, \
            headless_chromium() as driver:
        leader = _one_leader(ctl)
        standby = next(n for n in names if n != leader)
        wait_until(lambda: (s := ctl.status(standby)) and s["primary"] == "pg1"
                   and len(s["controllers"]["members"]) == 2, 15,
                   "the standby's API with both controllers")
        viewport(driver, 1280, 800)
        driver.get(f"http://127.0.0.1:{ctl.ports[standby]}/")
        rows = wait_until(lambda: (r := _rows(driver)) and len(r) == 2 and r, 15,
                          "both controllers on the standby's page")
        assert rows == {leader: "leader", standby: "standby"}
        wait_until(lambda: driver.find_element("id", "primary").text == "pg1", 10,
                   "the primary on the standby's page")
        _shot(driver, "dashboard-controllers-1280x800.png")
        ctl.procs[leader].kill()
        wait_until(lambda: _rows(driver).get(standby) == "leader", 20,
                   "the standby shown leading after the leader's SIGKILL")
        assert driver.find_element("id", "connection").text == "live"
        assert console_errors(driver) == []
