"""A running controller service (real API on a loopback port, real token) and the
real ``hacontrol`` CLI as a subprocess, for operator-request tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hacontrol.config import load_config
from hacontrol.io.journal import Journal
from hacontrol.service.sdnotify import Notifier
from hacontrol.service.service import Service
from hacontrol.testing import LocalCluster
from hacontrol.testing.local_node import free_port

TOKEN = "operator-token-0123456789abcdef"
CLI_TIMEOUT_S = 60.0


def write_config(
    cluster: LocalCluster,
    directory: Path,
    *,
    mode: str = "automatic",
    priorities: Mapping[str, int] | None = None,
    max_lag_bytes: int | None = None,
) -> Path:
    """A configuration file for ``cluster``: journal in ``directory``, fast probes,
    the API on a free loopback port (fixed in the file, so a restarted controller
    listens where the first one did) with :data:`TOKEN`."""
    nodes = cluster.config_toml()
    for name, priority in (priorities or {}).items():
        nodes = nodes.replace(f'name = "{name}"\n', f'name = "{name}"\npriority = {priority}\n')
    failover = f"\n[failover]\nmax_lag_bytes = {max_lag_bytes}\n" if max_lag_bytes else ""
    text = (
        f'journal = "{directory / "journal.jsonl"}"\n'
        f'mode = "{mode}"\n\n'
        "[timing]\nprobe_interval = 0.1\n"
        f"{failover}\n"
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntoken = "{TOKEN}"\n'
        f"{nodes}"
    )
    path = directory / "hacontrol.toml"
    path.write_text(text)
    return path


class ServiceThread:
    """``hacontrol run`` in-process: a Service with its own event loop in a thread,
    built from a configuration file; stopped and joined on exit."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.service = Service(
            load_config(config_path), config_path=config_path, notifier=Notifier(None)
        )
        self.exit_code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="service", daemon=True)

    def _main(self) -> None:
        async def body() -> int:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            return await self.service.run(install_signals=False)

        try:
            self.exit_code = asyncio.run(body())
        except BaseException as exc:  # surfaced on exit
            self._error = exc
            self._started.set()

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("service thread did not start")
        deadline = time.monotonic() + 10
        while self.service.api_address is None:
            if not self._thread.is_alive():
                raise RuntimeError(f"service stopped: {self.exit_code} {self._error}")
            if time.monotonic() > deadline:
                raise TimeoutError("the API did not start listening within 10 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.service.request_stop, "test finished")
        self._thread.join(30)
        if self._thread.is_alive():
            raise TimeoutError("service did not stop within 30 s")
        if self._error is not None:
            raise self._error

    @property
    def primary(self) -> str | None:
        return self.service.controller.state.primary

    def journal(self) -> list[dict[str, Any]]:
        """Every journal record so far (earlier runs on the same journal included)."""
        return Journal(self.service.config.journal).read()

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request to the API."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.service.api_address}{path}", data=data, method=method
        )
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, json.loads(raw) if raw else None


def hacontrol(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m hacontrol ARGS --config CONFIG``); bounded."""
    return subprocess.run(
        [sys.executable, "-m", "hacontrol", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr of a CLI run, for assertions and failure messages."""
    return f"{result.stdout}{result.stderr}"
