"""Running a real controller next to a LocalCluster in tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hacontrol.config import Config, config_from_mapping
from hacontrol.io.journal import Journal
from hacontrol.service.controller import Controller
from hacontrol.testing import LocalCluster


def make_config(
    cluster: LocalCluster,
    journal: Path,
    *,
    dsns: Mapping[str, str] | None = None,
    priorities: Mapping[str, int] | None = None,
    **sections: Any,
) -> Config:
    """A controller configuration for ``cluster``; ``sections`` are top-level keys or
    tables (e.g. ``timing={"probe_interval": 0.1}``, ``mode="manual"``)."""
    data = tomllib.loads(cluster.config_toml(dsns=dsns))
    data["journal"] = str(journal)
    for node in data["nodes"]:
        if priorities and node["name"] in priorities:
            node["priority"] = priorities[node["name"]]
    data.update(sections)
    return config_from_mapping(data)


class ControllerThread:
    """A Controller running its own event loop in a thread, so sync tests can use the
    blocking harness freely while it works. Stopped (and joined) on exit."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.controller: Controller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="controller", daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.controller = Controller(self.config)
            self._ready.set()
            await self.controller.run(self._stop)

        try:
            asyncio.run(body())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
            self._ready.set()

    def __enter__(self) -> ControllerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("controller did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the loop (the round in flight completes) and join the thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        if self._thread.is_alive():
            raise TimeoutError("controller did not stop within 15 s")
        if self._error is not None:
            raise self._error

    @property
    def ctl(self) -> Controller:
        assert self.controller is not None
        return self.controller

    def journal(self) -> list[dict[str, Any]]:
        """Every journal record so far."""
        return Journal(self.config.journal).read()


def watching(ct: ControllerThread, primary: str = "pg1") -> bool:
    """True once ``primary`` is adopted and every other node was seen streaming from it.

    A failure injected before that is judged without the replicas' history (they
    neither confirm nor veto), which is not what a failover test means to test.
    """
    state = ct.ctl.state
    if state.primary != primary:
        return False
    others = [n for n in ct.config.nodes if n.name != primary]
    return all(state.health(n.name).streaming_from == primary for n in others)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def kinds(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The journal records of one kind."""
    return [r for r in records if r.get("kind") == kind]


def promotions(records: list[dict[str, Any]]) -> list[str]:
    """Nodes a Promote action was started for, in order."""
    return [
        r["node"] for r in records
        if r.get("kind") == "action_started" and r.get("action") == "Promote"
    ]


def stop_receiver(cluster: LocalCluster, name: str) -> None:
    """Make replica ``name`` stop receiving WAL (empty primary_conninfo), so it falls behind."""
    node = cluster.node(name)
    node.query("ALTER SYSTEM SET primary_conninfo = ''")
    node.query("SELECT pg_reload_conf()")
    wait_until(
        lambda: not node.query("SELECT 1 FROM pg_stat_wal_receiver"), 10,
        f"{name}'s WAL receiver to stop",
    )


def write_rows(cluster: LocalCluster, name: str, count: int, size: int = 100) -> None:
    """Write ``count`` rows of ``size`` bytes on node ``name`` (creating the table)."""
    node = cluster.node(name)
    node.query("CREATE TABLE IF NOT EXISTS filler (id serial PRIMARY KEY, pad text)")
    node.query(
        "INSERT INTO filler (pad) SELECT repeat('x', %s) FROM generate_series(1, %s)",
        (size, count),
    )
