"""The dashboard in a real headless browser against a real controller and real
PostgreSQL: the nodes and their roles, a SIGKILL failover seen live (its steps and
the new primary within 3 s of the promotion), a paused cluster and a blocked
failover shown as such, a controller restart survived without a reload; no console
errors and no request beyond the controller. Screenshots go to build/artifacts/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hacontrol.testing import LocalCluster
from tests.browser.support import (
    ARTIFACTS,
    console_errors,
    headless_chromium,
    requested_urls,
    viewport,
)
from tests.integration.operator_support import TOKEN, ServiceThread, write_config
from tests.integration.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(300)]

SHOWN_WITHIN_S = 3.0


def _body(driver: Any, name: str) -> str:
    return str(driver.execute_script(f"return document.body.dataset.{name} || ''"))


def _cards(driver: Any) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = driver.execute_script(
        "const out = {};"
        "for (const c of document.querySelectorAll('#nodes article')) {"
        "  out[c.dataset.node] = {role: c.dataset.role, health: c.dataset.health,"
        "    breaker: c.querySelector('.breaker').dataset.state,"
        "    flags: c.querySelector('.flags').textContent,"
        "    lines: c.querySelectorAll('.spark polyline').length};"
        "}"
        "return out;"
    )
    return found


def _steps(driver: Any) -> dict[str, str]:
    done: dict[str, str] = driver.execute_script(
        "const out = {};"
        "for (const li of document.querySelectorAll('#steps li')) out[li.dataset.step] ="
        " li.dataset.done;"
        "return out;"
    )
    return done


def _visible(driver: Any, element_id: str) -> bool:
    return bool(driver.execute_script(
        f"const e = document.getElementById('{element_id}'); return !!e && !e.hidden"
        " && e.getBoundingClientRect().height > 0;"
    ))


def _event_kinds(driver: Any) -> list[str]:
    kinds: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#events li')).map(li => li.dataset.kind);"
    )
    return kinds


def _shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    assert path.stat().st_size > 10_000
    return path


def _config(cluster: LocalCluster, tmp_path: Path) -> Path:
    path = write_config(cluster, tmp_path)
    # The old primary stays fenced (no automatic rejoin) so that what the page shows
    # afterwards does not depend on how long a pg_rewind takes.
    path.write_text(path.read_text() + "\n[rejoin]\nautomatic = false\n")
    return path


def test_the_dashboard_shows_a_failover_live_and_a_blocked_one_as_blocked(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    config = _config(cluster, tmp_path)
    st = ServiceThread(config)
    with st, headless_chromium() as driver:
        origin = f"http://{st.service.api_address}"
        wait_until(lambda: st.call("GET", "/status")[1]["nodes"][1]["health"] == "ok"
                   and st.primary == "pg1", 30, "pg1 adopted, pg2 streaming")
        viewport(driver, 1280, 800)
        driver.get(origin + "/")
        wait_until(lambda: _body(driver, "primary") == "pg1" and len(_cards(driver)) == 3,
                   10, "three node cards with pg1 the primary")
        cards = wait_until(lambda: (c := _cards(driver)) and all(
            v["lines"] > 0 for v in c.values()) and c, 10, "the probe-latency sparklines")
        assert {name: c["role"] for name, c in cards.items()} == {
            "pg1": "primary", "pg2": "replica", "pg3": "replica"}
        assert all(c["breaker"] == "closed" for c in cards.values()), cards
        assert driver.find_element("id", "connection").text == "live"
        assert driver.find_element("id", "primary").text == "pg1"
        _shot(driver, "dashboard-1280x800.png")
        # Where no event stream can be had, the page polls /status instead.
        script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
            "source": "Object.defineProperty(window, 'EventSource', {value: undefined});"})
        driver.refresh()
        wait_until(lambda: driver.find_element("id", "connection").text == "polling /status"
                   and len(_cards(driver)) == 3, 15, "the page polling /status")
        assert _body(driver, "primary") == "pg1"
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                               {"identifier": script["identifier"]})
        driver.refresh()
        wait_until(lambda: driver.find_element("id", "connection").text == "live"
                   and len(_cards(driver)) == 3, 15, "the page live again")
        viewport(driver, 390, 844, mobile=True)
        time.sleep(0.3)
        wide = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth;")
        assert wide <= 0, f"the phone layout scrolls sideways by {wide} px"
        _shot(driver, "dashboard-390x844.png")
        viewport(driver, 1280, 800)

        # A SIGKILL failover, watched without reloading.
        killed_at = time.time()
        cluster.node("pg1").kill()
        wait_until(lambda: _body(driver, "primary") in ("pg2", "pg3"), 30,
                   "the new primary on the page")
        new = _body(driver, "primary")
        shown_at = int(_body(driver, "primaryChangedAt")) / 1000
        promoted = wait_until(lambda: [
            r for r in st.journal() if r["kind"] == "promote_succeeded" and r["ts"] >= killed_at
        ], 10, "the promote in the journal")
        late = shown_at - float(promoted[0]["ts"])
        print(f"new primary {new} on the page {late:.3f} s after the promotion")
        assert promoted[0]["node"] == new
        assert late <= SHOWN_WITHIN_S
        wait_until(lambda: all(_steps(driver)[s] == "yes" for s in _steps(driver)), 15,
                   "every step of the failover, the old primary's fence included")
        kinds = _event_kinds(driver)
        assert "primary_failed" in kinds and "failover_completed" in kinds, kinds
        # The old primary comes back writable: fenced for real, and shown so.
        cluster.node("pg1").start()
        wait_until(lambda: _cards(driver)["pg1"]["health"] == "fenced", 30,
                   "pg1 back, and shown fenced")
        assert "fenced" in _cards(driver)["pg1"]["flags"]
        _shot(driver, "dashboard-failover-1280x800.png")

        # Paused, then the primary dies: a blocked failover, with the way out.
        status, _ = st.call("POST", "/pause", {}, token=TOKEN)
        assert status == 200
        wait_until(lambda: _body(driver, "paused") == "yes" and _visible(driver, "paused"), 10,
                   "the paused banner")
        assert driver.find_element("id", "run-state").text == "PAUSED"
        cluster.node(new).kill()
        wait_until(lambda: _body(driver, "blocked") == "paused" and _visible(driver, "blocked"),
                   30, "the blocked failover")
        assert "hacontrol resume" in driver.find_element("id", "blocked").text
        assert "blocked" in driver.find_element("id", "blocked").text.lower()
        _shot(driver, "dashboard-blocked-1280x800.png")
        assert console_errors(driver) == []
        # Chromium's own pages (chrome://) are not network; everything else is.
        asked = requested_urls(driver)
        assert any(u.startswith(origin + "/dashboard/") for u in asked), asked
        foreign = [u for u in asked
                   if not u.startswith((origin + "/", "data:", "chrome://", "chrome-untrusted://"))]
        assert foreign == [], foreign

        # The controller restarts: the page reconnects by itself and shows the same.
        updates = int(_body(driver, "updates"))
        st.__exit__(None, None, None)
        wait_until(lambda: driver.find_element("id", "connection").text != "live", 10,
                   "the page to notice the controller is gone")
        st = ServiceThread(config)
        with st:
            wait_until(lambda: driver.find_element("id", "connection").text == "live", 20,
                       "the page to reconnect")
            wait_until(lambda: int(_body(driver, "updates")) > updates + 2, 10, "live updates")
            wait_until(lambda: _body(driver, "blocked") == "paused", 20,
                       "the blocked failover after the restart")
            assert _body(driver, "paused") == "yes"
            crashed = [e for e in console_errors(driver) if "Uncaught" in e]
            assert crashed == []
