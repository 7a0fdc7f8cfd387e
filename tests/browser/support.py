"""Headless Chromium (Debian's chromium and chromium-driver) driven by selenium, for
the dashboard's tests; the driver and every browser process are stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacontrol.testing.processes import children, send, wait_gone

ROOT = Path(__file__).resolve().parents[2]
# Screenshots land here (CI keeps the directory as the tests' artefacts).
ARTIFACTS = Path(os.environ.get("HACONTROL_ARTIFACTS", ROOT / "build" / "artifacts"))

# As root in a container, and on a machine without outside network: no sandbox, and
# none of Chromium's own background connections (they would be refused, noisily).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--window-size=1280,800",
)


def binaries() -> tuple[str, str]:
    """(chromium, chromedriver); skips the test where they are missing (fails in CI,
    where ./quickstart setup installs them)."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = "chromium" if not chromium else "chromedriver"
    message = f"{missing} is missing: apt-get install chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A selenium Chrome WebDriver on headless Chromium, quit on exit (also on
    failure), with its driver and browser processes gone by PID."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = binaries()
    with tempfile.TemporaryDirectory(prefix="hacontrol-chromium-") as profile:
        options = Options()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=driver_path, log_output=os.path.join(profile, "d.log"))
        driver = webdriver.Chrome(service=service, options=options)
        driver_pid = service.process.pid if service.process is not None else None
        try:
            yield driver
        finally:
            pids = ([driver_pid, *children(driver_pid)] if driver_pid is not None else [])
            with contextlib.suppress(Exception):
                driver.quit()
            left = wait_gone(pids, 10)
            if left:
                send(left, signal.SIGKILL)
                wait_gone(left, 5)


def viewport(driver: Any, width: int, height: int, *, mobile: bool = False) -> None:
    """Make the page's viewport exactly ``width`` × ``height`` CSS pixels."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
    })


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked the network for since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(str(message["params"]["request"]["url"]))
    return urls


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call."""
    return [str(e["message"]) for e in driver.get_log("browser") if e["level"] == "SEVERE"]
