"""The controller alone losing the primary is a controller-side partition, not a failure."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hacontrol.testing import LocalCluster
from hacontrol.testing.proxy import TcpProxy

from .support import ControllerThread, kinds, make_config, promotions, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    # Both take about 10 s; the silent cut-off (blackhole), the harder of the two
    # faults, stays in the core suite, the refused connection runs in the extended.
    "mode", ["blackhole", pytest.param("reject", marks=pytest.mark.extended)]
)
def test_controller_cut_off_from_primary_does_not_fail_over(
    cluster: LocalCluster, tmp_path: Path, mode: str
) -> None:
    with TcpProxy(cluster.node("pg1").port) as proxy:
        # Only the controller's connection to pg1 goes through the proxy; the
        # replicas keep streaming from pg1 directly.
        config = make_config(cluster, tmp_path / "j.jsonl", dsns={"pg1": proxy.dsn})
        window = config.timing.detection_window
        with ControllerThread(config) as ct:
            wait_until(lambda: ct.ctl.state.primary == "pg1" and ct.ctl.rounds >= 3, 10,
                       "the controller to adopt pg1")
            proxy.cut(mode)  # type: ignore[arg-type]
            wait_until(lambda: kinds(ct.journal(), "failure_not_confirmed"), 15,
                       "the controller to notice it alone lost pg1")
            # Idle primary: the replicas hear from it only through keepalives, which
            # the managed wal_receiver_timeout keeps frequent. Hold for well over
            # 3 x the detection window and the replica-silence bound.
            hold = max(3 * window, config.timing.replica_silence + 2.0)
            time.sleep(hold)
            records = ct.journal()
            assert ct.ctl.state.primary == "pg1"
            proxy.heal()
            wait_until(lambda: kinds(ct.journal(), "primary_recovered"), 15,
                       "the controller to see pg1 again")
    assert promotions(records) == []
    assert kinds(records, "failover_started") == []
    assert cluster.primaries() == ["pg1"]
    warning = kinds(records, "failure_not_confirmed")[0]
    assert "pg2" in str(warning["details"]) and "pg3" in str(warning["details"])
