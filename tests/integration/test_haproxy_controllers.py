"""docs/haproxy-controllers.cfg with a real HAProxy in front of a real cluster watched by
two controllers on a real etcd: killing the leader, restarting it, stopping the other
cuts no client session and fails no write."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from hacontrol.testing import EtcdCluster, LocalCluster
from hacontrol.testing.etcd_cluster import EtcdError, find_etcd
from hacontrol.testing.local_node import free_port
from hacontrol.testing.processes import ChildProcess, ControllerProcess
from hacontrol.testing.workload import Writer, create_table
from tests.integration.support import kinds, wait_until
from tests.integration.test_controllers_on_etcd import Controllers

HAPROXY = shutil.which("haproxy")
DOCS = Path(__file__).resolve().parents[2] / "docs"

try:
    find_etcd()
except EtcdError as missing:
    if os.environ.get("CI"):
        raise
    pytest.skip(str(missing), allow_module_level=True)
if HAPROXY is None:
    if os.environ.get("CI"):
        raise RuntimeError("haproxy is missing; .ci/run installs it (apt-get install haproxy)")
    pytest.skip("haproxy is not installed (apt-get install haproxy)", allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.extended, pytest.mark.timeout(150)]


def _haproxy_config(cluster: LocalCluster, ctl: Controllers, path: Path) -> int:
    text = (DOCS / "haproxy-controllers.cfg").read_text(encoding="utf-8")
    for name in ("pg1", "pg2", "pg3"):
        text = text.replace(f"10.0.0.{name[-1]}:5432", f"127.0.0.1:{cluster.node(name).port}")
    text = text.replace("10.0.0.11:8008", f"127.0.0.1:{ctl.ports['ctl-a']}")
    text = text.replace("10.0.0.12:8008", f"127.0.0.1:{ctl.ports['ctl-b']}")
    write_port = free_port()
    text = text.replace("bind *:5000", f"bind 127.0.0.1:{write_port}")
    text = text.replace("bind *:5001", f"bind 127.0.0.1:{free_port()}")
    api = free_port()
    text = text.replace("127.0.0.1:8100", f"127.0.0.1:{api}").replace("port 8100", f"port {api}")
    text = text.replace("127.0.0.1:7000", f"127.0.0.1:{free_port()}")
    assert "10.0.0." not in text and "*:" not in text
    path.write_text(text, encoding="utf-8")
    return write_port


def test_killing_or_restarting_any_one_controller_cuts_no_traffic(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with EtcdCluster(3, base_dir=tmp_path / "etcd") as etcd, ExitStack() as stack:
        ctl = Controllers(cluster, etcd, tmp_path, "haproxy", names=("ctl-a", "ctl-b"))
        stack.enter_context(ctl.procs["ctl-a"])
        wait_until(lambda: ctl.leaders() == ["ctl-a"], 20, "ctl-a to lead")
        stack.enter_context(ctl.procs["ctl-b"])
        wait_until(lambda: (ctl.status("ctl-b") or {}).get("primary") == "pg1", 20,
                   "ctl-b to follow")
        port = _haproxy_config(cluster, ctl, tmp_path / "haproxy.cfg")
        assert HAPROXY is not None
        stack.enter_context(ChildProcess([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                         tmp_path / "haproxy.log"))
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3"
        # Servers start up before their first checks: wait until only pg1 is left.
        wait_until(lambda: all(_connects(dsn) for _ in range(6)), 15,
                   "HAProxy to send writes to pg1 only")
        create_table(dsn)
        writer = Writer(dsn, interval=0.02, statement_timeout=2.0, max_duration=120)
        writer.start()
        stack.callback(writer.stop)
        time.sleep(1.0)

        ctl.procs["ctl-a"].kill()  # the leader, SIGKILL
        wait_until(lambda: ctl.leaders() == ["ctl-b"], 10, "ctl-b to lead")
        time.sleep(1.0)
        restarted = ControllerProcess(ctl.procs["ctl-a"].config, tmp_path / "ctl-a-2.log")
        stack.enter_context(restarted)
        wait_until(lambda: (ctl.status("ctl-a") or {}).get("controllers", {}).get("leader")
                   == "ctl-b", 20, "the restarted ctl-a to follow ctl-b")
        ctl.procs["ctl-b"].stop()  # the leader again, SIGTERM: ctl-a takes over at once
        wait_until(lambda: ctl.status("ctl-a") and ctl.status("ctl-a")["controllers"]["role"]
                   == "leader", 10, "ctl-a to lead again")
        time.sleep(1.5)
        stats = writer.stop()
        assert stats.errors == 0, stats.last_error
        assert len(stats.acks) > 100
        # Every write went to pg1, the one primary: no failover, no check flapping.
        assert {a.port for a in stats.acks} == {cluster.node("pg1").port}
        assert cluster.primaries() == ["pg1"]
        assert not kinds(ctl.journal("ctl-a"), "failover_started")


def _connects(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
    except psycopg.Error:
        return False
